"""The command line: every command listed, bad input -> one line, exit 1, no traceback, no files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from omsf2.cli.app import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(res, *needles: str) -> None:
    out = res.output
    assert res.exit_code == 1, out
    assert "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for n in needles:
        assert n in lines[0], out


def test_help_lists_every_command_and_version() -> None:
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    # Command names as the first word of a row of the Commands box: "train" must not match "training".
    listed = set(re.findall(r"^│ (\S+) ", res.output, re.MULTILINE))
    for cmd in ("train", "eval", "models", "data", "demo", "info", "kernels", "export"):
        assert cmd in listed, res.output
    v = run("--version")
    assert v.exit_code == 0 and v.output.startswith("omsf2 ")


def test_models_lists_variants() -> None:
    res = run("models")
    assert res.exit_code == 0
    for name in ("omsf2_tiny", "omsf2_r18", "omsf2_r50"):
        assert name in res.output


def test_info() -> None:
    res = run("info")
    assert res.exit_code == 0 and "torch" in res.output


def test_data_synth_and_refuse_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    res = run("data", "synth", out, "--n", "4", "--size", "64", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert len(list((out / "train").rglob("*.png"))) == 4
    assert_one_line_error(run("data", "synth", out, "--n", "4", "--size", "64"), "not empty")


def _tree(p: Path) -> list[str]:
    return sorted(str(x.relative_to(p)) for x in p.rglob("*")) if p.exists() else []


@pytest.fixture()
def data_copy(tmp_path: Path, synth_root: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


def _train(data: Path, out: Path, *extra: str):
    return run(
        "train",
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--img-size",
        "64",
        "--workers",
        "0",
        *extra,
    )


def test_negative_epochs(data_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert_one_line_error(_train(data_copy, out, "--epochs", "-3"), "epochs must be >= 1")
    assert not out.exists()


def _corrupt(root: Path) -> None:
    (root / "train" / "normal" / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))


def _truncated(root: Path) -> None:
    src = next((root / "train" / "stage_I").glob("*.png")).read_bytes()
    (root / "train" / "stage_I" / "zz_trunc.png").write_bytes(src[: len(src) // 2])


def _text_png(root: Path) -> None:
    (root / "train" / "stage_II" / "zz_notes.png").write_text("this is not an image\n")


def _bad_dicom(root: Path) -> None:
    (root / "train" / "stage_III" / "zz_scan.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage" * 10)


@pytest.mark.parametrize(
    ("damage", "name"),
    [
        (_corrupt, "zz_corrupt.png"),
        (_truncated, "zz_trunc.png"),
        (_text_png, "zz_notes.png"),
        (_bad_dicom, "zz_scan.dcm"),
    ],
    ids=["corrupt image", "truncated image", "text file named .png", "unreadable DICOM"],
)
def test_train_on_bad_images(data_copy: Path, tmp_path: Path, damage, name: str) -> None:
    damage(data_copy)
    out = tmp_path / "run"
    assert_one_line_error(_train(data_copy, out), name)
    assert _tree(out) == []


def test_train_on_empty_folder_and_empty_class(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(_train(empty, tmp_path / "r1"), "is empty")
    (tmp_path / "d" / "train" / "a").mkdir(parents=True)
    (tmp_path / "d" / "train" / "b").mkdir(parents=True)
    Image.new("L", (32, 32)).save(tmp_path / "d" / "train" / "a" / "x.png")
    assert_one_line_error(_train(tmp_path / "d", tmp_path / "r2"), "holds no images")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_train_unknown_model_and_missing_data(tmp_path: Path, data_copy: Path) -> None:
    assert_one_line_error(_train(data_copy, tmp_path / "r", "--model", "omsf3"), "unknown model 'omsf3'")
    assert_one_line_error(_train(tmp_path / "nope", tmp_path / "r"), "does not exist")


def test_train_then_eval_and_foreign_checkpoints(data_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = _train(data_copy, out, "--no-attention-aug")
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and (out / "best.pt").is_file()
    ev = run("eval", out / "best.pt", "--split", "test", "--json", tmp_path / "e.json", "--workers", "0")
    assert ev.exit_code == 0, ev.output
    assert "recall[stage_III]" in ev.output and (tmp_path / "e.confusion.png").is_file()
    # A checkpoint of another class count against this data.
    three = tmp_path / "three"
    for split in ("train", "val"):
        for c in ("a", "b", "c"):
            (three / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((32, 32), np.uint8)).save(three / split / c / "x.png")
    assert_one_line_error(run("eval", out / "best.pt", "--data", three, "--workers", "0"), "trained on 4 classes")
    # Resuming with data of other classes, and eval of a file that is no checkpoint.
    assert_one_line_error(run("eval", tmp_path / "e.json"), "not a valid omsf2/torch checkpoint")
    assert_one_line_error(run("eval", tmp_path / "missing.pt"), "does not exist")


def test_eval_of_a_dicom_dataset(tmp_path: Path, synth_root: Path) -> None:
    # DICOM files train like PNGs: a folder of generated MONOCHROME1 DICOMs.
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    root = tmp_path / "dcm"
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
                meta.MediaStorageSOPInstanceUID = generate_uid()
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds = FileDataset(str(root / split / c / f"{i}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
                ds.SOPClassUID, ds.SOPInstanceUID = (
                    meta.MediaStorageSOPClassUID,
                    meta.MediaStorageSOPInstanceUID,
                )
                ds.Rows = ds.Columns = 48
                ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
                ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
                ds.PhotometricInterpretation = "MONOCHROME1"
                ds.PixelData = rng.integers(0, 4096, (48, 48), dtype=np.uint16).tobytes()
                pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
    res = _train(root, tmp_path / "run", "--no-attention-aug")
    assert res.exit_code == 0, res.output


def test_console_script_error_is_one_line(tmp_path: Path) -> None:
    """The installed entry point itself (not CliRunner): stderr is one line, exit 1."""
    proc = subprocess.run(
        [sys.executable, "-m", "omsf2.cli.app", "eval", str(tmp_path / "none.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_resume_refuses_changed_settings_and_needs_no_data(data_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _train(data_copy, out, "--no-attention-aug").exit_code == 0
    res = run("train", "--resume", out / "last.pt", "--lr", "0.1", "--seed", "3")
    assert_one_line_error(res, "drop --lr, --seed")
    ok = run("train", "--resume", out / "last.pt", "--epochs", "2", "--workers", "0")
    assert ok.exit_code == 0, ok.output
    assert "accuracy" in ok.output
    assert_one_line_error(run("train", "--out", tmp_path / "x"), "--data is required")


def test_init_from_a_foreign_model(data_copy: Path, tmp_path: Path) -> None:
    import torch

    from omsf2.models.backbone import ResNetBackbone

    torch.save(ResNetBackbone(50, width=0.25).state_dict(), tmp_path / "r50.pth")
    res = _train(data_copy, tmp_path / "run", "--init", tmp_path / "r50.pth")
    assert_one_line_error(res, "do not fit model 'omsf2_tiny'")
    assert not (tmp_path / "run").exists()


def test_malformed_dicom_from_the_real_console_is_one_line(data_copy: Path, tmp_path: Path) -> None:
    """pydicom warns and logs about malformed headers; none of that may reach the user's terminal."""
    _bad_dicom(data_copy)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "omsf2.cli.app",
            "train",
            "--data",
            str(data_copy),
            "--out",
            str(tmp_path / "r"),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--img-size",
            "64",
            "--workers",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "zz_scan.dcm" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
