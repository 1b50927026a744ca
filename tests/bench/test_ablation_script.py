"""bench/ablation.py --quick: trains through the CLI, writes json/md/png, and a re-run continues instead of redoing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "ablation.py"


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    env_args = [sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(env_args, text=True, capture_output=True, timeout=600)


@pytest.mark.slow
def test_quick_ablation_records_cells_and_resumes(tmp_path: Path) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    res = _run("--quick", "--threads", "1", "--jobs", "2", "--runs", runs, "--results", results)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(": exit 0") == 2  # two variants, one seed each
    (out,) = results.glob("ablation-quick-*.json")
    rec = json.loads(out.read_text())
    cells = rec["cells"]["phantoms"]
    assert list(cells) == ["plain", "full"] and all(c["complete"] and c["runs_done"] == 1 for c in cells.values())
    assert cells["plain"]["params"] < cells["full"]["params"]
    for c in cells.values():
        assert set(c["final"]["macro_f1"]) == {"mean", "std", "n", "values"} and c["final"]["macro_f1"]["n"] == 1
        assert any(k.startswith("recall[") for k in c["final"]) and c["train_s"]["mean"] > 0
    metrics = json.loads((runs / "phantoms" / "full" / "seed-0" / "metrics.json").read_text())
    assert metrics["torch_threads"] == 1 and metrics["config"]["model"] == "omsf2_tiny"
    assert all(c["late"]["worst_dip_after_first_third"]["values"] == [0.0] for c in cells.values())  # one epoch
    assert rec["paired"]["phantoms"]["macro_f1"]["plain"]["n"] == 1  # full minus plain, seed 0
    md = out.with_suffix(".md").read_text()
    assert "| plain | 1/1 |" in md and "Paired by seed, `full` minus the variant, final val macro-F1" in md
    assert out.with_suffix(".png").stat().st_size > 1000

    # Same command again: nothing is re-trained, the record is the same.
    again = _run("--quick", "--threads", "1", "--runs", runs, "--results", results)
    assert again.returncode == 0 and ": exit" not in again.stdout, again.stdout
    assert json.loads(out.read_text())["cells"] == rec["cells"]

    # A run that stopped before its last epoch was recorded continues from its last.pt.
    m = runs / "phantoms" / "plain" / "seed-0" / "metrics.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "history": []}))
    third = _run("--quick", "--threads", "1", "--runs", runs, "--results", results)
    assert third.returncode == 0 and third.stdout.count("--resume") == 1, third.stdout + third.stderr
    assert json.loads(out.read_text())["cells"]["phantoms"]["plain"]["complete"]

    # The runs folder is gone (another machine): the record carries the finished runs, nothing re-trains.
    rec = json.loads(out.read_text())
    assert set(rec["runs"]["phantoms"]["full"]) == {"0"} and rec["pinned"]["epochs"] == 1
    fresh = _run("--quick", "--threads", "1", "--runs", tmp_path / "elsewhere", "--results", results)
    assert fresh.returncode == 0 and ": exit" not in fresh.stdout, fresh.stdout + fresh.stderr
    assert fresh.stdout.count("kept from the record") == 2
    assert json.loads(out.read_text())["cells"] == rec["cells"]
    # ... but only under the same pinned settings: another selection set makes other runs.
    other = _run("--quick", "--select-fraction", "0.2", "--record-only", "--runs", tmp_path / "other",
                 "--results", results)  # fmt: skip
    assert other.returncode == 0 and "kept from the record" not in other.stdout, other.stdout + other.stderr
    assert json.loads(out.read_text())["cells"]["phantoms"]["full"]["runs_done"] == 0


def test_unknown_variant_is_one_clear_error(tmp_path: Path) -> None:
    res = _run("--variants", "full,nope", "--runs", tmp_path / "r", "--results", tmp_path / "o")
    assert res.returncode != 0 and "unknown variant(s) ['nope']" in res.stderr
    assert not (tmp_path / "o").exists()


def test_a_runs_folder_keeps_its_protocol(tmp_path: Path) -> None:
    runs = tmp_path / "r"
    runs.mkdir()
    (runs / "protocol.json").write_text(json.dumps({"epochs": 30}))
    res = _run("--datasets", "phantoms", "--epochs", "5", "--runs", runs, "--results", tmp_path / "o")
    assert res.returncode != 0 and "holds runs made with other settings" in res.stderr and "epochs" in res.stderr


def test_record_only_trains_nothing(tmp_path: Path) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    res = _run("--quick", "--record-only", "--runs", runs, "--results", results)
    assert res.returncode == 0 and ": exit" not in res.stdout, res.stdout + res.stderr
    (out,) = results.glob("ablation-quick-*.json")
    cells = json.loads(out.read_text())["cells"]["phantoms"]
    assert all(c["runs_done"] == 0 and not c["complete"] for c in cells.values())
    assert not (runs / "phantoms").exists()


def test_paired_differences_and_their_t_test(bench_script: Callable[[str], ModuleType]) -> None:
    mod = bench_script("ablation.py")

    def run(f1: float) -> dict[str, object]:
        return {"final": [{"macro_f1": f1}], "late": [{"last_third_mean": 100 * f1 - 1}]}

    by_variant = {
        "full": {0: run(0.80), 1: run(0.70), 2: run(0.75)},
        "plain": {0: run(0.70), 1: run(0.66), 2: run(0.71)},  # full better by 10, 4, 4 points
        "no_bap": {0: run(0.80), 2: run(0.70)},  # seed 1 missing: paired on seeds 0 and 2 only
        "no_neck": {1: run(0.65)},  # one pair: no test
    }
    paired = mod._paired(by_variant, "final", "macro_f1")
    assert list(paired) == ["plain", "no_bap", "no_neck"]
    p = paired["plain"]
    assert p["n"] == 3 and p["reference_better"] == 3 and p["values"] == pytest.approx([10.0, 4.0, 4.0])  # points
    assert p["mean"] == pytest.approx(6.0) and p["std"] == pytest.approx(3.4641, rel=1e-4)
    # t = 6 / (3.4641 / sqrt 3) = 3.0 with 2 degrees of freedom: two-sided p = 0.0955, CI 6 ± 4.303 * 2.
    assert p["p"] == pytest.approx(0.0955, abs=5e-4)
    assert p["ci95"] == pytest.approx([6 - 4.3027 * 2, 6 + 4.3027 * 2], abs=1e-3)
    assert paired["no_bap"]["values"] == pytest.approx([0.0, 5.0]) and paired["no_bap"]["reference_better"] == 1
    late = mod._paired(by_variant, "late", "last_third_mean")  # already in points: not scaled again
    assert late["plain"]["values"] == pytest.approx([10.0, 4.0, 4.0])
    assert "no_neck" not in mod._paired(
        {**by_variant, "no_neck": {1: {"final": [{"macro_f1": 0.6}]}}}, "late", "last_third_mean"
    )
    assert paired["no_neck"]["n"] == 1 and paired["no_neck"]["p"] is None and paired["no_neck"]["ci95"] is None
    table = "\n".join(mod._paired_markdown({"macro_f1": paired}))
    assert "| plain | 3 | +10.0 / +4.0 / +4.0 | +6.0 ± 3.5 | [-2.6, +14.6] | 0.095 | 3 of 3 |" in table
    assert "| no_neck | 1 | +5.0 | +5.0 | — | — | 1 of 1 |" in table
