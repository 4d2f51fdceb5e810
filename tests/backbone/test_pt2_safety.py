"""A crafted .pt2 never runs code: each way torch.export.load would run it is refused before torch reads the file.

Each crafted archive is first shown to be dangerous (torch.export.load, in a child process, runs its payload), so
the test would fail if the refusal stopped being needed or stopped working."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from birder_index.backbone import load_backbone
from birder_index.backbone.pt2_safety import check_archive
from birder_index.errors import CheckpointError
from tests.helpers import SHARED_PT2

Edit = Callable[[str, bytes], bytes | None]


class Payload:
    """Unpickling it creates a file: the marker that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (Path.touch, (str(self.marker),))


def pickled(marker: Path) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    return buf.getvalue()


def rewrite(src: Path, dst: Path, edit: Edit, add: dict[str, bytes] | None = None) -> Path:
    """A copy of the archive with entries changed by `edit(name, data)` (None drops an entry) and `add`ed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        prefix = zin.namelist()[0].split("/", 1)[0] + "/"
        for item in zin.infolist():
            data = edit(item.filename[len(prefix) :], zin.read(item.filename))
            if data is not None:
                zout.writestr(item, data)
        for name, data in (add or {}).items():
            zout.writestr(prefix + name, data)
    return dst


def torch_runs_it(path: Path, marker: Path) -> bool:
    """Whether plain torch.export.load (or calling the module) runs the archive's payload, in a child process."""
    code = (
        "import torch, sys\n"
        f"p = torch.export.load({str(path)!r})\n"
        "try:\n"
        "    p.module()(torch.zeros(2, 3, 32, 32))\n"
        "except Exception:\n"
        "    pass\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    ran = marker.exists()
    marker.unlink(missing_ok=True)
    return ran


def _json_edit(part: str, change: Callable[[dict[str, object]], None]) -> Edit:
    def edit(name: str, data: bytes) -> bytes:
        if name != part:
            return data
        doc = json.loads(data)
        change(doc)
        return json.dumps(doc).encode()

    return edit


def _pickle_first_weight(marker: Path) -> Edit:
    def edit(name: str, data: bytes) -> bytes:
        if name == "data/weights/model_weights_config.json":
            doc = json.loads(data)
            first = next(iter(doc["config"].values()))
            first["use_pickle"] = True
            return json.dumps(doc).encode()
        return pickled(marker) if name == "data/weights/weight_0" else data

    return edit


def _expression(marker: Path) -> Edit:
    def edit(name: str, data: bytes) -> bytes:
        evil = f"__import__('pathlib').Path({str(marker)!r}).touch() or Symbol"
        return data.replace(b"Symbol(", evil.encode() + b"(", 1) if name == "models/model.json" else data

    return edit


def _guard(marker: Path) -> Edit:
    def change(doc: dict[str, object]) -> None:
        doc["guards_code"] = [f"__import__('pathlib').Path({str(marker)!r}).touch() is None"]

    return _json_edit("models/model.json", change)


def _target(marker: Path) -> Edit:
    def edit(name: str, data: bytes) -> bytes:
        return (
            data.replace(b'"torch.ops.aten.gelu.default"', b'"torch.os.system"')
            if name == "models/model.json"
            else data
        )

    return edit


def _sample_inputs(marker: Path) -> Edit:
    def edit(name: str, data: bytes) -> bytes:
        return pickled(marker) if name.startswith("data/sample_inputs/") else data

    return edit


# (name, edit, what the refusal says, whether plain torch runs the payload of this archive)
CRAFTED = [
    ("pickled weight", _pickle_first_weight, "is pickled", True),
    ("sample inputs that need unpickling", _sample_inputs, "is not plain tensors", True),
    ("code in a shape expression", _expression, "not plain arithmetic", True),
    ("code in a guard", _guard, "guard code", None),
    ("a Python callable as an operator", _target, "not an ATen operator", None),
]


@pytest.mark.parametrize("name,make,message,dangerous", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_pt2_is_refused_before_it_runs_anything(
    tiny_pt2: Path, tmp_path: Path, name: str, make: Callable[[Path], Edit], message: str, dangerous: bool | None
) -> None:
    marker = tmp_path / "code-ran"
    evil = rewrite(tiny_pt2, tmp_path / "evil.pt2", make(marker))
    if dangerous:
        assert torch_runs_it(evil, marker), f"{name}: plain torch.export.load no longer runs this payload"
    with pytest.raises(CheckpointError, match=message):
        load_backbone(weights=evil)
    assert not marker.exists()


def test_parts_outside_an_exported_program_are_refused(tiny_pt2: Path, tmp_path: Path) -> None:
    compiled = rewrite(tiny_pt2, tmp_path / "aoti.pt2", lambda n, d: d, add={"data/aotinductor/model/model.so": b"ELF"})
    with pytest.raises(CheckpointError, match="data/aotinductor/model/model.so"):
        check_archive(compiled)
    custom = rewrite(tiny_pt2, tmp_path / "custom.pt2", lambda n, d: d, add={"data/constants/custom_obj_0": b"x"})
    with pytest.raises(CheckpointError, match="custom_obj_0"):
        check_archive(custom)


def test_genuine_exports_pass(tiny_pt2: Path) -> None:
    check_archive(tiny_pt2)
    assert load_backbone(weights=tiny_pt2).embedding_dim == 32


@pytest.mark.skipif(not SHARED_PT2.exists(), reason="the shared EfficientNet is beside the project, not in it")
def test_the_shared_real_export_passes() -> None:
    check_archive(SHARED_PT2)
