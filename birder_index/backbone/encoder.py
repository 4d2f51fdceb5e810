"""Where a photo is embedded: `Encoder.embed(uint8 pixels) -> float32 (N, D)`, birder's raw `embedding()`."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from collections.abc import Iterator

import torch

from birder_index.backbone.hardware import autocast_dtype
from birder_index.backbone.info import ModelInfo
from birder_index.errors import CheckpointError

logger = logging.getLogger(__name__)

# bf16 must keep embeddings within cosine 0.999 of float32, and real weights can miss it (docs/throughput.md), so
# each encoder checks its first batch against float32 and steps down. The bar is above the tolerance because
# other photos can fall lower than the first ones.
BF16_MIN_COSINE = 0.9995
CHECK_IMAGES = 32


class Encoder:
    """A loaded backbone on a device. Inputs are uint8 (B, 3, H, W) at `info.preprocess.size`."""

    def __init__(
        self,
        info: ModelInfo,
        embed_fn: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
        *,
        precision: str = "auto",
        classify_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        static_batch: int | None = None,
        channels_last: bool = False,
        micro_batch: int | None = None,
        set_explicit_attention: Callable[[bool], None] | None = None,
    ) -> None:
        self.info = info
        self.device = device
        self.dtype = autocast_dtype(device, precision)
        self._embed_fn = embed_fn
        self._classify_fn = classify_fn
        self._static_batch = static_batch  # .pt2 exports with a fixed batch size take exactly that many
        # Convolutional exports run faster channels-last, and on a CPU in small micro-batches that stay in cache
        # (docs/throughput.md).
        self._channels_last = channels_last
        self._micro_batch = static_batch or micro_batch
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        # A ViT's switch between SDPA and explicit attention (vit.explicit_attention): on only when compiled on a
        # CPU in bf16, where it is faster, and only while allowed (the precision check can refuse it).
        self._set_explicit_attention = set_explicit_attention
        self.explicit_attention_allowed = set_explicit_attention is not None  # set before compile() to choose
        self.explicit_attention = False
        self.checked_cosine: float | None = None  # the first photos' lowest cosine to float32, once checked
        self.check_seconds = 0.0  # what the check cost: a float32 batch, and embedding again after a step down
        self._checked = self.dtype is None
        pre = info.preprocess
        self._mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1)

    @property
    def embedding_dim(self) -> int:
        return self.info.embedding_dim

    @property
    def has_head(self) -> bool:
        return self._classify_fn is not None and bool(self.info.classes)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in [0, 1] -> (x - mean) / std, as birder's ToDtype(scale=True) then Normalize."""
        x = pixels.to(self.device, non_blocking=True).float().div_(255.0)
        x = x.sub_(self._mean).div_(self._std)
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last else x

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _run(self, fn: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
        outs = []
        with torch.inference_mode(), self._autocast():
            for chunk, n in self._chunks(pixels):
                outs.append(fn(self.normalize(chunk))[:n].float())
        return torch.cat(outs).cpu() if len(outs) > 1 else outs[0].cpu()

    def _chunks(self, pixels: torch.Tensor) -> Iterator[tuple[torch.Tensor, int]]:
        b = self._micro_batch
        if b is None or pixels.shape[0] == b:
            yield pixels, pixels.shape[0]
            return
        for start in range(0, pixels.shape[0], b):
            chunk = pixels[start : start + b]
            n = chunk.shape[0]
            if n < b and self._static_batch:  # pad the last chunk to the fixed batch size (export or compile)
                chunk = torch.cat([chunk, chunk[-1:].expand(b - n, *chunk.shape[1:])])
            yield chunk, n

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float32 (B, D) on the CPU: birder's raw embedding, not L2-normalised."""
        if pixels.shape[0] == 0:
            return torch.empty(0, self.embedding_dim)
        out = self._embed(pixels)
        return out if self._checked else self._check_precision(pixels, out)

    @property
    def precision_checked(self) -> bool:
        """Whether the precision is final: float32, or bf16 already checked against float32."""
        return self._checked

    def accept_precision(self, checked_cosine: float | None) -> None:
        """Take the precision this encoder was built with as final, checked elsewhere: each actor of a distributed
        build embeds as its driver decided, so that an index never mixes precisions."""
        self._checked = True
        self.checked_cosine = checked_cosine

    def _check_precision(self, pixels: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Compare the first photos' embeddings with float32 ones; while out of tolerance, step down (explicit
        attention, then bf16) and embed the batch again, so that every stored vector comes from one setting."""
        self._checked = True
        t0 = time.perf_counter()
        n = min(CHECK_IMAGES, pixels.shape[0])
        reference = self._float32_reference(pixels[:n])
        while True:
            self.checked_cosine = float(torch.nn.functional.cosine_similarity(out[:n], reference).min())
            step = self._step_down() if self.checked_cosine < BF16_MIN_COSINE else None
            if step is None:
                self.check_seconds = time.perf_counter() - t0
                return out
            logger.warning(
                "%s moved %s's embeddings to cosine %.4f of float32 on its first photos: %s",
                step[0], self.info.name, self.checked_cosine, step[1],
            )  # fmt: skip
            out = self._embed(pixels)

    def _step_down(self) -> tuple[str, str] | None:
        """Drop the least exact setting still on: explicit attention, then bf16. None when nothing is left."""
        if self.explicit_attention:
            self.explicit_attention_allowed = False
            step = ("explicit attention in bf16", "back to SDPA attention")
        elif self.dtype is not None:
            self.dtype = None
            step = ("bf16 autocast", "running float32")
        else:
            return None
        if self._compiled is not None:  # the graph holds the old setting: compile again
            self.compile(self._micro_batch or 1)
        else:
            self._use_explicit_attention(False)
        return step

    def _float32_reference(self, pixels: torch.Tensor) -> torch.Tensor:
        """The embeddings of `--exact`'s model: eager, float32, SDPA."""
        dtype, explicit = self.dtype, self.explicit_attention
        self.dtype = None
        self._use_explicit_attention(False)
        try:
            return self._run(self._embed_fn, pixels)
        finally:
            self.dtype = dtype
            self._use_explicit_attention(explicit)

    def _use_explicit_attention(self, on: bool) -> None:
        if self._set_explicit_attention is not None:
            self._set_explicit_attention(on)
            self.explicit_attention = on

    def setting(self) -> dict[str, object]:
        """How this encoder embeds now, for the record (`info` shows the last build's)."""
        attention = None  # not a ViT of ours: an export's attention is its own
        if self._set_explicit_attention is not None:
            attention = "explicit" if self.explicit_attention else "sdpa"
        return {
            "device": str(self.device),
            "dtype": "bfloat16" if self.dtype == torch.bfloat16 else "float32",
            "attention": attention,
            "compiled": self._compiled is not None,
            "checked_cosine": self.checked_cosine,
        }

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._compiled is None or self._micro_batch is None:
            return self._run(self._embed_fn, pixels)
        # Whole batches run compiled; a remainder runs eager, which costs less than padding it to a whole batch.
        whole = pixels.shape[0] // self._micro_batch * self._micro_batch
        parts = [self._run(self._compiled, pixels[:whole])] if whole else []
        if whole < pixels.shape[0]:
            parts.append(self._run(self._embed_fn, pixels[whole:]))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def compile(self, batch: int) -> float | None:
        """Compile the embedding with torch.compile now; later `embed` calls run it on whole batches of `batch`.

        Inductor with the weights frozen into the graph casts them to bf16 once, fuses GELU into the matmuls and
        the casts into their neighbours: a ViT runs faster on a CPU, and a ViT compiled on a CPU in bf16 takes
        explicit attention (vit.explicit_attention), faster again. Compiling takes seconds (less from inductor's
        on-disk cache), so it pays only on long runs (docs/benchmarks.md#embedding-throughput). Returns the
        seconds it took, or None (one warning, eager model kept) where it fails: no C++ compiler, an op inductor
        lacks.
        """
        import torch._inductor.config as inductor_config

        fixed = self._micro_batch or batch
        h, w = self.info.preprocess.size
        t0 = time.perf_counter()
        self._use_explicit_attention(
            self.explicit_attention_allowed and self.device.type == "cpu" and self.dtype == torch.bfloat16
        )
        compiled = torch.compile(self._embed_fn, dynamic=False)
        try:
            # Freezing is read when the graph compiles, that is on the first call: this warm-up.
            with inductor_config.patch(freezing=True):
                self._run(compiled, torch.zeros(fixed, 3, h, w, dtype=torch.uint8))
        except Exception as e:  # compile failures come in many types: toolchain, codegen, an unsupported op
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            logger.warning("torch.compile failed, embedding without it: %s", first_line[:200])
            self._use_explicit_attention(False)  # eager, explicit attention is no faster
            self._compiled = None
            return None
        self._compiled = compiled
        self._micro_batch = fixed  # one shape only: another batch size would compile again
        return time.perf_counter() - t0

    def head_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The classifier head applied to stored embeddings (no image needed): float32 (B, classes)."""
        if not self.has_head or self._classify_fn is None:
            raise CheckpointError(f"{self.info.name} has no classifier head (it is an encoder checkpoint)")
        with torch.inference_mode():
            return self._classify_fn(embeddings.to(self.device).float()).float().cpu()

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """Softmax of the model's own classifier head (fine-tuned checkpoints only), applied in float32 to the
        embeddings `embed` gives (with its precision check)."""
        if not self.has_head:
            raise CheckpointError(f"{self.info.name} has no classifier head (it is an encoder checkpoint)")
        return torch.softmax(self.head_logits(self.embed(pixels)), dim=1)
