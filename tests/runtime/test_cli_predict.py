"""``omsf2 predict`` and ``omsf2 bundle`` through the CLI: outputs, per-file failures, refusals before work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_predict_writes_table_json_csv_and_overlays(tiny_bundle_master: Path, images, tmp_path: Path) -> None:
    folder = images[0].parent
    res = run(
        "predict",
        folder,
        "--model",
        tiny_bundle_master,
        "--overlay",
        tmp_path / "ov",
        "--json",
        tmp_path / "r.json",
        "--csv",
        tmp_path / "r.csv",
        "--batch",
        "2",
    )
    assert res.exit_code == 0, res.output
    assert "5 of 5 predicted with ort; overlays in" in res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["classes"] == ["normal", "stage_I", "stage_II", "stage_III"] and len(doc["results"]) == 5
    first = doc["results"][0]
    assert first["label"] in doc["classes"] and first["error"] is None
    overlay = Path(first["overlay"])
    from PIL import Image

    from omsf2.data.io import read_image

    with Image.open(overlay) as im:
        assert im.mode == "RGB" and im.size[::-1] == read_image(first["file"]).shape
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "file,label,p_normal,p_stage_I,p_stage_II,p_stage_III,error" and len(lines) == 6


def test_bad_files_are_reported_per_file_and_exit_1(tiny_bundle_master: Path, images, tmp_path, write_dicom) -> None:
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ct = write_dicom(tmp_path / "ct.dcm", np.full((16, 16), 7, np.uint16), modality="CT")
    res = run(
        "predict",
        images[0],
        bad,
        ct,
        tmp_path / "missing.png",
        images[1],
        "--model",
        tiny_bundle_master,
        "--json",
        tmp_path / "r.json",
    )
    assert res.exit_code == 1
    assert "2 of 5 predicted" in res.output and "3 file(s) could not be predicted" in res.output
    errors = {Path(r["file"]).name: r["error"] for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert errors["img0.png"] is None and errors["img1.png"] is None
    assert "corrupt" in errors["corrupt.png"] or "PNG" in errors["corrupt.png"]
    assert errors["ct.dcm"] == "not applicable: modality CT (this bundle accepts CR, DR, DX)"
    assert errors["missing.png"]
    ok = run("predict", ct, "--model", tiny_bundle_master, "--any-modality")
    assert ok.exit_code == 0, ok.output


def test_paths_on_stdin_and_json_on_stdout(tiny_bundle_master: Path, images) -> None:
    res = runner.invoke(
        app,
        ["predict", "-", "--model", str(tiny_bundle_master), "--json", "-"],
        input="\n".join(str(p) for p in images[:2]) + "\n",
    )
    assert res.exit_code == 0, res.output
    start = res.stdout.index("{")
    doc = json.loads(res.stdout[start : res.stdout.rindex("}") + 1])
    assert [Path(r["file"]).name for r in doc["results"]] == ["img0.png", "img1.png"]


def test_tampered_bundle_is_one_line_before_any_file_is_read(tiny_bundle: Path, tmp_path: Path) -> None:
    (tiny_bundle / "added.bin").write_bytes(b"x")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"junk")
    res = run("predict", bad, "--model", tiny_bundle)
    assert res.exit_code == 1
    assert res.output.strip().startswith("error:") and "file added" in res.output
    assert "corrupt" not in res.output and len(res.output.strip().splitlines()) <= 2  # wrapped at most once


def test_escaping_path_and_newer_format_are_one_line(tiny_bundle: Path, images) -> None:
    manifest = tiny_bundle / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "files": {**m["files"], "../../etc/passwd": "0" * 64}}))
    res = run("predict", images[0], "--model", tiny_bundle)
    assert res.exit_code == 1 and "escapes the bundle folder" in res.output and "Traceback" not in res.output
    manifest.write_text(json.dumps({**m, "format_version": 99}))
    res = run("predict", images[0], "--model", tiny_bundle)
    assert res.exit_code == 1 and "format version 99" in res.output


def test_options_and_outputs_are_checked_before_work(tiny_bundle_master: Path, images, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for args, msg in [
        (["--batch", "0"], "--batch must be at least 1"),
        (["--overlay", tmp_path / "afile"], "exists and is not a folder"),
        (["--csv", tmp_path], "is a folder"),
        (["--backend", "bogus"], "Invalid value"),
    ]:
        res = run("predict", images[0], "--model", tiny_bundle_master, *args)
        assert res.exit_code != 0 and msg in res.output, (args, res.output)
    res = run("predict", tmp_path / "empty-dir-does-not-exist", "--model", tmp_path / "nope")
    assert res.exit_code == 1 and "does not exist" in res.output
    (tmp_path / "empty").mkdir()
    res = run("predict", tmp_path / "empty", "--model", tiny_bundle_master)
    assert res.exit_code == 1 and "no input images" in res.output


def test_bundle_command(tiny_export: Path, tmp_path: Path) -> None:
    args = ("--name", "demo", "--version", "2.1.0")
    res = run("bundle", tiny_export, "--out", tmp_path / "b", *args, "--reference", "paper A", "--accept-view", "LL",
              "--accept-view", "pa")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "wrote bundle" in res.output and "manifest sha256" in res.output and "algorithm demo 2.1.0" in res.output
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert (m["name"], m["version"], m["references"]) == ("demo", "2.1.0", ["paper A"])
    assert m["accepts"] == {"modalities": ["CR", "DR", "DX"], "body_parts": ["CHEST"], "views": ["LL", "PA"]}
    again = run("bundle", tiny_export, "--out", tmp_path / "b", *args)
    assert again.exit_code == 1 and "already exists" in again.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "--name and --version are required"),
        (("--name", "demo"), "--name and --version are required"),
        (("--name", "d\\emo", "--version", "1"), "--name must be 1-64 printable characters"),
        (("--name", "demo", "--version", "1", "--accept-view", "P/A"), "accepts.views must be"),
    ],
)
def test_bundle_command_needs_the_algorithms_identity(tiny_export: Path, tmp_path: Path, extra, message) -> None:
    res = run("bundle", tiny_export, "--out", tmp_path / "b", *extra)
    assert res.exit_code == 1 and res.output.startswith("error:") and message in res.output, res.output
    assert not (tmp_path / "b").exists()


def test_folder_scan_finds_dicoms_by_content_and_tiff_bmp(tiny_bundle_master: Path, images, tmp_path, write_dicom):
    """A PACS export names files IM0001 without a suffix; TIFF and BMP in a folder count as when named."""
    from PIL import Image

    scan = tmp_path / "export" / "SERIES1"
    scan.mkdir(parents=True)
    write_dicom(scan / "IM0001", np.full((40, 40), 900, np.uint16))
    Image.open(images[0]).save(scan / "view.tif")
    Image.open(images[2]).convert("L").save(scan / "view.bmp")
    (scan / "README").write_text("not an image")
    (scan / ".hidden.png").write_bytes(images[0].read_bytes())
    res = run("predict", tmp_path / "export", "--model", tiny_bundle_master, "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    assert sorted(Path(r["file"]).name for r in rows) == ["IM0001", "view.bmp", "view.tif"]
    assert all(r["error"] is None for r in rows)


def test_predict_from_an_export_folder_and_a_checkpoint(tiny_export: Path, images) -> None:
    res = run("predict", images[0], "--model", tiny_export)
    assert res.exit_code == 0, res.output
    res = run("predict", images[0], "--model", tiny_export.parent / "tiny.pt")
    assert res.exit_code == 0, res.output
    assert "exporting tiny.pt to ONNX first" in res.output
