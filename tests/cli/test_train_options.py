"""``omsf2 train``'s options for weight averaging, the selection set and cross-validation."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.models.checkpoint import load_checkpoint

runner = CliRunner()
SMALL = ("--img-size", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--device", "cpu")


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(res, needle: str) -> None:
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert needle in lines[0], res.output


def test_select_fraction_and_no_ema_from_the_command_line(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run("train", "--data", synth_root, "--out", out, *SMALL, "--select-fraction", "0.25", "--no-ema")
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["selected_on"] == "select" and m["ema"]["enabled"] is False and m["config"]["select_fraction"] == 0.25
    assert "raw_model" not in load_checkpoint(out / "last.pt")


def test_ema_is_on_by_default_with_the_decay_tied_to_the_schedule(synth_root: Path, tmp_path: Path) -> None:
    from omsf2.train.ema import schedule_decay

    out = tmp_path / "run"
    assert run("train", "--data", synth_root, "--out", out, *SMALL).exit_code == 0
    ck, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert ck["train_config"]["ema_decay"] is None  # the CLI leaves the config's default: tied to the run
    steps = last["ema"]["updates"]  # every step of the finished run
    assert ck["selection"]["ema"] == {"enabled": True, "decay": schedule_decay(steps)}


def test_bad_selection_and_decay_are_one_line_errors(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _one_line_error(run("train", "--data", synth_root, "--out", out, "--select-fraction", "0.9"), "selection fraction")
    _one_line_error(run("train", "--data", synth_root, "--out", out, "--ema-decay", "1.5"), "EMA decay")
    assert not out.exists()  # refused before any work


def test_folds_from_the_command_line_and_what_they_refuse(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    res = run("train", "--data", synth_root, "--out", out, *SMALL, "--folds", "2")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "cv.json").read_text())["folds"] == 2
    _one_line_error(run("train", "--data", synth_root, "--out", out, "--folds", "2", "--nproc", "2"), "--nproc")
    _one_line_error(
        run("train", "--data", synth_root, "--out", out, "--folds", "2", "--select-fraction", "0.2"),
        "selection fraction",
    )
    _one_line_error(run("train", "--resume", out / "fold-0" / "last.pt", "--folds", "2"), "--folds")
    _one_line_error(run("train", "--data", synth_root, "--out", tmp_path / "x", "--folds", "1"), "folds")
