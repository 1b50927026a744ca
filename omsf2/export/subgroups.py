"""The gate per subgroup: a quantized model that passes overall can still fail one scanner or one class.

Every gate (each INT8 flavour, each TensorRT engine) reports, per group, the number of images,
FP32's and the quantized model's accuracy and their top-1 agreement. Groups are formed by class
always and, for DICOM gate sets, by modality (CR vs DX), manufacturer and photometric
interpretation (MONOCHROME1 vs 2), the attributes :func:`omsf2.export.gate_data.annotate` reads.

``--min-group-agreement`` (off by default) fails the gate when a group's agreement falls below
it. A group too small to judge (:func:`too_small`: fewer than :data:`MIN_GROUP_IMAGES` images, or
so few that a single flipped image decides the bound) is listed with its figures and marked, never
hidden and never failed: on a handful of images a bound is a coin toss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from omsf2.export.calibration import ImageSet

MIN_GROUP_IMAGES = 20


def too_small(n: int, bound: float | None) -> bool:
    """Whether a group of ``n`` images is too small to hold to ``bound`` (see the module docstring)."""
    need = MIN_GROUP_IMAGES
    if bound is not None and bound < 1:
        need = max(need, math.ceil(1 / (1 - bound) - 1e-9))
    return n < need


def _columns(images: ImageSet) -> dict[str, tuple[str, ...]]:
    names = tuple(images.classes[int(y)] if 0 <= int(y) < len(images.classes) else "(unlabelled)"
                  for y in images.labels)  # fmt: skip
    return {"class": names, **images.attributes}


def group_table(
    images: ImageSet, fp32_logits: np.ndarray, logits: np.ndarray, bound: float | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The gate's figures per group, for each attribute (class, and the DICOM ones where present).

    Returns:
        attribute -> rows of ``group``, ``n``, ``fp32_accuracy``, ``accuracy``, ``top1_agreement``,
        ``flipped`` and ``judged`` (False: too small to judge against ``bound``).
    """
    fp_pred, pred = fp32_logits.argmax(1), logits.argmax(1)
    fp_ok, q_ok, same = fp_pred == images.labels, pred == images.labels, fp_pred == pred
    table: dict[str, list[dict[str, Any]]] = {}
    for attr, values in _columns(images).items():
        column = np.asarray(values, dtype=object)
        rows = []
        for group in sorted(set(values)):
            m = column == group
            n = int(m.sum())
            rows.append({
                "group": group,
                "n": n,
                "fp32_accuracy": float(fp_ok[m].mean()),
                "accuracy": float(q_ok[m].mean()),
                "top1_agreement": float(same[m].mean()),
                "flipped": int((~same[m]).sum()),
                "judged": not too_small(n, bound),
            })  # fmt: skip
        table[attr] = rows
    return table


def apply_group_bound(rec: dict[str, Any], table: dict[str, list[dict[str, Any]]], bound: float | None) -> None:
    """Add ``groups``, ``small_groups`` and the bound to a gate record; fail it on a judged group below ``bound``."""
    rec["groups"] = table
    rec["min_group_agreement"] = bound
    rec["small_groups"] = [f"{a}={r['group']} (n {r['n']})" for a, rows in table.items() for r in rows
                           if not r["judged"]]  # fmt: skip
    if bound is None:
        return
    low = [f"{a}={r['group']} {100 * r['top1_agreement']:.1f}% (n {r['n']})" for a, rows in table.items()
           for r in rows if r["judged"] and r["top1_agreement"] < bound - 1e-12]  # fmt: skip
    if low:
        rec["passed"] = False
        rec["failed_because"] = [
            *rec.get("failed_because", []),
            f"top-1 agreement below --min-group-agreement {100 * bound:g}% in {', '.join(low)}",
        ]


def lowest_groups(table: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per attribute with more than one group, its lowest-agreement judged group, as ``attr=group 97.0% (n 50)``."""
    out = []
    for attr, rows in table.items():
        judged = [r for r in rows if r["judged"]]
        if len(rows) > 1 and judged:
            r = min(judged, key=lambda r: (r["top1_agreement"], r["accuracy"]))
            out.append(f"{attr}={r['group']} {100 * r['top1_agreement']:.1f}% (n {r['n']})")
    return out
