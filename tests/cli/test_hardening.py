"""Bad input and interruptions from the command line: checked before work, one line, the stated exit codes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app

runner = CliRunner()


def run(*args: object, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def one_line_error(res, *needles: str) -> str:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for n in needles:
        assert n in lines[0], res.output
    return lines[0]


def _tree(p: Path) -> list[str]:
    return sorted(str(x.relative_to(p)) for x in p.rglob("*")) if p.exists() else []


@pytest.fixture()
def data_copy(tmp_path: Path, synth_root: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


def _train_args(data: Path, out: Path) -> list[object]:
    return ["train", "--data", data, "--out", out, "--epochs", "1", "--batch-size", "4", "--img-size", "64"]


def _corrupt_jpeg_dicom(path: Path) -> None:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = 48
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4])
    ds["PixelData"].VR = "OB"
    pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)


def test_corrupt_jpeg_dicom_logs_no_traceback_unless_verbose(data_copy: Path, tmp_path: Path) -> None:
    _corrupt_jpeg_dicom(data_copy / "train" / "stage_I" / "zz_jpeg.dcm")
    base = [sys.executable, "-m", "omsf2.cli.app"]
    args = [str(a) for a in _train_args(data_copy, tmp_path / "r")] + ["--workers", "0"]
    quiet = subprocess.run(base + args, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr, quiet.stderr
    assert quiet.stderr.strip().count("\n") == 0 and "zz_jpeg.dcm" in quiet.stderr
    loud = subprocess.run([*base, "-v", *args], capture_output=True, text=True, timeout=300)
    assert loud.returncode == 1 and "Traceback" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("error: ")


def test_sizes_have_upper_bounds(tmp_path: Path, data_copy: Path) -> None:
    out = tmp_path / "r"
    one_line_error(run(*_train_args(data_copy, out)[:-1], "100000"), "image size must be a multiple of 32 in")
    one_line_error(run("data", "synth", tmp_path / "ph", "--size", "100000"), "phantom size must lie in [64, 4096]")
    assert not out.exists() and not (tmp_path / "ph").exists()


def test_out_of_memory_anywhere_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import omsf2.data.synthetic as synthetic

    def boom(*a: object, **k: object) -> None:
        np.empty((1 << 62,), np.uint8)  # numpy's _ArrayMemoryError, as a huge phantom raised

    monkeypatch.setattr(synthetic, "write_dataset", boom)
    one_line_error(run("data", "synth", tmp_path / "ph", "--n", "4", "--size", "64"), "out of memory")


def test_verbose_prints_the_traceback_of_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import omsf2.data.synthetic as synthetic

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("the library failed")

    monkeypatch.setattr(synthetic, "write_dataset", boom)
    res = run("-v", "data", "synth", tmp_path / "ph", "--n", "4", "--size", "64")
    assert res.exit_code == 1 and "Traceback" in res.output and "def boom" not in res.output
    assert res.output.strip().splitlines()[-1] == "error: the library failed"
    one_line_error(run("data", "synth", tmp_path / "ph", "--n", "4", "--size", "64"), "the library failed")


def test_exit_code_rule_is_stated_and_kept(data_copy: Path, tmp_path: Path) -> None:
    assert "Exit codes" in run("--help").output
    assert run("nonsense").exit_code == 2
    res = run(*_train_args(data_copy, tmp_path / "r")[:6], "abc")  # --epochs abc
    assert res.exit_code == 2 and "Invalid value for '--epochs'" in res.output, res.output
    assert run("kernels", "check", "--iters", "0").exit_code == 2
    assert run("eval", tmp_path / "x.pt", "--split", "dev").exit_code == 2
    assert not (tmp_path / "r").exists()


def test_models_into_a_closed_pipe_exits_0() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "omsf2.cli.app", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # what `| head -1` does once it has its line; here before the first write
    rc = proc.wait(timeout=300)
    stderr = proc.stderr.read().decode()
    assert rc == 0 and stderr == "", stderr


def test_bad_kernel_env_is_refused_by_info() -> None:
    one_line_error(run("info", env={"OMSF2_KERNELS": "bogus"}), "invalid OMSF2_KERNELS value 'bogus'")
    assert "ref" in run("info", env={"OMSF2_KERNELS": "ref"}).output


def test_help_lists_the_split_choices() -> None:
    assert "<train|val|test>" in run("eval", "--help").output


def test_data_synth_bad_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    one_line_error(run("data", "synth", ".", "--overwrite", "--n", "4", "--size", "64"), "names no folder")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    one_line_error(run("data", "synth", mine, "--overwrite", "--n", "4"), "is not an omsf2 phantom dataset")
    f = tmp_path / "file"
    f.write_text("x")
    one_line_error(run("data", "synth", f, "--n", "4", "--size", "64"), "exists and is not a folder")
    one_line_error(run("data", "synth", tmp_path / "v", "--n", "4", "--n-val", "2"), "val needs 0")
    assert (mine / "notes.txt").read_text() == "keep" and f.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]


def test_train_into_a_file_fails_before_any_work(data_copy: Path, tmp_path: Path) -> None:
    f = tmp_path / "out"
    f.write_text("x")
    res = run(*_train_args(data_copy, f), "--workers", "0")
    one_line_error(res, "exists and is not a folder")
    assert "loading" not in res.output and f.read_text() == "x"


def test_train_refuses_another_runs_out(data_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert run(*_train_args(data_copy, out), "--workers", "0", "--no-attention-aug").exit_code == 0
    one_line_error(run(*_train_args(data_copy, out), "--workers", "0"), "holds another run's files")
    res = run(*_train_args(data_copy, out), "--workers", "0", "--no-attention-aug", "--overwrite")
    assert res.exit_code == 0, res.output


def test_eval_json_folder_fails_before_any_work(trained_ckpt: Path, tmp_path: Path) -> None:
    d = tmp_path / "results"
    d.mkdir()
    one_line_error(run("eval", trained_ckpt, "--json", d, "--workers", "0"), "is a folder; give a file name")
    assert list(tmp_path.iterdir()) == [d] and list(d.iterdir()) == []
    one_line_error(run("eval", tmp_path, "--workers", "0"), "is a folder; give a checkpoint file")


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--epochs", "0"], "epochs must be >= 1"), (["--workers", "-1"], "workers must be >= 0")],
)
def test_demo_checks_options_before_generating(tmp_path: Path, args: list[str], needle: str) -> None:
    one_line_error(run("demo", "--out", tmp_path / "d", "--n", "8", *args), needle)
    assert not (tmp_path / "d").exists()


def test_demo_into_a_file_fails_before_generating(tmp_path: Path) -> None:
    f = tmp_path / "d"
    f.write_text("x")
    one_line_error(run("demo", "--out", f, "--n", "8", "--epochs", "1", "--workers", "0"), "is not a folder")
    assert f.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_resume_hint_is_shell_quoted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import omsf2.train as train_pkg
    from omsf2.train.loop import TrainResult

    out = tmp_path / "my runs" / "a"

    def interrupted(cfg: object, out_dir: Path, rep: object, overwrite: bool) -> TrainResult:
        return TrainResult(Path(out_dir), 0, {}, [], True, False, 0.0)

    monkeypatch.setattr(train_pkg, "train", interrupted)
    res = run("train", "--data", "synthetic", "--out", out)
    assert res.exit_code == 130
    hint = re.search(r"--resume (.+)$", res.output.strip()).group(1)  # type: ignore[union-attr]
    assert hint == f"'{out / 'last.pt'}'"


def test_library_errors_name_settings_and_the_cli_maps_them_to_flags(data_copy: Path, tmp_path: Path) -> None:
    from omsf2.config import SettingError
    from omsf2.data.datasets import DataSpec
    from omsf2.train import TrainConfig

    with pytest.raises(SettingError, match=r"^epochs must be >= 1, got -3$") as e:
        TrainConfig(data=DataSpec(source="synthetic"), epochs=-3)
    assert e.value.setting == "epochs"
    line = one_line_error(run(*_train_args(data_copy, tmp_path / "r")[:6], "-3"))
    assert line.endswith("epochs must be >= 1, got -3 (--epochs)")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    line = one_line_error(run("data", "synth", tmp_path / "full", "--n", "4", "--size", "64"))
    assert line.endswith("is not empty; choose another folder or overwrite it (--overwrite)")
    line = one_line_error(run("data", "synth", tmp_path / "v", "--n", "4", "--n-val", "2"))
    assert line.endswith("(--n-val)")
