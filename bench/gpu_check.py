"""The GPU check in one call: every GPU path of omsf2, each step within a stated time budget, one JSON record.

Run through ``bench/gpu_check.sh`` (which picks the Python and puts the checkout on ``PYTHONPATH``):

    bench/gpu_check.sh [--out DIR]      # on the lent GPU machine: writes DIR/gpu-check.json (DIR: $OUT)
    bench/gpu_check.sh --dry-run        # anywhere: the same steps as CPU stand-ins, in about a minute
    python bench/gpu_check.py --render bench/results/gpu-check-<machine>.json   # its .md beside it

Written for the machine the device tool lends (an H100 or H200 with torch, Triton, nvcc and CuPy, no
TensorRT, no onnxruntime-gpu, no network, 15 minutes of device time in all): the steps of
:data:`STEPS` run one after another, each under a hard timeout equal to its budget, so the whole run
is bounded by the budgets' sum (:data:`TOTAL_BUDGET_S`, under 8 minutes); a step that overruns is
killed and recorded as ``timeout``, and the next one still runs. Nothing needs the network or an
installed omsf2 (``python -m omsf2`` from the checkout); missing optional packages are listed, not fatal.

The record holds, per step, the command, budget, wall time, exit code, status and what it measured
(test counts, kernel rows with GB/s and % of peak bandwidth and the fused-vs-reference ratio, the
PyTorch CUDA rows of ``omsf2 bench`` at 448 px, batch 1 and 32, and the CUDA-vs-CPU training check),
plus the last lines of every step's output in ``gpu-check.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
#: Python modules whose presence the record lists (the machine's image decides; none is required).
PROBED = ("torch", "triton", "cupy", "onnx", "onnxruntime", "onnxscript", "onnxslim", "pydicom", "tensorrt",
          "openvino", "cuda")  # fmt: skip
NEEDS_CUDA_TESTS = ("tests/kernels", "tests/train/test_loop.py", "tests/bench/test_gpu_runners.py")


class Step(NamedTuple):
    """One step: its command on the GPU, its CPU stand-in for ``--dry-run``, and its budget.

    ``{py}``, ``{work}`` and ``{ckpt}`` in a command are the Python, the scratch folder and the r18
    checkpoint (448 px on the GPU, 64 px in a dry run).
    """

    name: str
    budget_s: int
    gpu: tuple[str, ...]
    dry: tuple[str, ...]
    about: str


STEPS: tuple[Step, ...] = (
    Step("needs_cuda_tests", 130,
         ("{py}", "-m", "pytest", "-q", "-m", "needs_cuda", "-p", "no:cacheprovider", *NEEDS_CUDA_TESTS),
         ("{py}", "-m", "pytest", "-q", "--collect-only", "-m", "needs_cuda", "-p", "no:cacheprovider",
          *NEEDS_CUDA_TESTS),
         "the needs_cuda tests (CUDA and Triton kernels, training with AMP, the bench's GPU rows)"),
    Step("kernels_check", 50,
         ("{py}", "-m", "omsf2", "kernels", "check", "--device", "cuda"),
         ("{py}", "-m", "omsf2", "kernels", "check", "--device", "cpu", "--backend", "ref", "--no-timing"),
         "omsf2 kernels check --device cuda: every fused op on every backend against the reference"),
    Step("kernel_bench", 100,
         ("{py}", "bench/kernel_bench.py", "--device", "cuda", "--iters", "100", "--out", "{work}/kernels.json"),
         ("{py}", "bench/kernel_bench.py", "--device", "cpu", "--iters", "1", "--out", "{work}/kernels.json"),
         "the kernel micro-benchmark: GB/s, % of HBM bandwidth, fused kernels vs the unfused reference chain"),
    Step("bench_torch_cuda", 130,
         ("{py}", "-m", "omsf2", "bench", "{ckpt}", "--backends", "torch-cuda,torch-compile-cuda", "--batch", "1,32",
          "--img-size", "448", "--warmup-s", "2", "--iters", "30", "--rounds", "3", "--no-plot", "--out",
          "{work}/bench"),
         ("{py}", "-m", "omsf2", "bench", "{ckpt}", "--backends", "torch", "--batch", "1", "--img-size", "64",
          "--warmup-s", "0", "--iters", "2", "--rounds", "1", "--no-plot", "--out", "{work}/bench"),
         "omsf2 bench: PyTorch eager and torch.compile on CUDA, omsf2_r18 at 448 px, batch 1 and 32"),
    Step("train_check", 40,
         ("{py}", "bench/gpu_train_check.py", "--device", "cuda"),
         ("{py}", "bench/gpu_train_check.py", "--device", "cpu", "--img-size", "64", "--batch", "2", "--steps", "1"),
         "a few OMSF2 training steps on CUDA checked against the CPU on the same batch"),
)  # fmt: skip
SETUP_BUDGET_S = 20  # the environment probe and the r18 checkpoint, in this process
TOTAL_BUDGET_S = SETUP_BUDGET_S + sum(s.budget_s for s in STEPS)
LIMIT_S = 480  # what the issue allows on an H100


def probe() -> dict[str, Any]:
    """What this machine has: Python, torch and its GPU, nvcc, and which of :data:`PROBED` import."""
    import importlib.util
    import shutil

    env: dict[str, Any] = {"python": sys.version.split()[0], "missing": []}
    for mod in PROBED:
        if importlib.util.find_spec(mod) is None:
            env["missing"].append(mod)
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            env["gpu"] = {"name": p.name, "capability": list(torch.cuda.get_device_capability(0)),
                          "memory_gib": round(p.total_memory / 2**30, 1), "sms": p.multi_processor_count}  # fmt: skip
    except ImportError:
        env["cuda_available"] = False
    nvcc = shutil.which("nvcc")
    if nvcc:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=15).stdout
        env["nvcc"] = (re.findall(r"release ([\d.]+)", out) or ["?"])[0]
    return env


def make_checkpoint(path: Path, img_size: int) -> Path:
    """An untrained ``omsf2_r18`` at ``img_size`` (latency does not depend on the weights)."""
    import torch

    from omsf2 import create_model
    from omsf2.config import PreprocessSpec
    from omsf2.data.synthetic import STAGES
    from omsf2.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("omsf2_r18", img_size=img_size, num_classes=len(STAGES)).eval()
    pre = PreprocessSpec(size=(img_size, img_size)).to_dict()
    payload = {"model_config": model.cfg.to_dict(), "classes": list(STAGES), "task": "multiclass",
               "preprocess": pre, "model": model.state_dict()}  # fmt: skip
    return save_checkpoint(path, payload)


def _measured(step: str, output: str, work: Path) -> dict[str, Any]:
    """What a finished step measured, from its output or the files it wrote."""
    if step == "needs_cuda_tests":
        counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)}
        collected = re.findall(r"(\d+)(?:/\d+)? tests? collected", output)  # "161/333 tests collected"
        return {"counts": counts, **({"collected": int(collected[-1])} if collected else {})}
    if step == "kernel_bench" and (work / "kernels.json").is_file():
        rec = json.loads((work / "kernels.json").read_text())
        keys = ("op", "case", "backend", "dtype", "status", "median_ms", "gb_per_s", "peak_gb_per_s",
                "speedup_vs_ref", "max_abs_err")  # fmt: skip
        return {"rows": [{k: r.get(k) for k in keys} for r in rec["rows"]], "notes": rec.get("notes", [])}
    if step == "bench_torch_cuda" and (work / "bench" / "results.json").is_file():
        rec = json.loads((work / "bench" / "results.json").read_text())
        keys = ("backend", "batch", "img_size", "status", "p50_ms", "p90_ms", "p99_ms", "throughput_ips",
                "gpu_compute_ms", "noisy", "note", "reason")  # fmt: skip
        return {"rows": [{k: r.get(k) for k in keys} for r in rec["rows"]]}
    if step == "train_check":
        lines = [ln for ln in output.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    return {}


def run_step(step: Step, dry: bool, subs: dict[str, str], work: Path, log: list[str]) -> dict[str, Any]:
    """Run one step under its budget; its record."""
    cmd = [part.format(**subs) for part in (step.dry if dry else step.gpu)]
    shown = " ".join(c.replace(str(work), "$WORK").replace(PY, "python") for c in cmd)
    print(f"+ [{step.name}, budget {step.budget_s} s] {shown}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=step.budget_s)
        rc, output, status = proc.returncode, proc.stdout + proc.stderr, "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        rc, output, status = None, out.decode(errors="replace") if isinstance(out, bytes) else str(out), "timeout"
    wall = round(time.perf_counter() - t0, 1)
    print(f"  {status} in {wall} s", flush=True)
    log += [f"===== {step.name}: {shown} ({status}, {wall} s, exit {rc})", output[-6000:]]
    return {"name": step.name, "about": step.about, "command": shown, "budget_s": step.budget_s, "wall_s": wall,
            "exit_code": rc, "status": status, "measured": _measured(step.name, output, work)}  # fmt: skip


def run(out: Path, dry: bool) -> dict[str, Any]:
    """Every step, in order; returns the record (also written to ``out/gpu-check.json``)."""
    from common import machine

    if TOTAL_BUDGET_S > LIMIT_S:
        raise SystemExit(f"error: the steps' budgets add up to {TOTAL_BUDGET_S} s, over {LIMIT_S} s")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = probe()
    if not dry and not env.get("cuda_available"):
        raise SystemExit("error: torch sees no CUDA device here; run with --dry-run on a machine without one")
    with tempfile.TemporaryDirectory(prefix="omsf2-gpu-check-") as tmp:
        work = Path(tmp)
        ckpt = make_checkpoint(work / "r18.pt", 64 if dry else 448)
        setup_s = round(time.perf_counter() - t0, 1)
        subs = {"py": PY, "work": str(work), "ckpt": str(ckpt)}
        log: list[str] = []
        steps = [run_step(s, dry, subs, work, log) for s in STEPS]
    slug, desc = machine()
    rec = {
        "scenario": "gpu-check",
        "written_by": {"script": "bench/gpu_check.sh", "command": "bash bench/gpu_check.sh" + " --dry-run" * dry},
        "mode": "dry-run (CPU stand-ins)" if dry else "gpu",
        "machine": desc,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "environment": env,
        "budget_s": {"total": TOTAL_BUDGET_S, "limit": LIMIT_S, "setup": SETUP_BUDGET_S},
        "setup_s": setup_s,
        "wall_s": round(time.perf_counter() - t0, 1),
        "steps": steps,
        "passed": all(s["status"] == "ok" for s in steps),
    }
    name = f"gpu-check-{slug}.json"
    (out / name).write_text(json.dumps(rec, indent=2) + "\n")
    (out / "gpu-check.log").write_text("\n".join(log) + "\n")
    print(f"wrote {out / name} and {out / 'gpu-check.log'}: {'passed' if rec['passed'] else 'FAILED'}")
    return rec


def render(rec: dict[str, Any]) -> str:
    """The record as markdown (the .md beside a committed record)."""
    wb, budget = rec["written_by"], rec["budget_s"]
    lines = [f"# gpu-check ({rec['machine']})", "", f"Mode: {rec['mode']}; {rec['date']}; written by "
             f"`{wb['script']}` (`{wb['command']}`). Budgets add up to {budget['total']} s "
             f"(limit {budget['limit']} s); the run took {rec['wall_s']:.0f} s.", "",
             "| step | budget s | wall s | status | what |", "|---|---:|---:|---|---|"]  # fmt: skip
    lines += [f"| {s['name']} | {s['budget_s']} | {s['wall_s']:.0f} | {s['status']} | {s['about']} |"
              for s in rec["steps"]]  # fmt: skip
    for s in rec["steps"]:
        rows = s["measured"].get("rows") if isinstance(s["measured"], dict) else None
        if rows:
            cols = list(rows[0])
            lines += ["", f"## {s['name']}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line (``bench/gpu_check.sh`` passes its arguments through)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU stand-ins for every step (what CI runs)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "runs" / "gpu-check"))
    ap.add_argument("--render", type=Path, help="write the .md beside this gpu-check JSON record and exit")
    a = ap.parse_args()
    if a.render:
        a.render.with_suffix(".md").write_text(render(json.loads(a.render.read_text())))
        return
    rec = run(a.out, a.dry_run)
    sys.exit(0 if rec["passed"] else 1)


if __name__ == "__main__":
    main()
