"""bench/gpu_check.sh: its CPU dry run passes end to end, and its GPU plan fits the lent machine's 8 minutes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def _run(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(out.parent / "home")}
    return subprocess.run(["bash", str(SCRIPT), *args, "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_dry_run_runs_every_step_and_writes_one_record(tmp_path: Path, bench_script) -> None:
    out = tmp_path / "out"
    proc = _run("--dry-run", out=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [record] = out.glob("gpu-check-*.json")
    rec = json.loads(record.read_text())
    assert rec["mode"].startswith("dry-run") and rec["passed"] and rec["written_by"]["script"] == "bench/gpu_check.sh"
    names = [s["name"] for s in rec["steps"]]
    assert names == ["needs_cuda_tests", "kernels_check", "kernel_bench", "bench_torch_cuda", "train_check"]
    assert all(s["status"] == "ok" and s["wall_s"] <= s["budget_s"] for s in rec["steps"]), rec["steps"]
    measured = {s["name"]: s["measured"] for s in rec["steps"]}
    assert measured["needs_cuda_tests"]["collected"] > 0  # the selection finds the needs_cuda tests
    assert measured["kernel_bench"]["rows"] and measured["bench_torch_cuda"]["rows"][0]["status"] == "ok"
    assert measured["train_check"]["passed"] and measured["train_check"]["loss_cpu"]
    assert {p.name for p in out.iterdir()} == {record.name, "gpu-check.log"}  # what comes back from $OUT
    md = bench_script("gpu_check.py").render(rec)
    assert "| train_check | 40 |" in md and "`bash bench/gpu_check.sh --dry-run`" in md


def test_the_gpu_plan_fits_eight_minutes_with_every_step_budgeted(bench_script) -> None:
    gpu_check = bench_script("gpu_check.py")
    steps = {s.name: s for s in gpu_check.STEPS}
    assert gpu_check.TOTAL_BUDGET_S == gpu_check.SETUP_BUDGET_S + sum(s.budget_s for s in steps.values()) <= 480
    gpu = {name: " ".join(s.gpu) for name, s in steps.items()}
    assert "-m needs_cuda" in gpu["needs_cuda_tests"]
    assert "kernels check --device cuda" in gpu["kernels_check"]
    assert "kernel_bench.py --device cuda" in gpu["kernel_bench"]
    assert "--backends torch-cuda,torch-compile-cuda --batch 1,32 --img-size 448" in gpu["bench_torch_cuda"]
    assert "gpu_train_check.py --device cuda" in gpu["train_check"]


def test_gpu_mode_without_a_gpu_is_one_clear_error(tmp_path: Path) -> None:
    proc = _run(out=tmp_path / "out")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: torch sees no CUDA device")
