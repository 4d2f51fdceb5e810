"""Inference-only ViT that loads birder's checkpoints key for key (vit_l16, vit_reg4_b16, vit_reg4_m16_rms_avg).

Token order, pooling, norms and the position-embedding resize follow docs/models.md §1-3;
parameter names equal birder's state-dict keys (§2.1), so `load_state_dict(strict=True)` is the check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from birder_index.backbone.vit_config import ViTConfig
from birder_index.errors import CheckpointError


def _norm(cfg: ViTConfig) -> nn.Module:
    if cfg.norm_layer_type == "LayerNorm":
        return nn.LayerNorm(cfg.hidden_dim, eps=cfg.norm_layer_eps)
    if cfg.norm_layer_type == "RMSNorm":
        return nn.RMSNorm(cfg.hidden_dim, eps=cfg.norm_layer_eps)
    raise CheckpointError(f"unsupported norm_layer_type: {cfg.norm_layer_type!r}")


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.explicit = False  # see explicit_attention; switched by ViT.set_explicit_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attend = explicit_attention if self.explicit else F.scaled_dot_product_attention
        x = attend(q, k, v)  # scale 1/sqrt(head_dim), as birder
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v as two batched matmuls. Compiled on a CPU in bf16 it runs a ViT faster than
    SDPA's CPU flash kernel (docs/benchmarks.md#embedding-throughput), but its scores are rounded to bf16 before
    the softmax, which sharp attention feels: `Encoder` keeps it only where the embeddings stay within tolerance."""
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    return torch.matmul(scores.softmax(-1).to(v.dtype), v)


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = _norm(cfg)
        self.attn = Attention(cfg.hidden_dim, cfg.num_heads)
        self.norm2 = _norm(cfg)
        # Indices 0..4 as in torchvision's MLP, so the keys are mlp.0.* and mlp.3.*; GELU is exact (erf).
        self.mlp = nn.Sequential(
            nn.Linear(cfg.hidden_dim, cfg.mlp_dim),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(cfg.mlp_dim, cfg.hidden_dim),
            nn.Dropout(0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Encoder(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.block = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig, size: tuple[int, int], *, num_classes: int = 0) -> None:
        super().__init__()
        if size[0] % cfg.patch_size or size[1] % cfg.patch_size:
            raise CheckpointError(f"input size {size[0]}x{size[1]} is not divisible by the patch size {cfg.patch_size}")
        self.cfg = cfg
        self.size = size
        d = cfg.hidden_dim
        self.conv_proj = nn.Conv2d(3, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        if cfg.num_reg_tokens > 0:
            self.reg_tokens = nn.Parameter(torch.zeros(1, cfg.num_reg_tokens, d))
        if cfg.class_token:
            self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        num_patches = (size[0] // cfg.patch_size) * (size[1] // cfg.patch_size)
        self.pos_embedding = nn.Parameter(torch.empty(1, cfg.num_special_tokens + num_patches, d).normal_(std=0.02))
        self.encoder = _Encoder(cfg)
        self.norm = _norm(cfg)
        self.classifier = nn.Linear(d, num_classes) if num_classes > 0 else None
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, S + N, D): final-normed tokens in birder's order [registers, class, patches]."""
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # row-major patch order
        specials = []
        if self.cfg.num_reg_tokens > 0:
            specials.append(self.reg_tokens.expand(x.shape[0], -1, -1))
        if self.cfg.class_token:
            specials.append(self.class_token.expand(x.shape[0], -1, -1))
        x = torch.cat([*specials, x], dim=1) + self.pos_embedding
        for block in self.encoder.block:
            x = block(x)
        return self.norm(x)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """birder's `embedding()`: the class token (after the registers), or the mean of the patch tokens."""
        tokens = self.forward_features(x)
        if self.cfg.class_token:
            return tokens[:, self.cfg.num_reg_tokens]
        return tokens[:, self.cfg.num_special_tokens :].mean(dim=1)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise CheckpointError("this model has no classifier head (it is an encoder checkpoint)")
        return self.classifier(embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)

    def set_explicit_attention(self, on: bool) -> None:
        for module in self.modules():
            if isinstance(module, Attention):
                module.explicit = on

    def adjust_size(self, size: tuple[int, int]) -> None:
        """Permanently resize the position embedding, as birder's `adjust_size` (bicubic, antialias=True)."""
        if size == self.size:
            return
        p = self.cfg.patch_size
        if size[0] % p or size[1] % p:
            raise CheckpointError(f"--size {size[0]}x{size[1]} is not divisible by the patch size {p}")
        old_grid = (self.size[0] // p, self.size[1] // p)
        new_grid = (size[0] // p, size[1] // p)
        with torch.no_grad():
            resized = resize_pos_embedding(self.pos_embedding.data, old_grid, new_grid, self.cfg.num_special_tokens)
        self.pos_embedding = nn.Parameter(resized)
        self.size = size


def resize_pos_embedding(
    pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int, *, antialias: bool = True
) -> torch.Tensor:
    """Bicubic resize of the patch rows of a (1, S + N, D) position embedding; special-token rows are kept."""
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    d = grid.shape[-1]
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, d).to(pos.dtype)
    return torch.cat([prefix, grid], dim=1)


_LEGACY_RENAMES = (
    (".ln1.", ".norm1."),
    (".ln2.", ".norm2."),
    (".self_attention.in_proj_weight", ".attn.qkv.weight"),
    (".self_attention.in_proj_bias", ".attn.qkv.bias"),
    (".self_attention.out_proj.", ".attn.proj."),
)


def upgrade_legacy_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename birder < 0.4.0 block keys (ln1/ln2, MultiheadAttention) to the current ones; tensors are unchanged."""
    if not any(".self_attention." in k or ".ln1." in k for k in state):
        return state
    out = {}
    for key, value in state.items():
        for old, new in _LEGACY_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def infer_config(state: dict[str, torch.Tensor]) -> ViTConfig:
    """Read a ViT config off state-dict shapes (heads assume birder's head dim of 64)."""
    try:
        d, _, p, _ = state["conv_proj.weight"].shape
        blocks = {int(k.split(".")[2]) for k in state if k.startswith("encoder.block.")}
        mlp_dim = state["encoder.block.0.mlp.0.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"not a birder ViT state dict (missing {e})") from None
    return ViTConfig(
        num_layers=len(blocks),
        num_heads=max(1, d // 64),
        hidden_dim=d,
        mlp_dim=mlp_dim,
        patch_size=p,
        num_reg_tokens=state["reg_tokens"].shape[1] if "reg_tokens" in state else 0,
        class_token="class_token" in state,
        norm_layer_type="LayerNorm" if "norm.bias" in state else "RMSNorm",
    )


def load_vit(cfg: ViTConfig, state: dict[str, torch.Tensor], size: tuple[int, int], num_classes: int, arch: str) -> ViT:
    """Build a ViT and load `state` strictly; a mismatch is one CheckpointError naming the first bad keys."""
    state = upgrade_legacy_keys(state)
    net = ViT(cfg, size, num_classes=num_classes)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(f"weights do not fit {arch}: {'; '.join(parts)}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"weights do not fit {arch}: {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
            )
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)
