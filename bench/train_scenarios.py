"""Training scenarios: run the exact CLI commands, time them, record metrics per machine.

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/train_scenarios.py demo cxr-real

Each scenario runs its commands in a subprocess (what a user types), measures wall time, and
writes ``bench/results/train-<scenario>-<machine>.json`` with the commands, timings, the
machine description and the metrics the commands wrote. ``bench/results/README.md`` summarises.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, machine, summarize, written_by

REPO = Path(__file__).resolve().parents[1]
OMSF2 = str(Path(sys.executable).with_name("omsf2"))
CXR = REPO.parent / "shared" / "data" / "cxr-real"


SCENARIOS: dict[str, dict] = {
    "demo": {
        "about": (
            "README first command's job: 2,400 phantoms, omsf2_tiny 6 epochs, eval val + test, export with the INT8 "
            "gate (searched on half the test split's patients, gated on the other half), the short bench; into "
            "runs/demo, the folder the README's predict command and bench/bench_scenarios.py demo read"
        ),
        "commands": [[OMSF2, "demo"]],
        "metrics": {"summary": "runs/demo/summary.json"},
    },
    "cxr-real": {
        "about": "omsf2_tiny on ../shared/data/cxr-real (600 train / 150 val, 3 classes), eval on val",
        "commands": [
            [OMSF2, "train", "--data", str(CXR), "--model", "omsf2_tiny", "--epochs", "30", "--out", "runs/bench-cxr"],
            [OMSF2, "eval", "runs/bench-cxr/best.pt", "--split", "val", "--json", "runs/bench-cxr/eval-val.json"],
            # best.pt was selected on val, so its val figure is optimistic; last.pt involved no selection.
            [OMSF2, "eval", "runs/bench-cxr/last.pt", "--split", "val", "--json", "runs/bench-cxr/eval-val-last.json"],
        ],
        "metrics": {
            "train": "runs/bench-cxr/metrics.json",
            "eval_val": "runs/bench-cxr/eval-val.json",
            "eval_val_last": "runs/bench-cxr/eval-val-last.json",
        },
    },
    "cxr-export": {
        "about": "omsf2 export --int8 of the cxr-real scenario's best.pt: calibrated on its train split, gated on val",
        "commands": [
            [
                OMSF2,
                "export",
                "runs/bench-cxr/best.pt",
                "--int8",
                "--calib-data",
                str(CXR / "train"),
                "--eval-data",
                str(CXR / "val"),
                "--out",
                "runs/bench-cxr-export",
            ],
        ],
        "metrics": {"export": "runs/bench-cxr-export/report.json"},
    },
}


def run(name: str) -> Path:
    """Run scenario ``name`` and write its result JSON; returns the path."""
    sc = SCENARIOS[name]
    slug, desc = machine()
    steps: list[dict[str, Any]] = []
    for cmd in sc["commands"]:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True)
        wall = time.perf_counter() - t0
        shown = " ".join(shlex.quote(c if c != OMSF2 else "omsf2") for c in cmd)
        steps.append({"command": shown, "wall_s": round(wall, 1), "exit_code": proc.returncode})
        print(f"{shown}: exit {proc.returncode}, {wall:.0f}s", flush=True)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            raise SystemExit(f"scenario {name} failed")
    metrics = {k: json.loads((REPO / v).read_text()) for k, v in sc["metrics"].items()}
    for m in metrics.values():
        m.pop("config", None)
    out = RESULTS / f"train-{name}-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "scenario": name,
        "written_by": written_by(__file__, [name]),
        "about": sc["about"],
        "machine": desc,
        "date": time.strftime("%Y-%m-%d"),
        "steps": steps,
        "total_wall_s": round(sum(s["wall_s"] for s in steps), 1),
        "metrics": metrics,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def main() -> None:
    """Run the scenarios named on the command line, then refresh the summary page."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # No argparse choices: with nargs="*" they reject the empty list (summary only) on Python 3.11.
    ap.add_argument("scenarios", nargs="*", help=f"any of {', '.join(sorted(SCENARIOS))}; none = summary only")
    names = ap.parse_args().scenarios
    bad = sorted(set(names) - set(SCENARIOS))
    if bad:
        ap.error(f"unknown scenario(s) {bad}; choose from {sorted(SCENARIOS)}")
    for name in names:
        run(name)
    print(f"wrote {summarize()}")


if __name__ == "__main__":
    main()
