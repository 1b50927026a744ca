"""Which calibration is robust, not lucky? Every method on several disjoint calibration splits.

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/calibration.py --export runs/int8-cxr/export [--data ../shared/data/cxr-real]
                                          [--splits 4] [--methods max,entropy,percentile,mse,percentile:99.99]

Takes an ``omsf2 export`` folder (its FP32 ``model.onnx`` and the preprocessing and classes in its
``report.json``), cuts the data's train split into ``--splits`` disjoint class-stratified parts, and
quantizes the model once per (method, part) with the library's own :func:`quantize_int8` (full INT8,
no mixed precision, gate opened so that every result is recorded), gated on the val split; a method
``percentile:P`` is the percentile method keeping P % of |x| (plain ``percentile`` is the default P). A method
whose figures move a lot from one calibration part to another is lucky where it does well.

Writes ``bench/results/calibration-<machine>.json|md``: per method and flavour, the accuracy drop and
the top-1 agreement with FP32 on every part, their mean, sample std and worst case.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, machine, written_by

from omsf2.config import PreprocessSpec
from omsf2.export.calibration import (
    MIN_CALIB_IMAGES,
    PERCENTILE,
    CalibMethod,
    CalibrationSpec,
    ImageSet,
    load_calibration,
    load_eval,
)
from omsf2.export.quantize import QuantizeSpec, quantize_int8
from omsf2.fileio import write_json

REPO = Path(__file__).resolve().parents[1]
EXTRA_PERCENTILES = ("percentile:99.99", "percentile:99.9")  # besides the default 99.999


def disjoint_parts(images: ImageSet, k: int, seed: int = 0) -> list[ImageSet]:
    """``k`` disjoint parts of ``images``, each with every class's images dealt out evenly."""
    rng = np.random.default_rng(seed)
    members: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(images.labels):
        idx = rng.permutation(np.flatnonzero(images.labels == c))
        for j, i in enumerate(idx):
            members[j % k].append(int(i))
    parts = []
    for m in members:
        sel = np.array(sorted(m))
        paths = tuple(images.paths[i] for i in sel)
        parts.append(dataclasses.replace(images, images=images.images[sel], labels=images.labels[sel], paths=paths))
    return parts


def parse_method(text: str) -> tuple[CalibMethod, float]:
    """``max``/``entropy``/``percentile``/``mse``, or ``percentile:P``: the method and its percentile."""
    name, _, pct = text.partition(":")
    try:
        method = CalibMethod(name)
        percentile = float(pct) if pct else PERCENTILE
    except ValueError:
        raise SystemExit(f"error: unknown calibration method {text!r}; choose from "
                         f"{', '.join(m.value for m in CalibMethod)} or percentile:P") from None  # fmt: skip
    if pct and method is not CalibMethod.PERCENTILE:
        raise SystemExit(f"error: only the percentile method takes a value, got {text!r}")
    return method, percentile


def _one(onnx_path: Path, part: ImageSet, evaluation: ImageSet, method: tuple[CalibMethod, float]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="omsf2-calib-bench-") as out:
        spec = QuantizeSpec(str(onnx_path), out, part, evaluation, method[0], max_drop=100.0, min_agreement=0.0,
                            mixed_precision=False, percentile=method[1])  # fmt: skip
        report = quantize_int8(spec).report  # the gate is opened: every flavour passes and is recorded
    keys = ("accuracy_drop", "top1_agreement", "flipped", "kernel_path", "weight_bits")
    return {name: {k: r[k] for k in keys if k in r} for name, r in report.items()}


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "worst": min(values), "best": max(values)}  # fmt: skip


def _aggregate(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for method, parts in runs.items():
        for flavour in parts[0]:
            drops = [-p[flavour]["accuracy_drop"] for p in parts]  # negated: "worst" is the largest drop
            agree = [100 * p[flavour]["top1_agreement"] for p in parts]
            d = _summary(drops)
            out.setdefault(method, {})[flavour] = {
                "drop": {k: 0.0 - d[k] if k != "std" else d[k] for k in d},  # 0.0 - x: no "-0.00"
                "agreement": _summary(agree),
            }
    return out


def _md(rec: dict[str, Any]) -> str:
    p = rec["protocol"]
    lines = [f"# Calibration methods on disjoint splits ({rec['machine']})", "", rec["about"], "",
             f"Model: `{p['onnx']}` ({p['checkpoint']}). {p['splits']} disjoint calibration parts of "
             f"{p['part_sizes']} images from `{p['calib_data']}`; gate on {p['eval_count']} images of "
             f"`{p['eval_data']}`. Full INT8 (no group kept in float). Drop in accuracy points (FP32 minus "
             "INT8; negative = INT8 better), agreement = top-1 agreement with FP32 ONNX, in %.", "",
             "| method | flavour | drop mean ± std | worst drop | agreement mean ± std | worst agreement "
             "| per part (drop / agreement) |",
             "|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for method, flavours in rec["summary"].items():
        for flavour, s in flavours.items():
            per = "; ".join(f"{r[flavour]['accuracy_drop']:.2f} / {100 * r[flavour]['top1_agreement']:.1f}"
                            for r in rec["runs"][method])  # fmt: skip
            d, a = s["drop"], s["agreement"]
            lines.append(f"| {method} | {flavour} | {d['mean']:.2f} ± {d['std']:.2f} | {d['worst']:.2f} "
                         f"| {a['mean']:.1f} ± {a['std']:.1f} | {a['worst']:.1f} | {per} |")  # fmt: skip
    lines += ["", f"Wall time {rec['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", type=Path, default=REPO / "runs" / "int8-cxr" / "export")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cxr-real")
    ap.add_argument("--splits", type=int, default=4)
    ap.add_argument("--methods", default=",".join([*(m.value for m in CalibMethod), *EXTRA_PERCENTILES]))
    ap.add_argument("--out", type=Path, help="result JSON (default bench/results/calibration-<machine>.json)")
    a = ap.parse_args()
    if not (a.export / "model.onnx").is_file() or not (a.export / "report.json").is_file():
        raise SystemExit(f"error: '{a.export}' is not an omsf2 export folder (needs model.onnx and report.json)")
    a.method_list = {m.strip(): parse_method(m.strip()) for m in a.methods.split(",") if m.strip()}
    return a


def _checkpoint(report: dict[str, Any]) -> str:
    ck = report.get("checkpoint")
    return str(ck.get("path", "?")) if isinstance(ck, dict) else str(ck)


def main() -> None:
    a = _args()
    onnx_path = a.export / "model.onnx"
    report = json.loads((a.export / "report.json").read_text())
    pre, classes = PreprocessSpec.from_dict(report["preprocess"]), report["classes"]
    train_dir, val_dir = a.data / "train", a.data / "val"
    every = load_calibration(CalibrationSpec(str(train_dir), count=10**9), pre, classes)
    if a.splits < 2 or len(every) // a.splits < MIN_CALIB_IMAGES:
        raise SystemExit(f"error: need --splits >= 2 with at least {MIN_CALIB_IMAGES} images per part "
                         f"({len(every)} images in '{train_dir}')")  # fmt: skip
    parts = disjoint_parts(every, a.splits)
    evaluation = load_eval(str(val_dir), pre, classes)
    t0 = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {}
    for name, method in a.method_list.items():
        for i, part in enumerate(parts):
            runs.setdefault(name, []).append(_one(onnx_path, part, evaluation, method))
            r = runs[name][-1]
            print(f"{name} part {i}: " + ", ".join(
                f"{f} drop {v['accuracy_drop']:.2f} agreement {100 * v['top1_agreement']:.1f}%" for f, v in r.items()),
                flush=True)  # fmt: skip
    slug, desc = machine()
    shown = onnx_path.relative_to(REPO) if onnx_path.is_relative_to(REPO) else onnx_path
    protocol = {"onnx": str(shown), "checkpoint": _checkpoint(report), "splits": a.splits,
                "part_sizes": [len(p) for p in parts], "calib_data": str(train_dir), "eval_data": str(val_dir),
                "eval_count": len(evaluation)}  # fmt: skip
    rec = {
        "scenario": "calibration",
        "written_by": written_by(__file__),
        "machine": desc,
        "date": date.today().isoformat(),
        "about": "Is a calibration method's accuracy a property of the method or of the images it happened to see?",
        "protocol": protocol,
        "runs": runs,
        "summary": _aggregate(runs),
        "wall_s": time.perf_counter() - t0,
    }
    out = a.out or RESULTS / f"calibration-{slug}.json"
    write_json(out, rec)
    out.with_suffix(".md").write_text(_md(rec))
    print(f"wrote {out} (.md)")


if __name__ == "__main__":
    main()
