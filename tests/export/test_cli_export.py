"""``omsf2 export`` bad input: one line, exit 1, no traceback, nothing left in OUT."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(res, *needles: str) -> None:
    out = res.output
    assert res.exit_code == 1, out
    assert "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for n in needles:
        assert n in lines[0], out


def _int8_args(ckpt: Path, calib: Path, ev: Path, out: Path) -> list[object]:
    return ["export", ckpt, "--out", out, "--int8", "--calib-data", calib, "--eval-data", ev]


def test_missing_and_foreign_checkpoint(tmp_path) -> None:
    out = tmp_path / "out"
    assert_one_line_error(run("export", tmp_path / "nope.pt", "--out", out), "does not exist")
    foreign = tmp_path / "foreign.pt"
    foreign.write_text("not a checkpoint")
    assert_one_line_error(run("export", foreign, "--out", out), "not a valid omsf2/torch checkpoint")
    assert not out.exists()


def test_empty_small_and_wrong_kind_calibration(tiny_ckpt, phantoms64, tmp_path) -> None:
    out = tmp_path / "out"
    ev = phantoms64 / "val"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run(*_int8_args(tiny_ckpt, empty, ev, out)), "holds 0 image(s)", "at least 64")
    small = tmp_path / "small" / "normal"
    small.mkdir(parents=True)
    for p in sorted((phantoms64 / "train" / "normal").glob("*.png"))[:8]:
        shutil.copy(p, small / p.name)
    assert_one_line_error(run(*_int8_args(tiny_ckpt, small.parent, ev, out)), "holds 8 image(s)")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for i in range(64):
        (wrong / f"{i}.png").write_text("this is text, not a PNG")
    assert_one_line_error(run(*_int8_args(tiny_ckpt, wrong, ev, out)), "calibration image", "cannot read")
    assert not out.exists()


def test_output_path_that_cannot_be_written(tiny_ckpt, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run("export", tiny_ckpt, "--out", blocker / "sub"), "cannot write")
    assert_one_line_error(run("export", tiny_ckpt, "--out", blocker), "not a folder")
    assert blocker.read_text() == "x"


def test_engine_without_gpu_fails_early_with_how_to(tiny_ckpt, tmp_path, monkeypatch) -> None:
    import omsf2.export.targets as targets

    monkeypatch.setattr(targets, "_engine_unavailable", lambda: "no CUDA GPU")
    out = tmp_path / "out"
    args = ["--format", "engine", "--int8", "--calib-data", tmp_path, "--eval-data", tmp_path]
    res = run("export", tiny_ckpt, "--out", out, *args)
    assert_one_line_error(res, "no CUDA GPU", "--format onnx --int8", "trtexec --onnx=model.int8.onnx --stronglyTyped")
    assert not out.exists()


def test_gate_failure_leaves_nothing(tiny_ckpt, phantoms64, tmp_path, monkeypatch) -> None:
    import omsf2.export.gate as gate

    real = gate.judge

    def strict(labels, fp32_logits, logits, spec):  # a real verdict, then a flip counted against it
        rec = real(labels, fp32_logits, logits, spec)
        return {**rec, "passed": False, "failed_because": ["top-1 agreement forced to fail"]}

    monkeypatch.setattr(gate, "judge", strict)
    out = tmp_path / "out"
    res = run(*_int8_args(tiny_ckpt, phantoms64 / "train", phantoms64 / "val", out), "--calib-count", 64,
              "--no-mixed-precision")  # fmt: skip
    assert res.exit_code == 1 and "INT8 accuracy gate failed" in res.output and "percentile" in res.output
    assert "--mixed-precision" in res.output and "Traceback" not in res.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-drop", "-1"], "--max-drop must be a number of accuracy points in [0, 100], got -1"),
        (["--min-agreement", "1.5"], "--min-agreement must be a fraction in [0, 1]"),
        (["--via", "torch-tensorrt"], "--via torch-tensorrt builds TensorRT engines; add --format engine"),
        (["--sensitivity"], "--sensitivity ranks the layers INT8 hurts; add --int8"),
        (
            [
                "--sensitivity",
                "--int8",
                "--calib-data",
                ".",
                "--eval-data",
                ".",
                "--quantizer",
                "modelopt",
                "--calib-method",
                "max",
            ],
            "--sensitivity (like the mixed-precision search) needs onnxruntime's quantizer",
        ),
        (
            ["--int8", "--calib-data", ".", "--eval-data", ".", "--quantizer", "nncf", "--format", "all"],
            "--quantizer nncf writes the CPU flavour only",
        ),
    ],
)
def test_options_refused_before_any_work(tiny_ckpt, tmp_path, args, needle) -> None:
    out = tmp_path / "o"
    assert_one_line_error(run("export", tiny_ckpt, "--out", out, *args), needle)
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value", "needle"), [("--calib-method", "minmax", "minmax"), ("--batch", "4,2,1", "")]
)
def test_bad_choices(tiny_ckpt, tmp_path, flag, value, needle) -> None:
    res = run("export", tiny_ckpt, "--out", tmp_path / "o", flag, value)
    assert res.exit_code != 0 and needle in res.output
    assert not (tmp_path / "o").exists()
