"""The three commands end to end on a folder of photos indexed with a (tiny) model: text, --json, --report, and
one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from birder_index.cli import cli
from tests.helpers import photo

HOSTILE = "<img src=x onerror=alert(1)>.png"


@pytest.fixture
def species(tmp_path: Path, tiny_pt: Path) -> Path:
    """Three 'species' of 8 photos each (one with a hostile name); a robin photo copied twice into wren (both
    labelled wren); a grey frame among them."""
    root = tmp_path / "species"
    for c, name in enumerate(["robin", "wren", "finch"]):
        (root / name).mkdir(parents=True)
        for i in range(8):
            base = photo(100 * c, (64, 48))
            arr = np.asarray(base).astype(np.int16) + np.random.default_rng(i + 10 * c).integers(-25, 25, (48, 64, 3))
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / name / (HOSTILE if i == 7 else f"{i}.png"))
    shutil.copy(root / "robin" / "0.png", root / "wren" / "copy-a.png")
    shutil.copy(root / "robin" / "0.png", root / "wren" / "copy-b.png")
    Image.new("RGB", (64, 48), (128, 128, 128)).save(root / "finch" / "grey.png")
    result = CliRunner().invoke(cli, ["label", "import", str(root), "--set", "birds", "--weights", str(tiny_pt)])
    assert result.exit_code == 0, result.output
    return root


# The tiny random model puts a class's photos at similarity >= 0.99 to one another: only identical files are copies
SAME = ("--copy-min", "0.9999")


def run(species: Path, *args: str) -> dict:  # type: ignore[type-arg]
    out = CliRunner().invoke(cli, [*args, "--json", "-q", "--index-dir", str(species / ".birder-index")])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_label_audit(species: Path, tmp_path: Path) -> None:
    doc = run(species, "label", "audit", "--set", "birds", "--top", "5", *SAME, "--report", str(tmp_path / "a.html"))
    assert doc["labelled"] == 27 and doc["classes"] == 3 and doc["flagged"] == 2 and len(doc["suspects"]) == 2
    by_name = {Path(s["path"]).name: s for s in doc["suspects"]}
    for name in ("copy-a.png", "copy-b.png"):  # each copy's twin (and the robin original) is left out of its vote
        s = by_name[name]
        assert s["label"] == "wren" and s["looks_like"] == "robin" and s["copies"] == 2
        assert all(Path(n["path"]).name != name and n["label"] == "robin" for n in s["nearest"])
    page = (tmp_path / "a.html").read_text()
    assert "data:image/jpeg;base64," in page and "copy-a.png" in page and "<img src=x" not in page


def test_outliers_and_representatives(species: Path, tmp_path: Path) -> None:
    doc = run(species, "outliers", "--top", "1", "-k", "5", *SAME, "--report", str(tmp_path / "o.html"))
    assert doc["photos"] == 27 and Path(doc["outliers"][0]["path"]).name == "grey.png"
    assert len(doc["outliers"][0]["nearest"]) == 3
    reps = run(species, "representatives", "--top", "3", "--report", str(tmp_path / "r.html"))
    assert reps["photos"] == 27 and len(reps["representatives"]) == 3
    assert sorted(Path(r["path"]).parent.name for r in reps["representatives"]) == ["finch", "robin", "wren"]
    one = run(species, "representatives", "--label", "finch", "--set", "birds", "--top", "2")
    assert one["photos"] == 9 and all(Path(r["path"]).parent.name == "finch" for r in one["representatives"])
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 3 and "<img src=x" not in page


def test_text_output_and_one_line_errors(species: Path) -> None:
    idx = str(species / ".birder-index")
    text = CliRunner().invoke(cli, ["outliers", "--top", "2", "-k", "5", *SAME, "-q", "--index-dir", idx])
    assert text.exit_code == 0 and text.output.startswith("2 most isolated of 27 photos") and "grey.png" in text.output
    for args, message in [
        (["label", "audit", "--set", "nope"], "Error: label set 'nope' is empty or does not exist"),
        (["representatives", "--label", "owl", "--set", "birds"], "Error: no indexed photo is labelled 'owl'"),
        (["outliers", "--top", "0"], "Error: Invalid value for '--top'"),
    ]:
        out = CliRunner().invoke(cli, [*args, "-q", "--index-dir", idx])
        assert out.exit_code != 0 and message in out.output and "Traceback" not in out.output, out.output


def test_one_class_set_is_a_one_line_error(species: Path) -> None:
    idx = str(species / ".birder-index")
    (species / "solo.csv").write_text("path,label\n" + "".join(f"wren/{i}.png,wren\n" for i in range(3)))
    made = CliRunner().invoke(cli, ["label", "import", str(species / "solo.csv"), "--set", "solo", "--index-dir", idx])
    assert made.exit_code == 0, made.output
    one = CliRunner().invoke(cli, ["label", "audit", "--set", "solo", "-q", "--index-dir", idx])
    assert one.exit_code == 1 and one.output.count("\n") == 1 and "an audit needs at least 2" in one.output
