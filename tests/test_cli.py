"""The CLI: real command lines, one-line errors with exit code 1, never a traceback for a user mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from click.testing import Result

from birder_index.cli import cli
from tests.helpers import needs_cxx
from tests.helpers import save_vit


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def built(photos: Path, tiny_pt: Path) -> Path:
    result = run("build", photos, "--weights", tiny_pt, "--workers", "0")
    assert result.exit_code == 0, result.output
    return photos / ".birder-index"


def test_build_search_info(built: Path, photos: Path, tiny_pt: Path) -> None:
    out = run("build", photos, "--workers", "0").stdout
    assert out.startswith("0 indexed, 9 unchanged in")
    result = run("search", photos / "photo00.jpg", "-k", "2", "--index-dir", built)
    lines = result.output.splitlines()
    assert result.exit_code == 0 and lines[0] == f"query: {photos / 'photo00.jpg'}"
    assert lines[2].split()[:2] == ["1", "1.0000"] and lines[2].endswith("photo00.jpg")
    (js,) = json.loads(run("search", photos / "photo01.jpg", "--json", "-k", "1", "--index-dir", built).stdout)
    assert js["query"].endswith("photo01.jpg") and js["results"][0]["path"].endswith("photo01.jpg")
    assert set(js["results"][0]) == {"path", "score", "id"}
    several = run("search", photos / "photo01.jpg", photos / "photo02.png", "--json", "--index-dir", built).stdout
    assert [r["query"][-11:] for r in json.loads(several)] == ["photo01.jpg", "photo02.png"]  # one document
    lines = run("search", photos / "photo01.jpg", photos / "photo02.png", "--jsonl", "--index-dir", built).stdout
    assert [json.loads(line)["query"][-11:] for line in lines.splitlines()] == ["photo01.jpg", "photo02.png"]
    info = json.loads(run("info", "--json", "--failed", "--index-dir", built).stdout)
    assert (info["images"], info["vectors"], info["failed"]) == (9, 8, 1)
    assert info["failed_files"][0]["path"] == "broken.jpg"
    text = run("info", "--index-dir", built).output
    assert "images:  9 (8 indexed, 0 pending, 1 failed)" in text and "faiss:   Flat, 8 vectors" in text
    # How the last build embedded: bf16 only where this CPU runs it natively, and then checked against float32.
    e = info["last_embedding"]
    assert (e["device"], e["attention"], e["compiled"], e["decode"]) == ("cpu", "sdpa", False, "fast")
    if e["dtype"] == "bfloat16":
        assert e["checked_cosine"] >= 0.9995
    else:
        assert e["dtype"] == "float32" and e["checked_cosine"] is None
    assert f"embed:   cpu, {e['dtype']}" in text and "SDPA attention, eager, fast decode (last build)" in text


def test_files_with_new_timestamps_but_the_same_content_count_as_unchanged(built: Path, photos: Path) -> None:
    for name in ("photo00.jpg", "photo01.jpg"):  # as `cp` without -p leaves them
        os.utime(photos / name, ns=(1, 1))
    out = run("build", photos, "--workers", "0").stdout
    assert out.startswith("0 indexed, 9 unchanged (2 with a new timestamp, same content) in"), out
    assert run("build", photos, "--workers", "0").stdout.startswith("0 indexed, 9 unchanged in")


def test_index_is_found_from_a_subfolder(built: Path, photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(photos / "sub")
    result = run("search", "photo07.jpg", "-k", "1")
    assert result.exit_code == 0 and result.output.splitlines()[2].endswith("sub/photo07.jpg")


def test_build_summary_warns_about_failures(photos: Path, tiny_pt: Path) -> None:
    result = run("build", photos, "--weights", tiny_pt, "--workers", "0")
    assert result.exit_code == 0
    assert "8 indexed, 1 failed, 0 unchanged" in result.output
    assert "Warning: 1 files could not be indexed; `birder-index info --failed` lists them." in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["build", "{tmp}/nope", "--weights", "{pt}"], "Error: photo folder not found: {tmp}/nope"),
        (["build", "{photos}", "--model", "vit_nope"], "Error: unknown model 'vit_nope'"),
        (["build", "{photos}", "--model", "vit_l16"], "Error: vit_l16 is an architecture, not weights"),
        (["build", "{photos}", "--weights", "{bad}"], "Error: {bad} is not a birder checkpoint"),
        (["search", "x.jpg", "--index-dir", "{tmp}"], "Error: no birder-index index in {tmp}"),
        (["info", "--index-dir", "{tmp}/none"], "Error: no birder-index index in {tmp}/none"),
        (["build", "{photos}", "--weights", "{pt}", "--batch-size", "0"], "Error: --batch-size must be >= 1, got 0"),
        (["build", "{photos}", "--weights", "{pt}", "--device", "cuda:7"], "Error: --device cuda:7"),
    ],
)
def test_user_mistakes_are_one_line_errors(
    args: list[str], message: str, photos: Path, tiny_pt: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    fill = {"tmp": str(tmp_path), "pt": str(tiny_pt), "photos": str(photos), "bad": str(bad)}
    result = CliRunner().invoke(cli, [a.format(**fill) for a in args])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(message.format(**fill)), result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_search_errors(built: Path, photos: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["search", str(photos / "broken.jpg"), "--index-dir", str(built)])
    assert result.exit_code == 1 and result.output.startswith("Error: cannot read query image")
    result = CliRunner().invoke(cli, ["search", "--index-dir", str(built)])
    assert result.exit_code == 2 and "give QUERY images" in result.output


def test_index_from_another_model(built: Path, photos: Path, tmp_path: Path) -> None:
    other = save_vit(tmp_path, "vit_reg4_m16_rms_avg", "pt", name="other")
    result = CliRunner().invoke(cli, ["build", str(photos), "--weights", str(other)])
    assert result.exit_code == 1 and result.output.startswith("Error: the index in ")
    assert "use another --index-dir" in result.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    result = CliRunner().invoke(cli, ["build", str(photos), "--weights", str(junk)])  # on the existing index
    assert (
        result.exit_code == 1
        and result.output == f"Error: {junk} is not a birder checkpoint (.pt, .safetensors or .pt2)\n"
    )


def test_unwritable_folder_suggests_index_dir(photos: Path, tiny_pt: Path) -> None:
    # Root may write anywhere, so the folder is made unwritable by a file standing where the index would go.
    (photos / ".birder-index").write_text("")
    result = CliRunner().invoke(cli, ["build", str(photos), "--weights", str(tiny_pt)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot write the index to {photos / '.birder-index'}")
    assert "choose a writable folder with --index-dir" in result.output


def test_models_lists_published_weights() -> None:
    out = run("models", "vit_reg4_m16*").stdout.splitlines()
    assert out[0].split()[:3] == ["name", "architecture", "size"]  # a header
    table, notes = out[1:3], out[3:]  # two models, then the footnotes
    assert notes[0].startswith("* the default model") and "birder-index[birder]" in notes[-1]
    rows = {line[2:].split()[0]: line for line in table}
    assert list(rows) == ["vit_reg4_m16_rms_avg_i-jepa", "vit_reg4_m16_rms_avg_i-jepa-imagenet21k"]
    assert rows["vit_reg4_m16_rms_avg_i-jepa-imagenet21k"].startswith("*")  # the default model
    # its head, not cached, loaded by birder-index's own ViT
    assert rows["vit_reg4_m16_rms_avg_i-jepa-imagenet21k"].split()[-3:] == ["19167", "no", "birder-index"]
    assert rows["vit_reg4_m16_rms_avg_i-jepa"].split()[-3:] == ["-", "no", "birder-index"]  # an encoder
    long = run("models", "vit_reg4_m16_rms_avg_i-jepa", "--long").stdout
    assert "https://huggingface.co/birder-project/vit_reg4_m16_rms_avg_i-jepa/" in long and "sha256 0f5cd4e0" in long
    (entry,) = json.loads(run("models", "vit_l16_mim_400", "--json").stdout)
    assert entry["head_classes"] == 0 and entry["sha256"].startswith("9b5c4e25") and not entry["downloaded"]
    nothing = CliRunner().invoke(cli, ["models", "nothing"])
    assert nothing.exit_code == 1 and "no published weights match 'nothing'" in nothing.output


def test_classify_with_the_models_head(photos: Path, checkpoints: Path) -> None:
    result = run(
        "classify", photos / "photo00.jpg", "--weights", checkpoints / "vit_l16_tiny_head.pt", "-k", "2", "--json"
    )
    (data,) = json.loads(result.stdout)
    assert len(data["classes"]) == 2 and data["classes"][0]["probability"] >= data["classes"][1]["probability"]


def test_classify_refuses_an_encoder_before_loading_it(
    photos: Path, checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_now(*args: object, **kwargs: object) -> None:
        raise AssertionError("an encoder's weights were loaded before it was refused")

    monkeypatch.setattr("birder_index.backbone.load.load_backbone", not_now)
    result = CliRunner().invoke(
        cli, ["classify", str(photos / "photo00.jpg"), "--weights", str(checkpoints / "vit_reg4_b16_tiny.pt")]
    )
    assert result.exit_code == 1 and "has no classifier head" in result.output
    assert "birder-index lookup" in result.output and "birder-index probe" in result.output
    by_name = CliRunner().invoke(cli, ["classify", str(photos / "photo00.jpg"), "--model", "vit_l16_mim_400"])
    assert by_name.exit_code == 1 and "vit_l16_mim_400 has no classifier head" in by_name.output  # no download


def test_metadata_in_another_database(
    photos: Path, tiny_pt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'meta.db'}"
    (tmp_path / "elsewhere").mkdir()
    index_dir = tmp_path / "vectors"
    result = run("build", photos, "--weights", tiny_pt, "--workers", "0", "--index-dir", index_dir, "--db", url)
    assert result.exit_code == 0 and not (index_dir / "index.db").exists()
    monkeypatch.setenv("BIRDER_INDEX_DB", url)
    out = run("search", photos / "photo00.jpg", "-k", "1", "--index-dir", index_dir).output
    assert out.splitlines()[2].endswith("photo00.jpg")
    missing = CliRunner().invoke(cli, ["info"])
    assert missing.exit_code == 1 and "name the index folder with --index-dir" in missing.output


@needs_cxx
def test_build_with_a_compiled_model(
    photos: Path, tiny_pt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run("build", photos, "--weights", tiny_pt, "--workers", "0", "--batch-size", "3", "--compile").stdout
    assert out.startswith("8 indexed, 1 failed, 0 unchanged in") and "(model compiled in " in out
    # The search embeds its query eagerly: the stored (compiled) embedding must be the same vector.
    result = run("search", photos / "photo04.jpg", "-k", "1", "--json", "--index-dir", photos / ".birder-index")
    hit = json.loads(result.stdout)[0]["results"][0]
    assert hit["path"].endswith("photo04.jpg") and hit["score"] >= 0.9999
    info = json.loads(run("info", "--json", "--index-dir", photos / ".birder-index").output)
    assert info["last_embedding"]["compiled"] is True
    monkeypatch.setattr("birder_index.indexer.pipeline.COMPILE_MIN_IMAGES", 1)  # auto would compile now
    out = run("build", photos, "--weights", tiny_pt, "--workers", "0", "--index-dir", tmp_path / "b", "--no-compile")
    assert out.stdout.startswith("8 indexed") and "compiled" not in out.output


def test_compile_is_chosen_for_long_cpu_runs_unless_told() -> None:
    import torch

    from birder_index.indexer.pipeline import COMPILE_MIN_IMAGES
    from birder_index.indexer.pipeline import should_compile

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert should_compile(None, cpu, COMPILE_MIN_IMAGES) and not should_compile(None, cpu, COMPILE_MIN_IMAGES - 1)
    assert not should_compile(None, gpu, 10**6)
    assert should_compile(True, cpu, 1) and should_compile(True, gpu, 1) and not should_compile(False, cpu, 10**6)


def test_searching_an_indexed_photo_never_imports_torch(built: Path, photos: Path) -> None:
    """Its stored embedding is the query and the re-rank runs on FAISS: no model, and no torch to import."""
    code = (
        "import sys\nfrom birder_index.cli import cli\n"
        f"cli(['search', {str(photos / 'photo00.jpg')!r}, '--index-dir', {str(built)!r}], standalone_mode=False)\n"
        "print('torch loaded:', 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "photo00.jpg" in done.stdout and done.stdout.splitlines()[-1] == "torch loaded: False"
