from __future__ import annotations

import pytest

from birder_index.backbone import registry
from birder_index.errors import UnknownBackbone


def test_published_weights_resolve_to_url_and_sha256() -> None:
    w = registry.pretrained("vit_reg4_m16_rms_avg_i-jepa-imagenet21k")
    assert w.url == (
        "https://huggingface.co/birder-project/vit_reg4_m16_rms_avg_i-jepa-imagenet21k/resolve/main/"
        "vit_reg4_m16_rms_avg_i-jepa-imagenet21k.pt"
    )
    assert w.sha256 == "da47dc6bd4f41c347235beba92657b66148180141d0bd629169e84449b629fbb"
    assert (w.arch, w.resolution) == ("vit_reg4_m16_rms_avg", 256)
    epoch = registry.pretrained("vit_l16_mim_400")
    assert epoch.url.endswith("/vit_l16_mim/resolve/main/vit_l16_mim_400.pt")
    legacy = registry.pretrained("vitreg4_b16_mim_200")
    assert legacy.legacy_keys and registry.canonical_arch(legacy.arch) == "vit_reg4_b16"


@pytest.mark.parametrize("name", registry.list_backbones())
def test_every_published_name_has_an_architecture(name: str) -> None:
    w = registry.pretrained(name)
    assert registry.canonical_arch(w.arch) in registry.list_architectures()
    assert len(w.sha256) == 64 and w.url.startswith("https://")


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownBackbone, match=r"unknown model 'vit_reg4_m16_rms_avg_ijepa'; did you mean vit_reg4_m16"):
        registry.pretrained("vit_reg4_m16_rms_avg_ijepa")
    with pytest.raises(UnknownBackbone, match="`birder-index models` lists them"):
        registry.pretrained("resnet50")


def test_architecture_is_not_weights() -> None:
    with pytest.raises(UnknownBackbone, match="vit_l16 is an architecture, not weights.*vit_l16_mim_200"):
        registry.pretrained("vit_l16")


def test_listing_and_filename_architecture() -> None:
    assert registry.list_backbones("vit_l16*") == ["vit_l16_mim-eu-common", "vit_l16_mim_200", "vit_l16_mim_400"]
    assert registry.arch_from_filename("vit_reg4_m16_rms_avg_i-jepa") == "vit_reg4_m16_rms_avg"
    assert registry.arch_from_filename("vitreg4_b16_mim_200") == "vit_reg4_b16"
    assert registry.arch_from_filename("vit_reg4_b16") == "vit_reg4_b16"
    assert registry.arch_from_filename("efficientnet_lite0") is None
    assert registry.is_backbone("vitreg4_b16") and not registry.is_backbone("nope")


def test_duplicate_registration_warns() -> None:
    w = registry.pretrained("vit_l16_mim_200")
    with pytest.warns(UserWarning, match="registered twice"):
        registry.register_weights(w)
