"""The end-to-end demo at toy size: phantoms -> train -> eval, data reused on a second run."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.demo import DemoSpec, run_demo


def test_run_demo_and_reuse(tmp_path: Path) -> None:
    spec = DemoSpec(out=str(tmp_path / "d"), n=8, size=64, epochs=1, batch_size=4, img_size=64, workers=0)
    stages: list[str] = []
    res = run_demo(spec, on_stage=stages.append)
    assert res.val["n"] == 4 and res.test["n"] == 4
    assert (res.run_dir / "best.pt").is_file() and (res.run_dir / "eval-test.json").is_file()
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["test"]["accuracy"] == res.test["accuracy"] and summary["timings"]["total_s"] > 0
    assert stages[0].startswith("writing")
    stamp = (res.data_dir / "synth.json").stat().st_mtime_ns
    stages.clear()
    again = run_demo(spec, on_stage=stages.append)
    assert stages[0].startswith("reusing") and (res.data_dir / "synth.json").stat().st_mtime_ns == stamp
    assert again.test == res.test  # same seed, same data: same result


def test_demo_command(tmp_path: Path) -> None:
    args = ["demo", "--out", str(tmp_path / "d"), "--n", "32", "--epochs", "1", "--workers", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "test split (held out)" in res.output and "recall[stage_III]" in res.output
