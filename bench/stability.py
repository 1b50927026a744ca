"""Is training stable on small real data? The same recipe, several seeds, every epoch's val figures.

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/stability.py [--data ../shared/data/cxr-real] [--seeds 0,1,2] [--epochs 30]
                                        [--tag ema] [-- EXTRA omsf2 train OPTIONS]

Trains ``omsf2_tiny`` at 224 px with ``omsf2 train`` (the library's default recipe plus EXTRA options) once
per seed into ``runs/stability-<tag>/seed-<s>``; a seed whose ``metrics.json`` is complete is kept, so an
interrupted scenario resumes. Records in ``bench/results/stability-<tag>-<machine>.json|md|png``:

* the final epoch's val macro-F1 of every seed, their mean and (sample) standard deviation;
* per seed, the largest shortfall of any epoch after the first third of the schedule below that run's best
  val macro-F1 (the issue's bound: 10 points), and where it happened;
* the val macro-F1 curves of every seed (matplotlib).

The val split chooses nothing here (the figures are the per-epoch and final ones, not best.pt's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from common import RESULTS, curve_stability, machine, summarize

REPO = Path(__file__).resolve().parents[1]
OMSF2 = str(Path(sys.executable).with_name("omsf2"))
STD_BOUND, DIP_BOUND = 3.0, 10.0  # points of macro-F1 (issue 14, acceptance 2)


def _train(data: Path, seed: int, epochs: int, extra: list[str], out: Path) -> dict[str, Any]:
    """Train one seed unless a complete run is already in ``out``; returns its step record."""
    metrics = out / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        if len(m.get("history", [])) == epochs and not m.get("interrupted"):
            return {"command": f"(kept) {out.relative_to(REPO)}", "wall_s": m.get("wall_s", 0.0)}
    cmd = [OMSF2, "train", "--data", str(data), "--model", "omsf2_tiny", "--img-size", "224", "--epochs",
           str(epochs), "--seed", str(seed), "--out", str(out), *extra]  # fmt: skip
    if (out / "last.pt").is_file():
        cmd = [OMSF2, "train", "--resume", str(out / "last.pt")]
    shown = " ".join(cmd).replace(OMSF2, "omsf2").replace(str(REPO) + "/", "")
    print("+", shown, flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO).returncode
    if rc != 0:
        raise SystemExit(f"error: training seed {seed} failed with exit code {rc}")
    return {"command": shown, "wall_s": round(time.perf_counter() - t0, 1)}


def _run_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    f1 = [100.0 * h["macro_f1"] for h in history]
    late = curve_stability(history)
    return {"final_macro_f1": f1[-1], "final_accuracy": 100.0 * history[-1]["accuracy"],
            "best_macro_f1": late["best_macro_f1"], "best_epoch": late["best_epoch"],
            "worst_dip_after_first_third": late["worst_dip_after_first_third"],
            "worst_dip_epoch": late["worst_dip_epoch"], "curve_macro_f1": [round(v, 2) for v in f1]}  # fmt: skip


def _plot(runs: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for seed, r in runs.items():
        ax.plot(range(1, len(r["curve_macro_f1"]) + 1), r["curve_macro_f1"], marker=".", label=f"seed {seed}")
    n = len(next(iter(runs.values()))["curve_macro_f1"])
    ax.axvline(n // 3 + 0.5, color="grey", linestyle=":", label="first third ends")
    ax.set(xlabel="epoch", ylabel="val macro-F1 (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cxr-real")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--tag", default="default", help="names the runs and the result files")
    ap.add_argument("extra", nargs="*", help="more `omsf2 train` options (after --)")
    args = ap.parse_args()
    data = args.data.resolve()
    if not (data / "train").is_dir():
        raise SystemExit(f"error: {data} has no train/ folder")
    seeds = [int(s) for s in args.seeds.split(",")]
    work = REPO / "runs" / f"stability-{args.tag}"
    steps, runs = [], {}
    for seed in seeds:
        out = work / f"seed-{seed}"
        steps.append(_train(data, seed, args.epochs, args.extra, out))
        runs[str(seed)] = _run_summary(json.loads((out / "metrics.json").read_text())["history"])
    finals = [r["final_macro_f1"] for r in runs.values()]
    std = statistics.stdev(finals) if len(finals) > 1 else 0.0
    worst = max(r["worst_dip_after_first_third"] for r in runs.values())
    slug, desc = machine()
    recipe = "the default recipe" + (f" with {' '.join(args.extra)}" if args.extra else "")
    rec = {
        "scenario": f"stability-{args.tag}",
        "about": f"omsf2_tiny, 224 px, {args.epochs} epochs, {recipe}, on {data.name}; val split (150 images)",
        "machine": desc,
        "date": date.today().isoformat(),
        "steps": steps,
        "seeds": runs,
        "final_macro_f1_mean": statistics.fmean(finals),
        "final_macro_f1_std": std,
        "worst_dip_after_first_third": worst,
        "bounds": {"std_below": STD_BOUND, "dip_at_most": DIP_BOUND},
        "passed": std < STD_BOUND and worst <= DIP_BOUND,
    }
    dest = RESULTS / f"stability-{args.tag}-{slug}"
    dest.with_suffix(".json").write_text(json.dumps(rec, indent=2) + "\n")
    _plot(runs, dest.with_suffix(".png"), f"val macro-F1 per epoch, {len(seeds)} seeds ({args.tag})")
    lines = [f"# {rec['scenario']} ({desc})", "", rec["about"] + ".", "",
             "| seed | final val macro-F1 | final val accuracy | best macro-F1 (epoch) "
             "| worst dip after the first third (epoch) |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for seed, r in runs.items():
        dip = f"{r['worst_dip_after_first_third']:.2f} ({r['worst_dip_epoch']})"
        lines.append(f"| {seed} | {r['final_macro_f1']:.2f} | {r['final_accuracy']:.2f} | {r['best_macro_f1']:.2f} "
                     f"({r['best_epoch']}) | {dip} |")  # fmt: skip
    lines += ["", f"Final val macro-F1: {rec['final_macro_f1_mean']:.2f} ± {std:.2f} (mean ± sample std over "
              f"{len(seeds)} seeds; bound: std < {STD_BOUND:g}). Worst dip after the first third: {worst:.2f} points "
              f"(bound: {DIP_BOUND:g}). {'Both bounds hold.' if rec['passed'] else 'A bound is NOT met.'}", "",
              f"![curves]({dest.with_suffix('.png').name})", ""]  # fmt: skip
    dest.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {dest}.json|md|png and {summarize()}")


if __name__ == "__main__":
    main()
