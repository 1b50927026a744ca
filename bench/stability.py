"""Is training stable? The same recipe, several seeds, every epoch's val figures, on cxr-real or on phantoms.

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/stability.py [--data ../shared/data/cxr-real | --phantoms 600] [--seeds 0,1,2]
                                        [--epochs 30] [--threads 1] [--tag ema] [-- EXTRA omsf2 train OPTIONS]

Trains ``omsf2_tiny`` (``--model``) at 224 px with ``omsf2 train`` (the library's default recipe plus
EXTRA options) once per seed into ``runs/stability-<tag>/seed-<s>``, on an image folder (``--data``)
or on ``--phantoms N`` synthetic phantoms (``--data synthetic --synthetic-n N``: N train, N/4 val; the
seed also draws the phantoms). A seed whose ``metrics.json`` is complete is kept and an interrupted
one resumes from its ``last.pt``; the record carries every finished seed's curves, so on a machine
whose ``runs/`` folder is gone the same command keeps what the record holds (made under the same
settings) and trains only the rest. Records in ``bench/results/stability-<tag>-<machine>.json|md|png``:

* the final epoch's val macro-F1 of every seed, their mean and (sample) standard deviation;
* per seed, the largest shortfall of any epoch after the first third of the schedule below that run's best
  val macro-F1, and where it happened; the bounds of issue 25 are std <= 3 and dip <= 10 points;
* per seed and epoch, val macro-F1 and per-class recall (plotted with matplotlib).

The val split chooses nothing here (the figures are the per-epoch and final ones, not best.pt's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from common import RESULTS, curve_stability, machine, summarize, written_by

from omsf2.fileio import atomic_write, write_json, write_text

REPO = Path(__file__).resolve().parents[1]
OMSF2 = str(Path(sys.executable).with_name("omsf2"))
STD_BOUND, DIP_BOUND = 3.0, 10.0  # points of macro-F1 (issue 25, acceptance 1: std <= 3, dip <= 10)


def _data_args(a: argparse.Namespace) -> list[str]:
    if a.phantoms:
        return ["--data", "synthetic", "--synthetic-n", str(a.phantoms)]
    return ["--data", str(a.data)]


def _pinned(a: argparse.Namespace) -> dict[str, Any]:
    """What changes a run's figures: runs recorded under other settings are not kept."""
    if a.phantoms:
        data = f"{a.phantoms} phantoms"
    else:  # by name and size, not by path: a clone elsewhere sees the same data
        data = f"{a.data.name} ({sum(1 for f in a.data.rglob('*') if f.is_file())} files)"
    return {"model": a.model, "epochs": a.epochs, "data": data, "extra": list(a.extra), "threads": a.threads}


def _complete(out: Path, epochs: int) -> dict[str, Any] | None:
    try:
        m = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return m if len(m.get("history", [])) == epochs and not m.get("interrupted") else None


def _train(a: argparse.Namespace, seed: int, out: Path) -> dict[str, Any]:
    """Train one seed unless a complete run is already in ``out``; returns its step record."""
    m = _complete(out, a.epochs)
    if m is not None:
        return {"command": f"(kept) {_shown(out)}", "wall_s": m.get("wall_s", 0.0)}
    cmd = [OMSF2, "train", *_data_args(a), "--model", a.model, "--img-size", "224", "--epochs", str(a.epochs),
           "--seed", str(seed), "--workers", "0", "--out", str(out), *a.extra]  # fmt: skip
    if (out / "last.pt").is_file():
        cmd = [OMSF2, "train", "--resume", str(out / "last.pt"), "--workers", "0"]
    elif out.exists():
        cmd.append("--overwrite")  # died before its first last.pt: start again
    shown = _shown(" ".join(cmd))
    print("+", shown, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    if rc != 0:
        raise SystemExit(f"error: training seed {seed} failed with exit code {rc}")
    return {"command": shown, "wall_s": round(time.perf_counter() - t0, 1)}


def _shown(text: object) -> str:
    return str(text).replace(OMSF2, "omsf2").replace(str(REPO) + "/", "")


def _run_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    f1 = [100.0 * h["macro_f1"] for h in history]
    late = curve_stability(history)
    recall = {c: [round(100.0 * h["per_class_recall"][c], 2) for h in history] for c in history[-1]["per_class_recall"]}
    return {"final_macro_f1": f1[-1], "final_accuracy": 100.0 * history[-1]["accuracy"],
            "best_macro_f1": late["best_macro_f1"], "best_epoch": late["best_epoch"],
            "worst_dip_after_first_third": late["worst_dip_after_first_third"],
            "worst_dip_epoch": late["worst_dip_epoch"], "last_third_mean": late["last_third_mean"],
            "curve_macro_f1": [round(v, 2) for v in f1], "curve_recall": recall,
            "train_s": round(sum(h.get("epoch_s", 0.0) for h in history), 1)}  # fmt: skip


def _plot(runs: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for seed, r in runs.items():
        epochs = range(1, len(r["curve_macro_f1"]) + 1)
        line = ax.plot(epochs, r["curve_macro_f1"], marker=".", label=f"seed {seed}")[0]
        first = next(iter(r["curve_recall"]))  # normal / the first class: where the phantoms swung
        ax2.plot(epochs, r["curve_recall"][first], color=line.get_color(), label=f"seed {seed}: {first}")
    n = len(next(iter(runs.values()))["curve_macro_f1"])
    for a in (ax, ax2):
        a.axvline(n // 3 + 0.5, color="grey", linestyle=":", label="first third ends")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    ax.set(xlabel="epoch", ylabel="val macro-F1 (%)", title=title)
    ax2.set(xlabel="epoch", ylabel="val recall (%)", title="recall of the first class", ylim=(0, 102))
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def _markdown(rec: dict[str, Any], png: str) -> str:
    runs, std, worst = rec["seeds"], rec["final_macro_f1_std"], rec["worst_dip_after_first_third"]
    classes = list(next(iter(runs.values()))["curve_recall"])
    lines = [f"# {rec['scenario']} ({rec['machine']})", "", rec["about"] + ".", "",
             "| seed | final val macro-F1 | final val accuracy | best macro-F1 (epoch) "
             "| worst dip after the first third (epoch) | last-third mean | "
             + " | ".join(f"final recall {c}" for c in classes) + " |",
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(classes)]  # fmt: skip
    for seed, r in runs.items():
        dip = f"{r['worst_dip_after_first_third']:.2f} ({r['worst_dip_epoch']})"
        recall = " | ".join(f"{r['curve_recall'][c][-1]:.1f}" for c in classes)
        lines.append(f"| {seed} | {r['final_macro_f1']:.2f} | {r['final_accuracy']:.2f} | {r['best_macro_f1']:.2f} "
                     f"({r['best_epoch']}) | {dip} | {r['last_third_mean']:.2f} | {recall} |")  # fmt: skip
    verdict = "Both bounds hold." if rec["passed"] else "A bound is NOT met."
    lines += ["", f"Final val macro-F1: {rec['final_macro_f1_mean']:.2f} ± {std:.2f} (mean ± sample std over "
              f"{len(runs)} seeds; bound: std ≤ {STD_BOUND:g}). Worst dip after the first third: {worst:.2f} points "
              f"(bound: ≤ {DIP_BOUND:g}). {verdict}", "", "Val macro-F1 by epoch:", ""]  # fmt: skip
    lines += [f"- seed {s}: " + ", ".join(f"{v:.1f}" for v in r["curve_macro_f1"]) for s, r in runs.items()]
    lines += ["", f"![curves]({png})", ""]
    return "\n".join(lines)


def _carried(path: Path, pinned: dict[str, Any]) -> dict[str, Any]:
    """Seeds a record made under the same settings already holds (their runs folder may be gone)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return old.get("seeds", {}) if old.get("pinned") == json.loads(json.dumps(pinned)) else {}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cxr-real")
    ap.add_argument("--phantoms", type=int, default=0, help="train on N synthetic phantoms instead of --data")
    ap.add_argument("--model", default="omsf2_tiny")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    ap.add_argument("--tag", default="default", help="names the runs and the result files")
    ap.add_argument("--runs", type=Path, default=REPO / "runs", help="gets stability-<tag>/seed-<s>/")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the record is written")
    ap.add_argument("extra", nargs="*", help="more `omsf2 train` options (after --)")
    a = ap.parse_args(argv)
    a.data = a.data.resolve()
    if not a.phantoms and not (a.data / "train").is_dir():
        raise SystemExit(f"error: {a.data} has no train/ folder")
    if a.phantoms < 0 or a.epochs < 1 or a.threads < 1:
        raise SystemExit("error: need --phantoms >= 0, --epochs >= 1 and --threads >= 1")
    a.seed_list = [int(s) for s in a.seeds.split(",")]
    return a


def main(argv: list[str] | None = None) -> Path:
    """Train (or keep) every seed, then write the record; returns the record's path."""
    a = _parse(argv)
    slug, desc = machine()
    dest = a.results / f"stability-{a.tag}-{slug}"
    pinned = _pinned(a)
    carried = _carried(dest.with_suffix(".json"), pinned)
    work = a.runs / f"stability-{a.tag}"
    steps, runs = [], {}
    for seed in a.seed_list:
        out = work / f"seed-{seed}"
        if str(seed) in carried and not out.exists():
            steps.append({"command": f"(kept from the record) seed {seed}", "wall_s": 0.0})
            runs[str(seed)] = carried[str(seed)]
            continue
        steps.append(_train(a, seed, out))
        runs[str(seed)] = _run_summary(json.loads((out / "metrics.json").read_text())["history"])
    finals = [r["final_macro_f1"] for r in runs.values()]
    std = statistics.stdev(finals) if len(finals) > 1 else 0.0
    worst = max(r["worst_dip_after_first_third"] for r in runs.values())
    recipe = "the default recipe" + (f" with {' '.join(a.extra)}" if a.extra else "")
    data = f"{a.phantoms} synthetic phantoms (val: {a.phantoms // 4})" if a.phantoms else a.data.name
    rec = {
        "scenario": f"stability-{a.tag}",
        "about": f"{a.model}, 224 px, {a.epochs} epochs, {recipe}, on {data}, {a.threads} thread(s) per run; "
        "val split figures, nothing selected",
        "machine": desc,
        "date": date.today().isoformat(),
        "pinned": pinned,
        "steps": steps,
        "seeds": runs,
        "final_macro_f1_mean": statistics.fmean(finals),
        "final_macro_f1_std": std,
        "worst_dip_after_first_third": worst,
        "bounds": {"std_at_most": STD_BOUND, "dip_at_most": DIP_BOUND},
        "passed": std <= STD_BOUND and worst <= DIP_BOUND,
        "written_by": written_by(__file__, argv),
    }
    a.results.mkdir(parents=True, exist_ok=True)
    write_json(dest.with_suffix(".json"), rec)
    png = dest.with_suffix(".png")
    _plot(runs, png, f"val macro-F1 per epoch, {len(runs)} seeds ({a.tag})")
    text = _markdown(rec, png.name)
    write_text(dest.with_suffix(".md"), text)
    page = summarize() if a.results == RESULTS else None  # bench/results/README.md lists the records there
    print(f"wrote {dest}.json|md|png" + (f" and {page}" if page else ""))
    return dest.with_suffix(".json")


if __name__ == "__main__":
    main()
