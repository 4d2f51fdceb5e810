"""Model names in one place: birder's architecture names and its published weights (URL, sha256, resolution).

Names are birder's own, so a birder user types what they already knows. Facts: docs/models.md §1.1, §4.7.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from dataclasses import dataclass

from birder_index.backbone.vit_config import ViTConfig
from birder_index.errors import UnknownBackbone

_HF = "https://huggingface.co/birder-project"

_ARCHITECTURES: dict[str, ViTConfig] = {}
_ALIASES: dict[str, str] = {}
_WEIGHTS: dict[str, PretrainedWeights] = {}
# A first build without --model or --weights uses it: small (184 MiB), 256 px, and its ImageNet-21K head lets
# `classify` work out of the box.
DEFAULT_MODEL = "vit_reg4_m16_rms_avg_i-jepa-imagenet21k"


@dataclass(frozen=True)
class PretrainedWeights:
    name: str
    arch: str
    url: str
    sha256: str
    size_mib: float
    resolution: int
    legacy_keys: bool = False  # saved by birder < 0.4.0 (ln1/self_attention block keys)
    head_classes: int | None = 0  # classes of a fine-tuned classifier head (0: an encoder; None: not known here)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def repo_id(self) -> str:
        """The Hugging Face repository, e.g. birder-project/vit_l16_mim."""
        return "/".join(self.url.split("/")[3:5])


def register_architecture(name: str, cfg: ViTConfig, *, aliases: tuple[str, ...] = ()) -> None:
    if name in _ARCHITECTURES:
        warnings.warn(f"architecture {name} registered twice; the last one wins", stacklevel=2)
    _ARCHITECTURES[name] = cfg
    for alias in aliases:
        _ALIASES[alias] = name


def register_weights(weights: PretrainedWeights) -> None:
    if weights.name in _WEIGHTS:
        warnings.warn(f"weights {weights.name} registered twice; the last one wins", stacklevel=2)
    if canonical_arch(weights.arch) is None:
        raise ValueError(f"weights {weights.name} name an unknown architecture {weights.arch}")
    _WEIGHTS[weights.name] = weights


def canonical_arch(name: str) -> str | None:
    """The registered architecture for a name or an old alias (`vitreg4_b16` -> `vit_reg4_b16`), else None."""
    name = _ALIASES.get(name, name)
    return name if name in _ARCHITECTURES else None


def architecture_config(name: str) -> ViTConfig:
    arch = canonical_arch(name)
    if arch is None:
        raise UnknownBackbone(_unknown_message(name, list(_ARCHITECTURES) + list(_ALIASES)))
    return _ARCHITECTURES[arch]


def pretrained(name: str) -> PretrainedWeights:
    """Published weights by name; an unknown name raises UnknownBackbone with close matches."""
    if name in _WEIGHTS:
        return _WEIGHTS[name]
    arch = canonical_arch(name)
    if arch is not None:
        names = ", ".join(w.name for w in _WEIGHTS.values() if canonical_arch(w.arch) == arch and not w.legacy_keys)
        raise UnknownBackbone(
            f"{name} is an architecture, not weights: give a file with --weights, or one of its published "
            f"weights with --model: {names}"
        )
    raise UnknownBackbone(_unknown_message(name, list(_WEIGHTS)))


def is_backbone(name: str) -> bool:
    return name in _WEIGHTS or canonical_arch(name) is not None


def list_backbones(pattern: str = "*") -> list[str]:
    """Sorted names of published weights matching an fnmatch pattern."""
    return sorted(n for n in _WEIGHTS if fnmatch.fnmatch(n, pattern))


def list_architectures() -> list[str]:
    return sorted(_ARCHITECTURES)


def arch_from_filename(stem: str) -> str | None:
    """The longest architecture name (or alias) that prefixes a file name: `vit_l16_mim_400` -> `vit_l16`."""
    candidates = [n for n in [*_ARCHITECTURES, *_ALIASES] if stem == n or stem.startswith(n + "_")]
    return canonical_arch(max(candidates, key=len)) if candidates else None


@dataclass(frozen=True, kw_only=True)
class CatalogueRow:
    name: str
    arch: str
    resolution: int
    size_mib: float
    head_classes: int | None
    url: str
    sha256: str
    default: bool
    downloaded: bool
    path: str = "native"  # built by birder-index itself, or by "birder" (the birder extra)


def model_catalogue(pattern: str = "*") -> list[CatalogueRow]:
    """The published weights matching `pattern`, with what `birder-index models` shows of each: the native ones, then
    birder's own where the birder extra is installed."""
    from birder_index.backbone.download import cached

    rows = []
    for name in list_backbones(pattern):
        w = _WEIGHTS[name]
        rows.append(
            CatalogueRow(
                name=name,
                arch=w.arch,
                resolution=w.resolution,
                size_mib=w.size_mib,
                head_classes=w.head_classes,
                url=w.url,
                sha256=w.sha256,
                default=name == DEFAULT_MODEL,
                downloaded=cached(w.repo_id, w.filename) is not None,
            )
        )
    return rows + _birder_catalogue(pattern, set(_WEIGHTS))


def _birder_catalogue(pattern: str, native: set[str]) -> list[CatalogueRow]:
    from birder_index.backbone import birder_models
    from birder_index.backbone.download import cache_dir
    from birder_index.backbone.download import cached

    rows = []
    for name in birder_models.pretrained_names(pattern):
        meta = birder_models.pretrained_metadata(name)
        pt = meta["formats"].get("pt")
        if name in native or pt is None:
            continue
        base = meta.get("url", "")
        repo = "/".join(base.split("huggingface.co/", 1)[1].split("/")[:2]) if "huggingface.co/" in base else ""
        here = cached(repo, f"{name}.pt") if repo else (cache_dir() / "models" / f"{name}.pt")
        rows.append(
            CatalogueRow(
                name=name,
                arch=meta["net"]["network"],
                resolution=int(meta["resolution"][0]),
                size_mib=float(pt["file_size"]),
                head_classes=None,
                url=f"{base}/{name}.pt",
                sha256=pt["sha256"],
                default=False,
                downloaded=here is not None and here.exists(),
                path="birder",
            )
        )
    return rows


def _unknown_message(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; `birder-index models` lists them"
    from birder_index.backbone.birder_models import birder_package

    if birder_package() is None:
        hint += ' (birder\'s other models, with pip install "birder-index[birder]")'
    return f"unknown model {name!r}{hint}"


# Architectures (§1.1). Head dim is 64 in all three.
register_architecture("vit_l16", ViTConfig(num_layers=24, num_heads=16, hidden_dim=1024, mlp_dim=4096))
register_architecture(
    "vit_reg4_b16",
    ViTConfig(num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072, num_reg_tokens=4),
    aliases=("vitreg4_b16",),
)
register_architecture(
    "vit_reg4_m16_rms_avg",
    ViTConfig(
        num_layers=12,
        num_heads=8,
        hidden_dim=512,
        mlp_dim=2048,
        num_reg_tokens=4,
        class_token=False,
        norm_layer_type="RMSNorm",
    ),
)


def _hf(repo: str, file: str) -> str:
    return f"{_HF}/{repo}/resolve/main/{file}"


# Classifier heads of the fine-tuned published weights, from their model cards (docs/models.md §4.7); MIM and
# I-JEPA pre-training leaves none. il-common's card gives no class count.
HEAD_CLASSES: dict[str, int | None] = {
    "vit_reg4_m16_rms_avg_i-jepa-imagenet21k": 19167,
    "vit_reg4_b16_mim-intermediate-arabian-peninsula": 735,
    "vitreg4_b16_mim-intermediate-arabian-peninsula": 735,
    "vit_reg4_b16_mim-intermediate-il-common": None,
    "vit_l16_mim-eu-common": 707,
}

# Published weights (§4.7): current files (birder >= 0.4.0 keys) ...
for _name, _arch, _sha, _mib, _res in (
    ("vit_l16_mim_400", "vit_l16", "9b5c4e2538ea40edd60d8831d3807b543290dc2db44d537e60e44a341b47e54e", 1157.1, 224),
    ("vit_l16_mim_200", "vit_l16", "7fc5b342347d8349aaf5f069a47efd441b646f8542821ed2e30b47a7da72917a", 1157.1, 224),
    (
        "vit_reg4_b16_mim_200",
        "vit_reg4_b16",
        "c7ec433c01e1dc0d6100cafc29fa88155a0d65f4b42afa9cc252b77485a566a7",
        327.4,
        224,
    ),
    (
        "vit_reg4_b16_mim_300",
        "vit_reg4_b16",
        "b0e5e2b24ea7a8d2be246df43c9d8092354f6ee81e88c6cdd7c52d8e38ed44a4",
        327.4,
        224,
    ),
    (
        "vit_reg4_b16_mim-intermediate-arabian-peninsula",
        "vit_reg4_b16",
        "78dbf578ebe7d5761705231e16fef280b14905a94f18879167c96df3e59d13a5",
        330.7,
        384,
    ),
    (
        "vit_reg4_b16_mim-intermediate-il-common",
        "vit_reg4_b16",
        "3a15b95285cd4435b601ef058839f422cdce8f68cca50de9353e1ac2bcb65f9a",
        328.7,
        256,
    ),
    (
        "vit_reg4_m16_rms_avg_i-jepa",
        "vit_reg4_m16_rms_avg",
        "0f5cd4e0acb44d1e429bbed342c60bf22087ecd1d7112363c3ceb909dcd9d547",
        146.2,
        224,
    ),
    (
        "vit_reg4_m16_rms_avg_i-jepa-imagenet21k",
        "vit_reg4_m16_rms_avg",
        "da47dc6bd4f41c347235beba92657b66148180141d0bd629169e84449b629fbb",
        184.2,
        256,
    ),
):
    _repo = _name.rsplit("_", 1)[0] if _name.rsplit("_", 1)[-1].isdigit() else _name
    _head = HEAD_CLASSES.get(_name, 0)
    register_weights(PretrainedWeights(_name, _arch, _hf(_repo, f"{_name}.pt"), _sha, _mib, _res, head_classes=_head))

# ... and files that exist only in the legacy key format: eu-common was never re-exported, and the
# pre-rename `vitreg4_*` repositories (§4.7, legacy names).
register_weights(
    PretrainedWeights(
        "vit_l16_mim-eu-common",
        "vit_l16",
        _hf("vit_l16_mim-eu-common", "vit_l16_mim-eu-common.pt"),
        "3b7235b90f76fb1e0e36d4c4111777a4cc4e4500552fe840c51170b208310d16",
        1160.1,
        256,
        legacy_keys=True,
        head_classes=HEAD_CLASSES["vit_l16_mim-eu-common"],
    )
)
register_weights(
    PretrainedWeights(
        "vitreg4_b16_mim_200",
        "vitreg4_b16",
        _hf("vitreg4_b16_mim", "vitreg4_b16_mim_200.pt"),
        "6b044cd7834293e344309f809070db3fe9ede489478e7549ad96255f9d76b329",
        327.4,
        224,
        legacy_keys=True,
    )
)
register_weights(
    PretrainedWeights(
        "vitreg4_b16_mim-intermediate-arabian-peninsula",
        "vitreg4_b16",
        _hf(
            "vitreg4_b16_mim-intermediate-arabian-peninsula",
            "vitreg4_b16_mim-intermediate-arabian-peninsula.pt",
        ),
        "e011f931a5a4d96ef21283d70911a55ea649eadfefa9c163a48b996797f0d9da",
        330.7,
        384,
        legacy_keys=True,
        head_classes=HEAD_CLASSES["vitreg4_b16_mim-intermediate-arabian-peninsula"],
    )
)
