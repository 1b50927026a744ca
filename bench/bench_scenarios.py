"""Inference scenarios: run ``omsf2 bench`` as a user types it and record the results per machine.

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/bench_scenarios.py demo r18-448 r18-224
    .venv/bin/python bench/bench_scenarios.py h100          # on a GPU machine (see GPU_SCENARIOS)

``demo`` benches the README demo's export (``runs/demo/export``, trained weights) on its test
split. Every CPU scenario runs with ``--check-core``: each runtime row is timed again as
``Predictor.from_bundle(...).run_batch`` opened on its own, in the same rounds, so the record shows
that the bench times what ships. ``r18-<size>`` benches ``omsf2_r18`` with RANDOM weights (latency does not
depend on the weights; accuracy columns are then meaningless and the INT8 gate is opened with --max-drop 100,
said in the record), exported at <size> px with INT8 calibrated on the demo's train phantoms.
Each scenario writes ``bench/results/bench-<scenario>-<machine>.json|md|png`` (the bench's own
results.json plus the commands that produced it) and regenerates ``bench/results/README.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, summarize, written_by

from omsf2.export.gate import DEFAULT_MAX_DROP

REPO = Path(__file__).resolve().parents[1]
OMSF2 = str(Path(sys.executable).with_name("omsf2"))
DEMO = REPO / "runs" / "demo"
CPU_BACKENDS = "torch,torch-compile,ort,ort-int8,ort-int8-trt,openvino,openvino-int8,openvino-bf16"


def _random_checkpoint(model: str, size: int, path: Path) -> list[str]:
    """Save ``model`` with random weights (seed 0) at ``size`` px; returns the command that stands for it."""
    import torch

    from omsf2 import create_model
    from omsf2.config import PreprocessSpec
    from omsf2.data.synthetic import STAGES
    from omsf2.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    m = create_model(model, img_size=size, num_classes=len(STAGES)).eval()
    payload = {"model_config": m.cfg.to_dict(), "classes": list(STAGES), "task": "multiclass",
               "preprocess": PreprocessSpec(size=(size, size)).to_dict(), "model": m.state_dict()}  # fmt: skip
    save_checkpoint(path, payload)
    return ["python", "-c", f"<save {model} random weights, seed 0, {size} px, {len(STAGES)} classes to {path.name}>"]


def _eval_subset(src: Path, dest: Path, per_class: int) -> Path:
    """The first ``per_class`` images of each class of ``src``, linked into ``dest`` (a small gate set)."""
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dest / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir())[:per_class]:
            link = dest / cls.name / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return dest


def _r18(size: int) -> tuple[list[list[str]], Path, str]:
    work = REPO / "runs" / f"bench-r18-{size}"
    gate = _eval_subset(DEMO / "data" / "test", REPO / "runs" / "bench-eval32", 8)
    ckpt, export = work / "r18.pt", work / "export"
    pre = [_random_checkpoint("omsf2_r18", size, ckpt)] if not ckpt.is_file() else []
    cmds: list[list[str]] = []
    if not (export / "report.json").is_file():
        cmds.append([OMSF2, "export", str(ckpt), "--out", str(export), "--int8", "--calib-data",
                     str(DEMO / "data" / "train"), "--eval-data", str(gate),
                     "--calib-count", "64", "--max-drop", "100"])  # fmt: skip
    cmds.append([OMSF2, "bench", str(export), "--backends", CPU_BACKENDS, "--batch", "1", "--warmup-s", "3",
                 "--duration-s", "20", "--rounds", "20", "--check-core", "--out", str(work / "bench")])  # fmt: skip
    about = (f"omsf2_r18 at {size} px, batch 1, RANDOM weights (latency only; accuracy columns are not "
             "meaningful, INT8 gate opened with --max-drop 100 on 32 test phantoms), INT8 calibrated on 64 demo "
             "phantoms")  # fmt: skip
    return pre + cmds, work / "bench", about


def _demo() -> tuple[list[list[str]], Path, str]:
    out = REPO / "runs" / "bench-demo"
    cmd = [OMSF2, "bench", str(DEMO / "export"), "--eval-data", str(DEMO / "data" / "test"), "--batch", "1,8",
           "--warmup-s", "2", "--duration-s", "8", "--rounds", "10", "--check-core", "--out", str(out)]  # fmt: skip
    about = ("the README demo's export (omsf2_tiny, 224 px, trained 6 epochs), accuracy on its 400-image test split; "
             f"the recommendation allows the export gate's {DEFAULT_MAX_DROP:g} point of accuracy loss vs PyTorch "
             "FP32")  # fmt: skip
    return [cmd], out, about


# Ready for a GPU machine: the same bench on the GPU backends (nvpmodel / jetson_clocks first on a Jetson).
GPU_SCENARIOS = {
    "h100": [OMSF2, "bench", str(DEMO / "export"), "--backends", "torch,ort,ort-cuda,ort-trt,tensorrt",
             "--batch", "1,8,32", "--out", str(REPO / "runs" / "bench-gpu")],
    "orin": ["sh", "-c", f"sudo nvpmodel -m 0 && sudo jetson_clocks && {OMSF2} bench {DEMO / 'export'} "
             f"--backends torch,ort-cuda,ort-trt,tensorrt --batch 1,8 --out {REPO / 'runs' / 'bench-orin'}"],
}  # fmt: skip


def run(name: str) -> Path:
    """Run scenario ``name`` and record it; returns the JSON written."""
    if name in GPU_SCENARIOS:
        cmds, out, about = [GPU_SCENARIOS[name]], REPO / "runs" / f"bench-{name}", f"GPU scenario {name}"
    elif name == "demo":
        cmds, out, about = _demo()
    elif name.startswith("r18-") and name[4:].isdigit():
        cmds, out, about = _r18(int(name[4:]))
    else:
        raise SystemExit(f"unknown scenario {name!r}: demo, r18-<size>, {', '.join(GPU_SCENARIOS)}")
    steps = []
    for cmd in cmds:
        t0 = time.perf_counter()
        if cmd[0] != "python":
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=REPO)
        shown = " ".join(str(Path(c).relative_to(REPO)) if c.startswith(str(REPO)) else c for c in cmd)
        steps.append({"command": shown.replace(OMSF2, "omsf2"), "wall_s": round(time.perf_counter() - t0, 1)})
    result = json.loads((out / "results.json").read_text())
    slug = _slug(result["fingerprint"])
    record = {"scenario": name, "about": about, "written_by": written_by(__file__, [name]), "steps": steps, **result}
    dest = RESULTS / f"bench-{name}-{slug}"
    dest.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    md = (out / "results.md").read_text()
    dest.with_suffix(".md").write_text(f"# {name}: {about}\n\nCommands: " + "; ".join(
        f"`{s['command']}` ({s['wall_s']:.0f} s)" for s in steps) + "\n\n" + md)  # fmt: skip
    if (out / "latency.png").is_file():
        shutil.copyfile(out / "latency.png", dest.with_suffix(".png"))
    print(f"wrote {dest}.json|md|png and {summarize()}")
    return dest.with_suffix(".json")


def _slug(fp: dict) -> str:
    from omsf2.bench.machine import machine_slug

    return machine_slug(fp)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="+")
    for s in ap.parse_args().scenarios:
        run(s)
