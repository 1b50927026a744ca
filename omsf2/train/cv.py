"""Patient-level k-fold cross-validation: K runs, one per held-out fold, and their mean ± std.

``omsf2 train --folds K`` partitions the train split's patients into K stratified folds
(:func:`omsf2.train.splits.patient_folds`) and trains K models with the same recipe: run ``i``
trains on every fold but ``i`` and chooses its ``best.pt`` on fold ``i``. Each run is an
ordinary training run in ``OUT/fold-<i>/`` (``best.pt``, ``last.pt``, ``metrics.json``) whose
config records ``folds``/``fold``, so a fold's ``last.pt`` resumes like any other. The real val
split, which no fold chose anything on, is evaluated by every run and summarised apart.

``OUT/cv.json`` and ``OUT/cv.md`` hold, for the held-out folds and for val, the mean and the
sample standard deviation (ddof = 1) over folds of every scalar metric at each run's chosen
epoch. Re-running the same command continues: a fold whose run finished with the same config
is kept, an interrupted one is resumed from its ``last.pt``. The trade-off: the K runs are
sequential in one process (no ``--nproc``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omsf2.fileio import atomic_write, write_json
from omsf2.train.config import TrainConfig
from omsf2.train.loop import Reporter, TrainResult, resume, train

SCALARS = ("accuracy", "macro_f1", "qwk", "macro_auc")


@dataclasses.dataclass(frozen=True)
class CVResult:
    """Outcome of :func:`cross_validate`.

    Attributes:
        out_dir: holds ``fold-<i>/``, ``cv.json`` and ``cv.md``.
        folds: the runs done or continued by this call (finished folds kept from before are not here).
        summary: what ``cv.json`` holds (None when a run was interrupted).
        interrupted: a run was stopped; re-running the command continues it.
    """

    out_dir: Path
    folds: list[TrainResult]
    summary: dict[str, Any] | None
    interrupted: bool


def scalar_metrics(m: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics of a metrics dict: accuracy, macro-F1, QWK, macro AUC, ``recall[<class>]``."""
    out = {k: float(m[k]) for k in SCALARS if m.get(k) is not None}
    for cls, r in (m.get("per_class_recall") or {}).items():
        if r is not None:
            out[f"recall[{cls}]"] = float(r)
    return out


def mean_std(records: Iterable[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Per key: ``{"mean", "std" (sample, ddof = 1; 0 for one value), "n", "values"}`` over records."""
    values: dict[str, list[float]] = {}
    for r in records:
        for k, v in r.items():
            if v is not None and math.isfinite(v):
                values.setdefault(k, []).append(float(v))
    return {
        k: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v), "values": v}
        for k, v in values.items()
    }


def _finished(fold_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The metrics of a finished run of exactly ``cfg`` in ``fold_dir``, else None."""
    try:
        m = json.loads((fold_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    done = (not m.get("interrupted") and len(m.get("history", [])) >= cfg.epochs) or m.get("stopped_early")
    return m if done and m.get("config") == json.loads(json.dumps(cfg.to_dict())) else None


def _resumable(fold_dir: Path, cfg: TrainConfig) -> bool:
    try:
        m = json.loads((fold_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    same = m.get("config") == json.loads(json.dumps(cfg.to_dict()))
    return bool(same and m.get("interrupted") and (fold_dir / "last.pt").is_file())


def summarize(metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """cv.json's content from the folds' ``metrics.json`` dicts (fold order)."""
    held = [scalar_metrics(m["best"].get("fold", {})) for m in metrics]
    val = [scalar_metrics(m["best"]) for m in metrics]
    return {
        "folds": len(metrics),
        "model": metrics[0]["model"],
        "params": metrics[0]["params"],
        "held_out": mean_std(held),
        "val": mean_std(val),
        "best_epochs": [m["best_epoch"] for m in metrics],
        "fold_sizes": [m["select_size"] for m in metrics],
        "val_size": metrics[0]["val_size"],
        "wall_s": mean_std({"wall_s": m["wall_s"]} for m in metrics)["wall_s"],
        "config": {k: v for k, v in metrics[0]["config"].items() if k != "fold"},
    }


def cv_markdown(summary: Mapping[str, Any]) -> str:
    """cv.md: one row per metric, mean ± std over folds on the held-out folds and on val."""
    lines = [
        f"# {summary['folds']}-fold patient-level cross-validation: {summary['model']} ({summary['params']:,} params)",
        "",
        f"Held-out fold sizes (images): {summary['fold_sizes']}; val: {summary['val_size']} images. "
        f"Best epochs: {summary['best_epochs']}. Mean ± sample std over folds.",
        "",
        "| metric | held-out folds | val |",
        "|---|---|---|",
    ]
    held, val = summary["held_out"], summary["val"]
    for k in list(dict.fromkeys([*held, *val])):
        cells = [f"{d[k]['mean']:.4f} ± {d[k]['std']:.4f}" if k in d else "—" for d in (held, val)]
        lines.append(f"| {k} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def cross_validate(
    cfg: TrainConfig, out_dir: str | Path, folds: int, reporter: Reporter | None = None, overwrite: bool = False
) -> CVResult:
    """Train ``folds`` models on patient-level folds of the train split and summarise them.

    Args:
        cfg: the recipe (its ``folds``/``fold`` are set per run).
        out_dir: gets ``fold-<i>/``, ``cv.json`` and ``cv.md``.
        folds: K >= 2.
        reporter: progress sink of every run.
        overwrite: replace another run's files in a fold folder instead of refusing.

    Raises:
        ValueError: K < 2, a selection fraction (the fold chooses), or what a run refuses.
    """
    if folds < 2:
        raise ValueError(f"cross-validation needs --folds >= 2, got {folds}")
    cfgs = [dataclasses.replace(cfg, folds=folds, fold=i) for i in range(folds)]  # checks the settings first
    out = Path(out_dir)
    runs: list[TrainResult] = []
    metrics: list[dict[str, Any]] = []
    for i, fcfg in enumerate(cfgs):
        fold_dir = out / f"fold-{i}"
        kept = _finished(fold_dir, fcfg)
        if kept is None:
            if _resumable(fold_dir, fcfg):
                res = resume(fold_dir / "last.pt", reporter=reporter)
            else:
                res = train(fcfg, fold_dir, reporter, overwrite)
            runs.append(res)
            if res.interrupted:
                return CVResult(out, runs, None, True)
            kept = json.loads((fold_dir / "metrics.json").read_text())
        metrics.append(kept)
    summary = summarize(metrics)
    write_json(out / "cv.json", summary)
    text = cv_markdown(summary)

    def _write(p: Path) -> None:
        p.write_text(text)

    atomic_write(out / "cv.md", _write)
    return CVResult(out, runs, summary, False)
