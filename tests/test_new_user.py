"""What a new user tripped on (issue 19): the index found from where they stand, one JSON convention, options and
messages that point the right way, a missing optional part named with its install line, one FAISS per install."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from birder_index.cli import cli
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from tests.helpers import photo

OPTS = BuildOptions(workers=0)
ROOT = Path(__file__).resolve().parents[1]


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def two_folders(tmp_path: Path, tiny_pt: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/photos (with a class-per-folder tree inside) and tmp/other, each indexed; the user stands in tmp."""
    for folder, seeds in (("photos", range(4)), ("other", range(10, 13))):
        (tmp_path / folder).mkdir()
        for s in seeds:
            photo(s).save(tmp_path / folder / f"p{s}.jpg", quality=90)
        build_index(tmp_path / folder, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    for c, name in enumerate(("robin", "wren")):
        (tmp_path / "photos" / "classes" / name).mkdir(parents=True)
        for i in range(2):
            photo(100 + 10 * c + i).save(tmp_path / "photos" / "classes" / name / f"{i}.jpg", quality=90)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_index_of_the_photo_folder_holding_the_arguments_is_found(two_folders: Path) -> None:
    code, out, err = run("search", "photos/p1.jpg", "-k", "1")  # from the folder above photos/
    assert code == 0 and out.splitlines()[2].endswith("p1.jpg")
    assert f"using the index in {two_folders / 'photos' / '.birder-index'}" in err
    code, out, err = run("label", "import", "photos/classes", "--set", "birds")
    assert code == 0 and "4 photos labelled in 2 classes" in out and "using the index in" in err
    code, out, err = run("lookup", "photos/classes/robin/0.jpg", "--set", "birds", "--method", "prototype")
    assert code == 0 and "robin" in out.splitlines()[0]


def test_the_current_folder_is_quiet_and_two_indexes_are_an_error(
    two_folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(two_folders / "photos")
    code, _, err = run("search", "p1.jpg", "-k", "1")
    assert code == 0 and "using the index" not in err
    monkeypatch.chdir(two_folders)
    code, _, err = run("search", "photos/p1.jpg", "other/p10.jpg")
    assert code == 1 and "belong to two indexes" in err
    assert str(two_folders / "photos" / ".birder-index") in err and str(two_folders / "other" / ".birder-index") in err


def test_index_dir_then_the_environment_come_before_the_paths(
    two_folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = two_folders / "other" / ".birder-index"
    monkeypatch.setenv("BIRDER_INDEX_DIR", str(other))
    code, out, _ = run("search", "photos/p1.jpg", "-k", "1", "--json")
    assert code == 0 and "/other/" in json.loads(out)[0]["results"][0]["path"]  # embedded, searched in `other`
    code, out, _ = run(
        "search", "photos/p1.jpg", "-k", "1", "--json", "--index-dir", two_folders / "photos" / ".birder-index"
    )
    assert code == 0 and json.loads(out)[0]["results"][0]["path"].endswith("photos/p1.jpg")


def test_an_undo_that_cannot_move_a_file_says_which_and_fails(two_folders: Path, tiny_pt: Path) -> None:
    shutil.copy(two_folders / "photos" / "p1.jpg", two_folders / "photos" / "p1_copy.jpg")
    build_index(two_folders / "photos", spec=ModelSpec(weights=tiny_pt), options=OPTS)
    index = two_folders / "photos" / ".birder-index"
    aside = two_folders / "aside"
    code, out, err = run("dedup", "--index-dir", index, "--threshold", "0.999", "--move-to", aside, "--yes")
    assert code == 0 and "1 files moved" in out
    moved = next(p for p in aside.iterdir() if p.suffix == ".jpg")
    moved.write_bytes(b"changed")  # no longer the file that was moved
    code, out, err = run("dedup", "undo", "1", "--index-dir", index)
    assert code == 1 and f"{moved} is not the file that was moved" in out
    assert "1 files could not be moved back" in err


def test_a_relative_move_to_is_undone_from_any_folder_and_a_failed_undo_can_be_retried(
    two_folders: Path, tiny_pt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = two_folders / "photos"
    shutil.copy(photos / "p1.jpg", photos / "p1_copy.jpg")
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    monkeypatch.chdir(photos)  # `cd photos; dedup --move-to ../aside`: the plan must not keep the relative path
    code, out, _ = run("dedup", "--threshold", "0.999", "--move-to", "../aside", "--yes")
    assert code == 0 and "1 files moved" in out
    (moved,) = [p for p in (two_folders / "aside").rglob("*.jpg")]
    monkeypatch.chdir(two_folders)
    hidden = moved.rename(moved.with_name("hidden"))  # the moved file is away for now: the undo fails...
    code, out, _ = run("dedup", "undo", "1", "--index-dir", photos / ".birder-index")
    assert code == 1 and f"{moved} is missing" in out
    hidden.rename(moved)  # ...and once it is back, a second undo restores it
    code, out, _ = run("dedup", "undo", "1", "--index-dir", photos / ".birder-index")
    assert code == 0 and "1 files moved back" in out
    assert sorted(p.name for p in photos.glob("p1*.jpg")) == ["p1.jpg", "p1_copy.jpg"]


@pytest.fixture
def labelled(two_folders: Path) -> Path:
    assert run("label", "import", "photos/classes", "--set", "birds")[0] == 0
    return two_folders / "photos" / ".birder-index"


@pytest.mark.parametrize(
    "args",
    [
        ["info"],
        ["verify"],
        ["label", "list"],
        ["dedup", "--threshold", "0.99"],
        ["dedup", "plans"],
        ["search", "photos/p1.jpg", "photos/p2.jpg"],
        ["lookup", "photos/p1.jpg", "photos/p2.jpg", "--set", "birds", "--method", "prototype"],
        ["probe", "eval", "--set", "birds", "--folds", "2"],
        ["models"],
        ["doctor"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_json_is_exactly_one_document_on_stdout(
    labelled: Path, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(labelled.parent.parent)  # above photos/: the index is found from the paths, or named
    if args[0] in ("info", "verify", "label", "dedup", "probe"):
        args = [*args, "--index-dir", str(labelled)]
    code, out, _ = run(*args, "--json")
    assert code == 0, out
    json.loads(out)  # one document: "Extra data" would raise


def test_a_missing_optional_part_is_one_line_with_its_install_line(two_folders: Path) -> None:
    code = (
        "import sys; sys.modules['faiss'] = None\nfrom birder_index.cli import cli\ncli(['search', 'photos/p1.jpg'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=two_folders)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        == 'Error: FAISS is not installed: pip install "birder-index[cpu]" (or "birder-index[gpu]" on a CUDA machine)'
    )


def test_options_that_differed_for_no_reason(labelled: Path) -> None:
    code, _, _ = run("lookup", "photos/p1.jpg", "--set", "birds", "--neighbors", "3")  # the American spelling too
    assert code == 0

    def help_of(*command: str) -> str:
        return " ".join(CliRunner().invoke(cli, [*command, "--help"]).output.split())

    assert "classes, where search's -k counts photos" in help_of("lookup")
    assert "at most the number of photos of the smallest class" in help_of("probe", "eval")
    assert "--set" in help_of("import")


def _faiss(requirements: list[str]) -> set[str]:
    return {r for r in (re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0] for req in requirements) if r.startswith("faiss")}


def test_each_install_line_ends_with_exactly_one_faiss() -> None:
    """The core installs no FAISS; the `cpu` and `gpu` extras (and `dev`, through `cpu`) install one each: two
    builds would overwrite each other's `faiss` package."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert _faiss(project["dependencies"]) == set()
    assert _faiss(extras["cpu"]) == {"faiss-cpu"} and _faiss(extras["gpu"]) == {"faiss-gpu-cu12"}
    (own,) = [r for r in extras["dev"] if r.startswith("birder-index[")]  # dev takes FAISS through `cpu`
    assert "cpu" in own[len("birder-index[") : -1].split(",") and not _faiss(extras["dev"])
    readme = (ROOT / "README.md").read_text()
    for line in re.findall(r"pip install [^\n]*birder-index\[[^\]]*\][^\n]*", readme):
        chosen = set(re.search(r"birder-index\[([^\]]*)\]", line).group(1).split(","))  # type: ignore[union-attr]
        assert len(chosen & {"cpu", "gpu"}) == 1, line
