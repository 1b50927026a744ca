"""Ablation: does each OMSF2 module earn its cost? Every variant, same recipe, several seeds, two datasets.

The recipe is ``omsf2 train``'s default apart from ``--epochs`` (15 here, see :data:`EPOCHS`);
``--jobs`` trains that many runs side by side.

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/ablation.py --jobs 2 --threads 1   # everything: about 3.5 hours on 2 cores
    .venv/bin/python bench/ablation.py --variants full,plain --datasets cxr-real --seeds 0
    .venv/bin/python bench/ablation.py --quick                 # smoke: 2 variants, 1 seed, 1 epoch, 64 px

Each run is one ``omsf2 train`` subprocess (what a user types) with explicit thread counts, in
``<runs>/<dataset>/<variant>/seed-<s>/`` (or ``.../cv/`` with ``--folds``). The script is
resumable: a run whose ``metrics.json`` holds all its epochs is kept and not re-run; a run with
a ``last.pt`` but fewer epochs is resumed from it; so the same command, run again in another
session, continues where the last one stopped (seeds, variants and datasets may be added; the
settings that change what a run computes are pinned in ``<runs>/protocol.json``). Results are
rewritten after every run, and the record carries each finished run's figures: on a machine
whose runs folder is gone, the same command keeps the runs that the record (made under the same
pinned settings) already holds and trains only the rest.

What is reported, per (dataset, variant): mean ± sample std over seeds (or folds) of the
**final** epoch's val accuracy, macro-F1 and per-class recall (the final epoch involves no model
selection, so val is unbiased), the same of ``best.pt`` (chosen on
val unless ``--select-fraction``, which the table says), training time (sum of the epochs' train
+ validation time, robust to resumes) and parameters. A seed seeds everything ``omsf2 train``
seeds: initialisation, batch order, augmentation, and, on the phantoms, the phantom draw itself
(so the spread there includes the data); every variant of one seed sees the same data.
Written to ``bench/results/ablation-<machine>.json``, ``.md`` and ``.png``; the .md gives runs
completed per cell and marks incomplete cells.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import ablation_folds as kfold
from common import RESULTS, curve_stability, machine, written_by

from omsf2.fileio import atomic_write, write_json, write_text
from omsf2.train.cv import mean_std, scalar_metrics

REPO = Path(__file__).resolve().parents[1]
OMSF2 = str(Path(sys.executable).with_name("omsf2"))
CXR = REPO.parent / "shared" / "data" / "cxr-real"

# name -> (registered model, extra `omsf2 train` options): one module off at a time.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "plain": ("resnet18_plain_tiny", ()),
    "full": ("omsf2_tiny", ()),
    "no_neck": ("omsf2_tiny_no_neck", ()),
    "no_msff": ("omsf2_tiny_no_msff", ()),
    "no_bap": ("omsf2_tiny", ("--no-bap",)),
    "no_attention_aug": ("omsf2_tiny", ("--no-attention-aug",)),
    "no_soft_distance": ("omsf2_tiny", ("--soft-distance", "0")),
}
DATASETS = ("cxr-real", "phantoms")
QUICK = {"variants": "plain,full", "datasets": "phantoms", "seeds": "0", "epochs": 1, "img_size": 64}
QUICK_PHANTOMS, QUICK_BATCH = 32, 8
REPORTED = ("accuracy", "macro_f1")
# Each variant is compared with the full model seed by seed (same seed: same split, same phantom draw,
# same batch order), which removes the seed-to-seed spread the cells' own std carries.
REFERENCE = "full"
# (source, key): the final epoch's macro-F1 and the mean over the last third of the epochs (on val),
# and with --folds the final epoch's macro-F1 on the held-out fold (the decision rule's endpoint).
# (name in the record, source, key)
PAIRED = (("macro_f1", "final", "macro_f1"), ("last_third_mean", "late", "last_third_mean"))
PAIRED_FOLDS = (("fold_macro_f1", "final_fold", "macro_f1"), *PAIRED)
PAIRED_NAMES = {
    "macro_f1": "final val macro-F1",
    "last_third_mean": "val macro-F1 averaged over the last third",
    "fold_macro_f1": "final macro-F1 on the held-out fold (the decision rule's primary endpoint)",
}
# 15 epochs, not the 30 of `omsf2 train`'s default: 42 runs (7 variants x 3 seeds x 2 datasets) must
# fit in a few hours on 2 cores (4-7 min for `plain`, 10-11 for an OMSF2 variant, at 1 thread with 2
# jobs side by side and nothing else running: about 3.5 hours in all).
EPOCHS = 15


def _csv(text: str, known: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in known]
    if bad or not items:
        raise SystemExit(f"error: unknown {what} {bad or text!r}; choose from {', '.join(known)}")
    return items


def _data_args(dataset: str, a: argparse.Namespace) -> list[str]:
    if dataset == "cxr-real":
        return ["--data", str(a.data)]
    return ["--data", "synthetic", "--synthetic-n", str(a.phantoms)]


Unit = int | str  # a seed, or a fold's key ("fold-<i>") with --folds


def _units(a: argparse.Namespace) -> list[Unit]:
    """What one cell is made of: its seeds, or its folds."""
    return [kfold.fold_key(i) for i in range(a.folds)] if a.folds else list(a.seed_list)


def _run_dir(a: argparse.Namespace, dataset: str, variant: str, unit: Unit) -> Path:
    if a.folds:  # the layout of `omsf2 train --folds K --out .../cv`
        return a.runs / dataset / variant / "cv" / str(unit)
    return a.runs / dataset / variant / f"seed-{unit}"


def _finished(run: Path, a: argparse.Namespace) -> dict[str, Any] | None:
    """The metrics.json dict of a finished run (a seed's, or one fold's), else None."""
    try:
        m = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if m.get("interrupted") or (len(m.get("history", [])) < a.epochs and not m.get("stopped_early")):
        return None
    return m


def _train_flags(a: argparse.Namespace, dataset: str, variant: str, seed: int, out: Path) -> list[str]:
    """The ``omsf2 train`` flags of a new run (without the program and the subcommand)."""
    model, extra = VARIANTS[variant]
    cmd = [*_data_args(dataset, a), "--model", model, "--epochs", str(a.epochs)]
    cmd += ["--img-size", str(a.img_size), "--seed", str(seed), "--workers", "0", "--out", str(out), *extra]
    cmd += ["--device", a.device]
    if a.batch_size:
        cmd += ["--batch-size", str(a.batch_size)]
    if a.select_fraction:
        cmd += ["--select-fraction", str(a.select_fraction)]
    return cmd + (["--folds", str(a.folds)] if a.folds else [])


def _fold_options(a: argparse.Namespace, dataset: str, variant: str) -> dict[str, Any]:
    """The options of :func:`_train_flags` by parameter name, for bench/cv_fold.py (seed 0)."""
    data = {"data": str(a.data)} if dataset == "cxr-real" else {"data": "synthetic", "synthetic_n": a.phantoms}
    opts = {**data, **kfold.VARIANT_OPTIONS[variant], "epochs": a.epochs, "img_size": a.img_size, "seed": 0}
    opts |= {"workers": 0, "device": a.device}
    return opts | ({"batch_size": a.batch_size} if a.batch_size else {})


def _command(a: argparse.Namespace, dataset: str, variant: str, unit: Unit, run: Path) -> tuple[list[str], str]:
    """The command that trains (or continues) one run, and how it is shown."""
    if a.folds:
        fold = int(str(unit).rsplit("-", 1)[1])
        cmd = kfold.fold_command(OMSF2, _fold_options(a, dataset, variant), a.folds, fold, run.parent)
        return cmd, kfold.shown_fold_command(cmd, _train_flags(a, dataset, variant, 0, run.parent), fold)
    last = run / "last.pt"
    if last.is_file():  # an interrupted run continues exactly where it stopped
        cmd = [OMSF2, "train", "--resume", str(last), "--workers", "0"]
    else:
        cmd = [OMSF2, "train", *_train_flags(a, dataset, variant, int(unit), run)]
        cmd += ["--overwrite"] if run.exists() else []  # a run that died before its first last.pt: start again
    return cmd, " ".join(shlex.quote(c if c != OMSF2 else "omsf2") for c in cmd)


def _train(cmd: list[str], threads: int) -> tuple[int, float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True)
    return proc.returncode, time.perf_counter() - t0, (proc.stdout[-2000:] + proc.stderr[-2000:])


def _run_record(m: dict[str, Any], finished_at: str) -> dict[str, Any]:
    """What one seed (or one fold) contributes to its cell: its val figures at the final epoch and at best.pt.

    A fold also gives its final epoch's figures on its held-out patients (``final_fold``). The lists
    hold one entry (records of an older layout held one per fold). ``finished_at``: when its
    metrics.json was last written.
    """
    last = m["history"][-1]
    rec: dict[str, Any] = {
        "final": [scalar_metrics(last)],
        "best": [scalar_metrics(m["best"])],
        "late": [curve_stability(m["history"])],  # in points
        "train_s": [sum(h.get("epoch_s", 0.0) for h in m["history"])],
        "params": m["params"],
        "selected_on": m.get("selected_on", "val"),
        "val_size": m["val_size"],
        "finished_at": finished_at,
    }
    if "fold_macro_f1" in last:
        rec["final_fold"] = [{"accuracy": last["fold_accuracy"], "macro_f1": last["fold_macro_f1"]}]
        rec["fold_size"] = m.get("select_size")
    return rec


def _record_of(run: Path, m: dict[str, Any]) -> dict[str, Any]:
    mtime = (run / "metrics.json").stat().st_mtime
    return _run_record(m, time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(mtime)))


def _recorded_runs(a: argparse.Namespace, path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Finished runs carried by an earlier record at ``path`` made under the same pinned settings.

    The record keeps each finished run's contribution, so an ablation continues from a committed
    record on a machine whose runs folder is gone (the runs themselves are not in the repository).
    """
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if old.get("pinned") != json.loads(json.dumps(_pinned(a))):  # compared as the JSON it was written as
        return {}
    return old.get("runs", {})


def _cell(records: list[dict[str, Any]], planned: int) -> dict[str, Any]:
    finals = [r for rec in records for r in rec["final"]]
    bests = [r for rec in records for r in rec["best"]]
    times = [t for rec in records for t in rec["train_s"]]
    return {
        "runs_done": len(records),
        "runs_planned": planned,
        "complete": len(records) == planned,
        "params": records[0]["params"] if records else None,
        "selected_on": records[0]["selected_on"] if records else None,
        "val_size": records[0]["val_size"] if records else None,
        "final": mean_std(finals),
        "final_fold": mean_std(r for rec in records for r in rec.get("final_fold", [])),
        "best": mean_std(bests),
        "late": mean_std(r for rec in records for r in rec.get("late", [])),  # older records lack it
        "train_s": mean_std({"train_s": t} for t in times).get("train_s"),
    }


def _paired(by_variant: dict[str, dict[Unit, dict[str, Any]]], source: str, key: str) -> dict[str, dict[str, Any]]:
    """Per variant: ``full - variant`` on ``run[source][i][key]``, in points, paired by seed (or fold).

    Returns ``{variant: {"n", "values", "mean", "std", "reference_better", "ci95", "p"}}``; ``ci95``
    and ``p`` come from a one-sample t-test of the differences (a paired t-test), None below two
    pairs or when every difference is the same. p is not corrected for the several comparisons.
    """
    from scipy import stats

    scale = 100.0 if source.startswith("final") else 1.0  # final figures are fractions, "late" ones points
    ref = by_variant.get(REFERENCE, {})
    out: dict[str, dict[str, Any]] = {}
    for variant, by_seed in by_variant.items():
        seeds = [s for s in sorted(set(ref) & set(by_seed)) if ref[s].get(source) and by_seed[s].get(source)]
        if variant == REFERENCE or not seeds:
            continue
        pairs = [zip(ref[s][source], by_seed[s][source], strict=True) for s in seeds]  # folds pair by index
        diffs = [scale * (r[key] - v[key]) for seed_pairs in pairs for r, v in seed_pairs]
        entry: dict[str, Any] = mean_std({"d": d} for d in diffs)["d"]  # n, values, mean, std
        entry |= {"reference_better": sum(d > 0 for d in diffs), "ci95": None, "p": None}
        if len(diffs) > 1 and entry["std"] > 0:
            test = stats.ttest_1samp(diffs, 0.0)
            ci = test.confidence_interval(0.95)
            entry |= {"ci95": [float(ci.low), float(ci.high)], "p": float(test.pvalue)}
        out[variant] = entry
    return out


def _pm(stat: dict[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    if not stat:
        return "—"
    if stat.get("n", 2) < 2:  # one run has no spread to show
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def _paired_markdown(paired: dict[str, dict[str, dict[str, Any]]], unit: str = "seed") -> list[str]:
    """One table per paired figure: the full model minus each variant, in points, paired by ``unit``."""
    lines: list[str] = []
    for key, by_variant in paired.items():
        if not by_variant:
            continue
        lines += [
            f"Paired by {unit}, `{REFERENCE}` minus the variant, {PAIRED_NAMES.get(key, key)} (points; positive: "
            "what the variant lacks helped; p: paired t-test, not corrected for the several comparisons):",
            "",
            "| variant | pairs | differences | mean ± std | 95% CI | p | full better in |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant, e in by_variant.items():
            diffs = " / ".join(f"{d:+.1f}" for d in e["values"])
            spread = f"{e['mean']:+.1f}" + (f" ± {e['std']:.1f}" if e["n"] > 1 else "")
            ci = f"[{e['ci95'][0]:+.1f}, {e['ci95'][1]:+.1f}]" if e["ci95"] else "—"
            p = f"{e['p']:.3f}" if e["p"] is not None else "—"
            lines.append(
                f"| {variant} | {e['n']} | {diffs} | {spread} | {ci} | {p} | {e['reference_better']} of {e['n']} |"
            )
        lines.append("")
    return lines


def _markdown(rec: dict[str, Any]) -> str:
    p = rec["protocol"]
    unit = f"{p['folds']} folds" if p["folds"] else f"seeds {p['seeds']}"
    lines = [
        "# Ablation: each OMSF2 module switched off in turn",
        "",
        f"Machine: {rec['machine']}; {rec['date']}. Recipe: `omsf2 train` defaults, {p['epochs']} epochs at "
        f"{p['img_size']} px, {unit}, {p['threads']} thread(s) per run. Figures in percent, mean ± sample std; "
        "**final** = the last epoch on val (no selection, unbiased); **best** = best.pt on val "
        f"(chosen on {p['selected_on']}; optimistic when that is val); **last-third** = val macro-F1 averaged "
        "over the last third of the epochs (no selection); **worst late dip** = how far the worst epoch after the "
        "first third falls below the run's best (points). Time: training + validation per run."
        + (" **fold final** = the last epoch on the run's held-out fold (no selection)." if p["folds"] else ""),
        "",
    ]
    lines += kfold.decision_markdown(rec)
    for dataset, cells in rec["cells"].items():
        classes = list(dict.fromkeys(k for c in cells.values() for k in c["final"] if k.startswith("recall[")))
        lines += [f"## {dataset}", ""]
        folds = any(c.get("final_fold") for c in cells.values())
        head = ["variant", "runs", "params (M)", *(["fold final macro-F1"] if folds else [])]
        head += ["final acc", "final macro-F1", *classes, "best acc", "best macro-F1"]
        head += ["last-third macro-F1", "worst late dip"]
        lines += ["| " + " | ".join([*head, "train time (s)"]) + " |", "|" + "---|" * (len(head) + 1)]
        for variant, c in cells.items():
            runs = f"{c['runs_done']}/{c['runs_planned']}" + ("" if c["complete"] else " (incomplete)")
            params = f"{c['params'] / 1e6:.2f}" if c["params"] else "—"
            row = [variant, runs, params, *([_pm(c.get("final_fold", {}).get("macro_f1"))] if folds else [])]
            row += [_pm(c["final"].get("accuracy")), _pm(c["final"].get("macro_f1"))]
            row += [_pm(c["final"].get(k)) for k in classes]
            row += [_pm(c["best"].get("accuracy")), _pm(c["best"].get("macro_f1"))]
            late = c.get("late", {})
            row += [_pm(late.get("last_third_mean"), 1.0), _pm(late.get("worst_dip_after_first_third"), 1.0)]
            row += [_pm(c["train_s"], 1.0, 0)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        lines += _paired_markdown(rec.get("paired", {}).get(dataset, {}), "fold" if p["folds"] else "seed")
    return "\n".join(lines)


def _plot(rec: dict[str, Any], path: Path) -> None:
    """Final val macro-F1 (mean ± std) per variant, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = rec["cells"]
    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 3.8), squeeze=False)
    for ax, (dataset, row) in zip(axes[0], cells.items(), strict=True):
        names = [v for v, c in row.items() if c["final"].get("macro_f1")]
        means = [row[v]["final"]["macro_f1"]["mean"] * 100 for v in names]
        stds = [row[v]["final"]["macro_f1"]["std"] * 100 for v in names]
        colors = ["tab:blue" if row[v]["complete"] else "tab:gray" for v in names]
        ax.bar(names, means, yerr=stds, capsize=4, color=colors)
        for i, v in enumerate(names):  # each seed's own figure beside its bar
            values = [x * 100 for x in row[v]["final"]["macro_f1"]["values"]]
            ax.scatter([i + 0.25] * len(values), values, s=10, color="black", zorder=3)
        ax.set_title(f"{dataset}: final val macro-F1 (%)")
        ax.set_ylim(0, 100)
        ax.tick_params(axis="x", rotation=35)
    fig.suptitle("bars: mean ± std; dots: each seed; gray: incomplete cell", fontsize=8)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


Records = dict[str, dict[str, dict[Unit, dict[str, Any]]]]  # dataset -> variant -> seed/fold -> run record


def _write(a: argparse.Namespace, records: Records, slug: str, desc: str) -> Path:
    planned = len(_units(a))
    paired = {
        d: {name: _paired(records[d], source, key) for name, source, key in (PAIRED_FOLDS if a.folds else PAIRED)}
        for d in a.dataset_list
        if REFERENCE in a.variant_list
    }
    rec: dict[str, Any] = {
        "scenario": "ablation",
        "machine": desc,
        "date": time.strftime("%Y-%m-%d"),
        "protocol": {
            "epochs": a.epochs,
            "img_size": a.img_size,
            "seeds": a.seed_list,
            "folds": a.folds,
            "threads": a.threads,
            "batch_size": a.batch_size or "omsf2 train's default",
            "selected_on": "select" if a.select_fraction else ("fold" if a.folds else "val"),
            "data": {d: " ".join(_data_args(d, a)) for d in a.dataset_list},
            "variants": {v: " ".join(["--model", VARIANTS[v][0], *VARIANTS[v][1]]) for v in a.variant_list},
        },
        "cells": {
            d: {v: _cell([records[d][v][s] for s in sorted(records[d][v])], planned) for v in a.variant_list}
            for d in a.dataset_list
        },
        "paired": paired,
        "pinned": _pinned(a),
        # Each finished run's contribution, so that the record alone lets a later run continue.
        "runs": {
            d: {v: {str(s): r for s, r in sorted(by_seed.items())} for v, by_seed in cells.items()}
            for d, cells in records.items()
        },
        "written_by": written_by(__file__),
    }
    out = _record_path(a, slug)
    if a.folds:  # the rule registered before the runs, and what it decides once every fold is paired
        try:
            old = json.loads(out.read_text())
        except (OSError, ValueError):
            old = None
        rec["decision_rule"] = kfold.registered_rule(old)
        rec["decisions"] = {d: kfold.decide(pr["fold_macro_f1"], a.folds) for d, pr in paired.items()}
    a.results.mkdir(parents=True, exist_ok=True)
    write_json(out, rec)
    write_text(out.with_suffix(".md"), _markdown(rec))
    _plot(rec, out.with_suffix(".png"))
    return out


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, of {', '.join(DATASETS)}")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (ignored with --folds)")
    ap.add_argument("--folds", type=int, default=0, help="patient-level k-fold instead of seeds (0 = seeds)")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--select-fraction", type=float, default=0.0, help="passed to omsf2 train (0 = best.pt on val)")
    ap.add_argument("--data", type=Path, default=CXR, help="the cxr-real folder")
    ap.add_argument("--phantoms", type=int, default=600, help="train phantoms (val gets a quarter)")
    ap.add_argument("--batch-size", type=int, default=0, help="passed to omsf2 train (0 = its default)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per training run")
    ap.add_argument("--jobs", type=int, default=1, help="training runs side by side")
    ap.add_argument("--record-only", action="store_true", help="write the record from finished runs; train nothing")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=Path, default=None, help="where the runs are kept (runs/ablation[-folds<K>])")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where ablation-<machine>.* are written")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 variants, 1 seed, 1 epoch, 32 phantoms, 64 px")
    a = ap.parse_args(argv)
    if a.quick:
        a.variants, a.datasets, a.seeds = QUICK["variants"], QUICK["datasets"], QUICK["seeds"]
        a.epochs, a.img_size, a.phantoms, a.folds = QUICK["epochs"], QUICK["img_size"], QUICK_PHANTOMS, 0
        a.batch_size = QUICK_BATCH
    a.variant_list = _csv(a.variants, list(VARIANTS), "variant(s)")
    a.dataset_list = _csv(a.datasets, DATASETS, "dataset(s)")
    try:
        a.seed_list = [0] if a.folds else [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds must be comma-separated integers, got {a.seeds!r}") from None
    if a.folds == 1 or a.folds < 0 or a.epochs < 1 or a.threads < 1 or a.jobs < 1 or not a.seed_list:
        raise SystemExit(
            "error: need --folds 0 or >= 2, --epochs >= 1, --threads >= 1, --jobs >= 1 and at least one seed"
        )
    if a.runs is None:
        a.runs = REPO / "runs" / (f"ablation-folds{a.folds}" if a.folds else "ablation")
    if "cxr-real" in a.dataset_list and not a.data.is_dir():
        raise SystemExit(f"error: cxr-real folder '{a.data}' does not exist; give it with --data")
    return a


def _pinned(a: argparse.Namespace) -> dict[str, Any]:
    """The settings that change what a run computes: runs made under others are not comparable."""
    keys = ("epochs", "img_size", "folds", "select_fraction", "phantoms", "batch_size", "device")
    # The cxr-real folder by name and size, not by path: a clone elsewhere sees the same data.
    files = sum(1 for f in a.data.rglob("*") if f.is_file()) if a.data.is_dir() else 0
    return {k: getattr(a, k) for k in keys} | {"data": f"{a.data.name} ({files} files)"}


def _claim_runs(a: argparse.Namespace) -> None:
    """A runs folder holds one protocol: continuing it with other settings would mix results."""
    proto = _pinned(a)
    path = a.runs / "protocol.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in proto if old.get(k) != proto[k])
        if diff:
            raise SystemExit(
                f"error: '{a.runs}' holds runs made with other settings ({', '.join(diff)} differ); "
                "use the same settings to continue them, or another --runs folder"
            )
        return
    write_json(path, proto)


def _execute(a: argparse.Namespace, dataset: str, variant: str, unit: Unit) -> tuple[str, dict[str, Any] | None]:
    """Train (or continue) one run; its shown command and its record when it finished."""
    run = _run_dir(a, dataset, variant, unit)
    cmd, shown = _command(a, dataset, variant, unit, run)
    code, wall, tail = _train(cmd, a.threads)
    print(f"{shown}: exit {code}, {wall:.0f}s", flush=True)
    done = _finished(run, a) if code == 0 else None
    if done is None:
        print(tail, file=sys.stderr)
    return shown, None if done is None else _record_of(run, done)


def _record_path(a: argparse.Namespace, slug: str) -> Path:
    return a.results / (f"ablation-folds{a.folds}-{slug}.json" if a.folds else f"ablation-{slug}.json")


def _plan(a: argparse.Namespace, carried: dict[str, Any], records: Records) -> list[tuple[str, str, Unit]]:
    """Fill ``records`` with the finished runs (in the runs folder, else in the record); the rest to train.

    Seed- (or fold-) major: an interrupted ablation has every variant at the first seed (fold), so a
    partial one is still paired.
    """
    todo = []
    for unit in _units(a):
        for dataset in a.dataset_list:
            for variant in a.variant_list:
                run = _run_dir(a, dataset, variant, unit)
                done = _finished(run, a)
                kept = carried.get(dataset, {}).get(variant, {}).get(str(unit))
                if done is not None:
                    records[dataset][variant][unit] = _record_of(run, done)
                elif kept is not None and not run.exists():  # finished in a runs folder that is gone
                    records[dataset][variant][unit] = kept
                    print(f"kept from the record: {run.relative_to(a.runs)}", flush=True)
                elif not a.record_only:
                    todo.append((dataset, variant, unit))
    return todo


def main(argv: Sequence[str] | None = None) -> Path:
    """Run (or continue) the ablation; returns the result JSON's path."""
    a = _parse(argv)
    _claim_runs(a)
    slug, desc = machine()
    slug = f"quick-{slug}" if a.quick else slug
    carried = _recorded_runs(a, _record_path(a, slug))
    records: Records = {d: {v: {} for v in a.variant_list} for d in a.dataset_list}
    todo = _plan(a, carried, records)
    _write(a, records, slug, desc)  # before any run: with --folds this registers the decision rule
    failed = []
    # --jobs runs train side by side, each with --threads threads (on 2 cores: 2 jobs x 1 thread
    # keep both cores busier than 1 job x 2 threads, whose data steps are single-threaded).
    pool = ThreadPoolExecutor(max_workers=a.jobs)
    try:
        futures = {pool.submit(_execute, a, *task): task for task in todo}
        for fut in as_completed(futures):
            dataset, variant, unit = futures[fut]
            shown, done = fut.result()
            if done is None:
                failed.append(shown)
                continue
            records[dataset][variant][unit] = done
            _write(a, records, slug, desc)
    finally:  # Ctrl-C: the running runs save their state; nothing queued starts
        pool.shutdown(wait=True, cancel_futures=True)
    out = _write(a, records, slug, desc)
    print(f"wrote {out} (.md, .png)")
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed; the cells say what completed; first: {failed[0]}")
    return out


if __name__ == "__main__":
    main()
