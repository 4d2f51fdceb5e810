"""The fast paths' tolerances: bf16 and the fast JPEG decode against float32 and the exact decode, and the
compiled model against the eager one (issue 3: cosine >= 0.999 for bf16, >= 0.995 for the fast decode)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from birder_index.backbone import encoder as encoder_module
from birder_index.backbone import hardware
from birder_index.backbone import load_backbone
from birder_index.backbone import vit as vit_module
from birder_index.backbone.encoder import BF16_MIN_COSINE
from birder_index.backbone.images import decode
from birder_index.backbone.vit import explicit_attention
from tests.helpers import needs_cxx
from tests.helpers import photo
from tests.helpers import save_vit


@pytest.fixture(scope="module")
def vit64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_vit(tmp_path_factory.mktemp("vit64"), "vit_reg4_m16_rms_avg", "pt", size=64)


def _pixels(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.stack(
        [torch.from_numpy(decode(_png(photo(seed + i, (160, 120))), (size, size)).pixels) for i in range(n)]
    )


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b)


def test_bf16_embeddings_are_within_tolerance_of_float32(vit64: Path) -> None:
    x = _pixels(6)
    exact = load_backbone(weights=vit64, precision="float32").embed(x)
    bf16 = load_backbone(weights=vit64, precision="bf16")
    assert bf16.dtype is torch.bfloat16
    got = bf16.embed(x)
    assert got.dtype == torch.float32 and got.shape == exact.shape
    assert _cos(got, exact).min() >= 0.999
    assert not torch.equal(got, exact)  # bf16 really ran


def test_fast_jpeg_decode_embeds_within_tolerance_of_the_exact_decode(vit64: Path) -> None:
    enc = load_backbone(weights=vit64, precision="float32")
    exact, fast = [], []
    for seed in range(4):
        buf = io.BytesIO()
        photo(seed, (1600, 1200)).save(buf, "JPEG", quality=92)
        exact.append(torch.from_numpy(decode(buf.getvalue(), (64, 64)).pixels))
        fast.append(torch.from_numpy(decode(buf.getvalue(), (64, 64), fast=True).pixels))
    assert not torch.equal(torch.stack(exact), torch.stack(fast))  # the DCT-domain path really ran
    assert _cos(enc.embed(torch.stack(fast)), enc.embed(torch.stack(exact))).min() >= 0.995


@needs_cxx
def test_compiled_model_gives_the_eager_embeddings_at_any_batch(vit64: Path) -> None:
    x = _pixels(7)
    enc = load_backbone(weights=vit64, precision="float32")
    eager = enc.embed(x)
    seconds = enc.compile(batch=4)
    assert seconds is not None and seconds > 0
    for n in (1, 4, 7):  # a remainder runs eager, whole batches compiled: no other shape is ever compiled
        got = enc.embed(x[:n])
        assert got.shape == (n, enc.embedding_dim)
        assert _cos(got, eager[:n]).min() >= 0.99999


def test_a_failed_compile_keeps_the_eager_model(
    vit64: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(fn: object, **kw: object) -> object:
        def run(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("C++ compile error\ncc1plus: fatal error")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    x = _pixels(3)
    enc = load_backbone(weights=vit64, precision="float32")
    eager = enc.embed(x)
    with caplog.at_level(logging.WARNING):
        assert enc.compile(batch=4) is None
    assert "torch.compile failed, embedding without it: C++ compile error" in caplog.text
    assert torch.equal(enc.embed(x), eager)


def test_pt2_exports_run_float32_unless_bf16_is_asked_for(tiny_pt2: Path) -> None:
    # bf16 moved the shared EfficientNet export to cosine 0.962 of float32: "auto" keeps exports in float32.
    assert load_backbone(weights=tiny_pt2, precision="auto").dtype is None
    assert load_backbone(weights=tiny_pt2, precision="bf16").dtype is torch.bfloat16


def test_explicit_attention_is_sdpa_in_float32(vit64: Path) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 8, 21, 64) for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(explicit_attention(q, k, v), sdpa, atol=1e-5)
    x = _pixels(3)
    enc = load_backbone(weights=vit64, precision="float32")
    fused = enc.embed(x)
    enc._embed_fn.__self__.set_explicit_attention(True)
    got = enc.embed(x)
    assert not torch.equal(got, fused) and torch.allclose(got, fused, atol=1e-4)


@needs_cxx
def test_a_vit_compiled_in_bf16_takes_explicit_attention_within_tolerance(vit64: Path) -> None:
    x = _pixels(6)
    exact = load_backbone(weights=vit64, precision="float32").embed(x)
    enc = load_backbone(weights=vit64, precision="bf16")
    assert enc.compile(batch=4) is not None
    assert enc.explicit_attention  # a CPU, bf16, compiled: the faster attention
    got = enc.embed(x)
    assert enc.checked_cosine is not None and enc.checked_cosine >= BF16_MIN_COSINE
    assert enc.explicit_attention and enc.dtype is torch.bfloat16  # the check kept both
    assert _cos(got, exact).min() >= 0.999


def test_bf16_out_of_tolerance_steps_down_to_float32(
    vit64: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(encoder_module, "BF16_MIN_COSINE", 1.01)  # no embedding can pass: every step is taken
    x = _pixels(5)
    exact = load_backbone(weights=vit64, precision="float32").embed(x)
    enc = load_backbone(weights=vit64, precision="bf16")
    with caplog.at_level(logging.WARNING):
        got = enc.embed(x)
    assert "bf16 autocast moved" in caplog.text and "running float32" in caplog.text
    assert enc.dtype is None and torch.allclose(got, exact, atol=1e-5)  # the whole batch embedded again
    caplog.clear()
    assert torch.allclose(enc.embed(x[:2]), exact[:2], atol=1e-5) and not caplog.text  # checked once


@needs_cxx
def test_explicit_attention_out_of_tolerance_falls_back_to_sdpa_and_recompiles(
    vit64: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def blurred(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v.mean(dim=-2, keepdim=True).expand_as(v)  # attention spread evenly: far off

    monkeypatch.setattr(vit_module, "explicit_attention", blurred)
    x = _pixels(6)
    exact = load_backbone(weights=vit64, precision="float32").embed(x)
    enc = load_backbone(weights=vit64, precision="bf16")
    enc.compile(batch=4)
    with caplog.at_level(logging.WARNING):
        got = enc.embed(x)
    assert "explicit attention in bf16 moved" in caplog.text and "back to SDPA attention" in caplog.text
    assert "running float32" not in caplog.text
    assert not enc.explicit_attention and enc.dtype is torch.bfloat16
    assert _cos(got, exact).min() >= 0.999  # the graph was compiled again, with SDPA


def test_out_of_tolerance_steps_down_explicit_attention_then_bf16_compiling_again_after_each(
    vit64: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    graphs: list[object] = []

    def fake_compile(fn: object, **kw: object) -> object:  # no inductor: what matters is when a graph is made
        graphs.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(encoder_module, "BF16_MIN_COSINE", 1.01)  # no embedding can pass: every step is taken
    x = _pixels(5)
    exact = load_backbone(weights=vit64, precision="float32").embed(x)
    enc = load_backbone(weights=vit64, precision="bf16")
    assert enc.compile(batch=4) is not None and enc.explicit_attention  # a CPU, bf16, compiled
    with caplog.at_level(logging.WARNING):
        got = enc.embed(x)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "explicit attention in bf16 moved" in messages[0] and "back to SDPA attention" in messages[0]
    assert "bf16 autocast moved" in messages[1] and "running float32" in messages[1]
    assert len(graphs) == 3  # compiled once, then again after each step down
    assert not enc.explicit_attention and enc.dtype is None and enc.setting()["compiled"]
    assert torch.allclose(got, exact, atol=1e-5)  # the batch embedded again, in the last setting


def test_the_check_runs_float32_on_the_first_photos_only(vit64: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a GPU batch is 256 photos: the check costs a float32 pass over CHECK_IMAGES of them, once
    monkeypatch.setattr(encoder_module, "CHECK_IMAGES", 3)
    enc = load_backbone(weights=vit64, precision="bf16")
    calls: list[tuple[int, bool]] = []
    embed_fn = enc._embed_fn

    def spy(x: torch.Tensor) -> torch.Tensor:
        calls.append((x.shape[0], torch.is_autocast_enabled("cpu")))
        return embed_fn(x)

    enc._embed_fn = spy
    enc.embed(_pixels(8))
    enc.embed(_pixels(2))
    assert calls == [(8, True), (3, False), (2, True)]
    assert enc.check_seconds > 0 and enc.checked_cosine is not None and enc.checked_cosine >= BF16_MIN_COSINE


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_checks_bf16_where_the_hardware_runs_it(
    vit64: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(hardware, "fast_bf16", lambda device: native)
    enc = load_backbone(weights=vit64, precision="auto")
    assert enc.dtype is (torch.bfloat16 if native else None)
    enc.embed(_pixels(2))
    assert (enc.checked_cosine is not None) is native  # float32 has nothing to check
