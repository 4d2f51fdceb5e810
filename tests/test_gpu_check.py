"""benchmarks/gpu_check.py, the prepared GPU check (issue 26), run as CI can: `--device cpu --quick` on a few photos
made here, with the CPU as the "device". What only a GPU can show (nvjpeg, pinned copies) must say so, not crash."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image

from birder_index.backbone import registry
from birder_index.backbone.vit import ViT
from birder_index.backbone.vit_config import merge_config
from tests.helpers import TINY
from tests.helpers import make_photos

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports its neighbour synthetic.py, as scripts there do
    return importlib.import_module("gpu_check")


def test_quick_run_on_the_cpu_checks_every_section(gpu_check: ModuleType, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, n=8, corrupt=False)
    out = tmp_path / "out" / "check.json"
    argv = ["run", "--device", "cpu", "--quick", "--no-compile", "--photos", str(photos), "--out", str(out)]
    assert gpu_check.main([*argv, "--workdir", str(tmp_path)]) == 0
    data = json.loads(out.read_text())
    assert data["mode"] == "quick" and data["passed"] is True
    machine = data["machine"]
    assert machine["device"] == "cpu" and machine["cpu_count"] >= 1 and machine["torch"] == torch.__version__
    assert machine["date"].endswith("+00:00")
    rows = {(r["section"].split()[0], r["name"]): r for r in data["rows"]}
    sections = {r["section"].split()[0] for r in data["rows"]}
    assert sections == {"0", "1", "2", "3", "4"}
    for row in data["rows"]:  # every figure has its unit; words ("n/a", "Flat", "bfloat16") need none
        assert not isinstance(row["value"], (int, float)) or row["unit"] or row["name"].startswith("recall"), row
    correctness = [c for c in data["checks"] if c["kind"] == "correctness"]
    assert len(correctness) == 5 and all(c["passed"] for c in correctness)  # 2 models x 2 precisions, the build
    assert not [c for c in data["checks"] if c["kind"] == "target"]  # the targets are for full-size models
    assert rows[("3", "build: embed per batch (copy + model), median")]["value"] > 0  # the pipeline's timings parsed
    assert rows[("3", "GPU JPEG decode (torchvision, batches of 64)")]["value"] == "not available"
    assert rows[("3", "host -> device")]["value"] == "n/a"
    assert rows[("4", "index chosen")]["value"] == "Flat" and rows[("4", "recall@10, tuned")]["value"] == 1.0
    assert not list(tmp_path.glob("gpu-check-*"))  # the temporary data is gone


def test_a_quick_run_without_faiss_skips_that_section(
    gpu_check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    photos = tmp_path / "photos"
    make_photos(photos, n=3, corrupt=False)
    out = tmp_path / "check.json"
    argv = ["run", "--device", "cpu", "--quick", "--only", "faiss", "--photos", str(photos), "--out", str(out)]
    assert gpu_check.main(argv) == 0
    faiss_rows = [r for r in json.loads(out.read_text())["rows"] if r["section"] == "4 FAISS"]
    assert len(faiss_rows) == 1 and faiss_rows[0]["value"] == "skipped"
    assert faiss_rows[0]["note"].startswith("faiss cannot be imported: ModuleNotFoundError")


@pytest.mark.parametrize("arch,size", [("vit_l16", 32), ("vit_reg4_m16_rms_avg", 48)])
def test_analytic_flops_equal_torchs_count(gpu_check: ModuleType, arch: str, size: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    cfg = merge_config(registry.architecture_config(arch), TINY)
    net = ViT(cfg, (size, size)).eval()
    net.set_explicit_attention(True)  # matmuls FlopCounterMode sees (it does not count SDPA on a CPU)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net.embedding(torch.zeros(1, 3, size, size))
    assert gpu_check.vit_flops(cfg, (size, size)) == counter.get_total_flops()


def test_prepare_reencodes_the_photos_small(gpu_check: ModuleType, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGBA", (3000, 1500), (255, 0, 0, 0)).save(photos / "wide.png")  # transparent: flattened, as decode
    Image.new("RGB", (800, 1200), (0, 0, 255)).save(photos / "tall.jpg")
    bundle = tmp_path / "bundle"
    assert gpu_check.main(["prepare", "--photos", str(photos), "--out", str(bundle), "--no-wheels"]) == 0
    sizes = {p.name: Image.open(p).size for p in (bundle / "photos").iterdir()}
    assert sizes == {"wide.jpg": (1024, 512), "tall.jpg": (683, 1024)}
    assert json.loads((bundle / "manifest.json").read_text())["photos"] == ["tall.jpg", "wide.jpg"]


def test_a_section_that_crashes_fails_the_run_and_the_next_sections_still_run(
    gpu_check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")

    monkeypatch.setattr(gpu_check, "check_correctness", broken)
    photos = tmp_path / "photos"
    make_photos(photos, n=3, corrupt=False)
    out = tmp_path / "check.json"
    argv = ["run", "--device", "cpu", "--quick", "--only", "correctness,throughput", "--photos", str(photos)]
    assert gpu_check.main([*argv, "--out", str(out)]) == 1
    data = json.loads(out.read_text())
    crashed = [r for r in data["rows"] if r["value"] == "crashed"]
    assert (
        len(crashed) == 2 and crashed[0]["note"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    )
    assert not data["passed"] and [c["passed"] for c in data["checks"]] == [False, False]
    assert any(r["name"] == "eager bf16, model only" and r["value"] > 0 for r in data["rows"])  # throughput ran


def test_a_pillow_heif_that_breaks_on_import_is_left_unregistered(
    gpu_check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The travelling wheel beside an older Pillow: an import error other than ImportError would reach every
    decode through the product's registration, so the check skips registering it."""
    import importlib.abc
    import sys

    from birder_index.backbone import images

    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *args: object) -> None:
            if name == "pillow_heif":
                raise AttributeError("module 'PIL.Image' has no attribute 'register_decoder'")

    monkeypatch.delitem(sys.modules, "pillow_heif", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    monkeypatch.setattr(images, "_heif_registered", False)
    assert gpu_check.guard_heif().startswith("pillow-heif broken (AttributeError: module 'PIL.Image'")
    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "a.jpg")
    assert images.decode(tmp_path / "a.jpg", (16, 16)).pixels.shape == (3, 16, 16)


def test_the_wheels_that_travel_are_the_dependencies_the_gpu_machine_lacks(
    gpu_check: ModuleType, tmp_path: Path
) -> None:
    travelling = gpu_check.travelling_wheels()
    assert travelling == ["sqlalchemy", "pillow-heif", "lazy_loader", "platformdirs", "faiss-cpu", "packaging"]
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["torch>=2.4", "lazy_loader>=0.4", "Pillow >= 10", "x[y]; os_name"]\n'
    )
    assert gpu_check.travelling_wheels(pyproject) == ["lazy_loader", "x", "packaging"]
