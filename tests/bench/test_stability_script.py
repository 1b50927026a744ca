"""bench/stability.py on phantoms: trains through the CLI, records curves, and continues from its record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "stability.py"


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], text=True, capture_output=True, timeout=900)


@pytest.mark.slow
def test_phantom_stability_records_curves_and_continues_from_the_record(tmp_path: Path) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ("--phantoms", "8", "--seeds", "0,1", "--epochs", "2", "--tag", "t", "--results", results)
    res = _run(*args, "--runs", runs, "--", "--batch-size", "4")
    assert res.returncode == 0, res.stdout + res.stderr
    (out,) = results.glob("stability-t-*.json")
    rec = json.loads(out.read_text())
    assert rec["pinned"] == {"model": "omsf2_tiny", "epochs": 2, "data": "8 phantoms", "extra": ["--batch-size", "4"],
                             "threads": 1}  # fmt: skip
    assert set(rec["seeds"]) == {"0", "1"} and rec["bounds"] == {"std_at_most": 3.0, "dip_at_most": 10.0}
    assert (
        rec["written_by"]["script"] == "bench/stability.py"
        and "--phantoms 8 --seeds 0,1" in rec["written_by"]["command"]
    )
    s0 = rec["seeds"]["0"]
    assert len(s0["curve_macro_f1"]) == 2 and set(s0["curve_recall"]) == {"normal", "stage_I", "stage_II", "stage_III"}
    m = json.loads((runs / "stability-t" / "seed-1" / "metrics.json").read_text())
    assert m["torch_threads"] == 1 and m["config"]["data"]["synthetic_n"] == 8 and m["config"]["seed"] == 1
    md = out.with_suffix(".md").read_text()
    assert "8 synthetic phantoms" in md and "final recall normal" in md and out.with_suffix(".png").is_file()
    assert not (Path(__file__).resolve().parents[2] / "bench" / "results" / out.name).exists()

    # The runs folder is gone: the record keeps both seeds, nothing trains.
    again = _run(*args, "--runs", tmp_path / "elsewhere", "--", "--batch-size", "4")
    assert again.returncode == 0 and "+ omsf2 train" not in again.stdout, again.stdout + again.stderr
    assert json.loads(out.read_text())["seeds"] == rec["seeds"]
    # ... under the same settings only: another extra option trains again.
    other = _run(*args, "--seeds", "0", "--runs", tmp_path / "other", "--", "--batch-size", "2")
    assert other.returncode == 0 and other.stdout.count("+ omsf2 train") == 1, other.stdout + other.stderr
