from __future__ import annotations

import dataclasses

import pytest
import torch

from birder_index.backbone import registry
from birder_index.backbone.vit import infer_config
from birder_index.backbone.vit import load_vit
from birder_index.backbone.vit import resize_pos_embedding
from birder_index.backbone.vit import upgrade_legacy_keys
from birder_index.backbone.vit_config import merge_config
from birder_index.errors import CheckpointError
from tests.helpers import TINY
from tests.helpers import legacy_state
from tests.helpers import tiny_vit


def test_token_order_and_class_token_pooling() -> None:
    net = tiny_vit("vit_reg4_b16")
    x = torch.randn(2, 3, 32, 32)
    tokens = net.forward_features(x)
    assert tokens.shape == (2, 4 + 1 + 4, 32)  # 4 registers, CLS, 2x2 patches
    assert torch.equal(net.embedding(x), tokens[:, 4])  # CLS comes after the registers


def test_average_pooling_excludes_registers() -> None:
    net = tiny_vit("vit_reg4_m16_rms_avg")
    x = torch.randn(2, 3, 32, 32)
    tokens = net.forward_features(x)
    assert tokens.shape == (2, 4 + 4, 32)  # no class token
    assert torch.allclose(net.embedding(x), tokens[:, 4:].mean(1))
    assert isinstance(net.norm, torch.nn.RMSNorm) and net.norm.eps == 1e-6


def test_state_dict_keys_are_birders() -> None:
    keys = set(tiny_vit("vit_l16", num_classes=3).state_dict())
    assert {
        "conv_proj.weight",
        "conv_proj.bias",
        "class_token",
        "pos_embedding",
        "norm.weight",
        "norm.bias",
        "classifier.weight",
        "encoder.block.1.mlp.3.bias",
        "encoder.block.0.attn.qkv.weight",
    } <= keys
    assert "reg_tokens" not in keys
    rms = set(tiny_vit("vit_reg4_m16_rms_avg").state_dict())
    assert "norm.bias" not in rms and "encoder.block.0.norm1.bias" not in rms and "reg_tokens" in rms


def test_legacy_keys_load_to_the_same_network() -> None:
    net = tiny_vit("vit_reg4_b16")
    legacy = legacy_state(net.state_dict())
    assert "encoder.block.0.self_attention.in_proj_weight" in legacy
    cfg = merge_config(registry.architecture_config("vit_reg4_b16"), TINY)
    loaded = load_vit(cfg, legacy, (32, 32), 0, "vit_reg4_b16")
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded.embedding(x), net.embedding(x))
    assert upgrade_legacy_keys(net.state_dict()) is not None


def test_strict_loading_names_the_bad_keys() -> None:
    state = tiny_vit("vit_reg4_b16").state_dict()
    cfg = merge_config(registry.architecture_config("vit_l16"), TINY)  # no registers in vit_l16
    with pytest.raises(CheckpointError, match="weights do not fit vit_l16: unexpected reg_tokens"):
        load_vit(cfg, state, (32, 32), 0, "vit_l16")
    wrong = merge_config(registry.architecture_config("vit_reg4_b16"), {**TINY, "mlp_dim": 48})
    with pytest.raises(CheckpointError, match=r"mlp.0.weight has shape \(64, 32\), expected \(48, 32\)"):
        load_vit(wrong, state, (32, 32), 0, "vit_reg4_b16")


def test_infer_config_reads_shapes() -> None:
    for arch in ("vit_l16", "vit_reg4_b16", "vit_reg4_m16_rms_avg"):
        cfg = infer_config(tiny_vit(arch).state_dict())
        expected = merge_config(registry.architecture_config(arch), TINY)
        assert dataclasses.replace(cfg, num_heads=expected.num_heads) == expected  # heads are not in the shapes


def test_unsupported_config_option_is_refused() -> None:
    base = registry.architecture_config("vit_l16")
    with pytest.raises(CheckpointError, match="layer_scale_init_value"):
        merge_config(base, {"layer_scale_init_value": 1e-5})
    assert merge_config(base, {"drop_path_rate": 0.3}) == base  # training-only keys are ignored


def test_adjust_size_keeps_special_rows_and_resizes_grid() -> None:
    net = tiny_vit("vit_reg4_b16", size=32)
    before = net.pos_embedding.detach().clone()
    net.adjust_size((64, 48))
    assert net.pos_embedding.shape == (1, 5 + 4 * 3, 32)
    assert torch.equal(net.pos_embedding[:, :5], before[:, :5])
    assert net.embedding(torch.randn(1, 3, 64, 48)).shape == (1, 32)
    same = resize_pos_embedding(before, (2, 2), (2, 2), 5)
    assert torch.allclose(same, before, atol=1e-6)
    with pytest.raises(CheckpointError, match="not divisible"):
        net.adjust_size((50, 50))
