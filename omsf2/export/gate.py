"""The INT8 accuracy gate: which kernels it runs on, what it measures, and how sure it is.

An INT8 graph is only as good as the arithmetic that runs it, and that differs by consumer:

- ``qdq-float``: onnxruntime with every graph optimisation off (``ORT_DISABLE_ALL``), so each
  QuantizeLinear/DequantizeLinear is computed as the float op it is and no Q/DQ pair is fused
  into an integer kernel. That is the graph's exact semantics, which TensorRT implements with
  int8 arithmetic and int32 accumulation: the mode for ``model.int8.onnx``.
- ``ort-integer``: onnxruntime's default optimisations fuse Q/DQ into its integer CPU kernels,
  which is what a CPU deployment of ``model.int8-cpu.onnx`` runs. Those kernels depend on the
  CPU (see :mod:`omsf2.export.qdq_rules` on u8s8 saturation without VNNI), so the gate records
  the instruction set it ran on (:func:`kernel_path`).

The gate holds a flavour to FP32 on labelled images by two numbers: the accuracy drop (points)
and the top-1 agreement with FP32. On a few hundred images an unchanged accuracy can hide many
flipped answers, so agreement is gated too. Each comes with a 95 % interval: Wilson for the
agreement, a paired bootstrap for the drop (:mod:`omsf2.metrics`). The pass/fail decision uses
the point estimates, as the thresholds were set on them; the intervals say how far to trust it.
:func:`gate_record` adds the per-group figures (:mod:`omsf2.export.subgroups`) and the
:func:`caveats`: when FP32 itself is at chance on the gate images (agreement with a model that
guesses says nothing about accuracy) or the set is too small for its bounds to be decided, the
gate says so in ``report.json`` and in its printed line, whatever its verdict.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import platform
from typing import Any

import numpy as np

from omsf2.export.calibration import ImageSet
from omsf2.metrics import images_to_show, paired_bootstrap_interval, wilson_interval
from omsf2.runtime.cpu import cpu_flags

DEFAULT_MAX_DROP = 0.5  # accuracy points; the INT8 issue's bound on real held-out radiographs
DEFAULT_MIN_AGREEMENT = 0.98
CONFIDENCE = 0.95


class EvalMode(str, enum.Enum):
    """How onnxruntime runs a Q/DQ graph for the gate."""

    QDQ_FLOAT = "qdq-float"  # ORT_DISABLE_ALL: Q/DQ as float ops, the graph's (and TensorRT's) semantics
    ORT_INTEGER = "ort-integer"  # default optimisations: Q/DQ fused into onnxruntime's integer CPU kernels


@dataclasses.dataclass(frozen=True)
class GateSpec:
    """Thresholds of the gate.

    Attributes:
        max_drop: accuracy points (0-100) a flavour may lose against FP32; at least 0.
        min_agreement: least top-1 agreement with FP32, in [0, 1].
        min_group_agreement: least top-1 agreement in every subgroup large enough to judge, in
            [0, 1]; None: groups are reported, not gated.
    """

    max_drop: float = DEFAULT_MAX_DROP
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    min_group_agreement: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_drop) and 0 <= self.max_drop <= 100):
            raise ValueError(f"--max-drop must be a number of accuracy points in [0, 100], got {self.max_drop!r}")
        if not (math.isfinite(self.min_agreement) and 0 <= self.min_agreement <= 1):
            raise ValueError(f"--min-agreement must be a fraction in [0, 1], got {self.min_agreement!r}")
        g = self.min_group_agreement
        if g is not None and not (math.isfinite(g) and 0 <= g <= 1):
            raise ValueError(f"--min-group-agreement must be a fraction in [0, 1], got {g!r}")


def kernel_path(flags: frozenset[str] | None = None) -> dict[str, Any]:
    """Which u8s8 integer kernel onnxruntime's CPU provider uses here, and whether it can saturate.

    Args:
        flags: CPU feature flags (default: this machine's).

    Returns:
        ``{"machine", "isa", "u8s8_int16_saturation", "onnxruntime"}``; ``isa`` is one of
        ``avx512-vnni``, ``avx-vnni``, ``avx512``, ``avx2``, ``sse4.1``, ``arm-dot``, ``arm`` or
        ``unknown``.
    """
    f = cpu_flags() if flags is None else flags
    machine = platform.machine().lower()
    if "avx512_vnni" in f or "avx512vnni" in f:
        isa, saturates = "avx512-vnni", False
    elif "avx_vnni" in f:
        isa, saturates = "avx-vnni", False
    elif "avx512bw" in f:
        isa, saturates = "avx512", True
    elif "avx2" in f:
        isa, saturates = "avx2", True
    elif "sse4_1" in f:
        isa, saturates = "sse4.1", True
    elif "asimddp" in f:
        isa, saturates = "arm-dot", False
    elif machine in ("aarch64", "arm64"):
        isa, saturates = "arm", False
    else:
        isa, saturates = "unknown", None
    try:
        import onnxruntime as ort

        version = ort.__version__
    except ImportError:  # pragma: no cover - the gate needs onnxruntime anyway
        version = None
    return {"machine": machine, "isa": isa, "u8s8_int16_saturation": saturates, "onnxruntime": version}


def session(model: Any, mode: EvalMode, threads: int = 0) -> Any:
    """An onnxruntime CPU session running ``model`` (ModelProto or path) the way ``mode`` says."""
    from omsf2.export.onnx import ort_session

    return ort_session(model, threads, disable_optimizations=mode is EvalMode.QDQ_FLOAT)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement of two (N, K) logit arrays."""
    return float((a.argmax(1) == b.argmax(1)).mean()) if len(a) else 1.0


def judge(labels: np.ndarray, fp32_logits: np.ndarray, logits: np.ndarray, spec: GateSpec) -> dict[str, Any]:
    """The gate's numbers for one flavour: drop and agreement with intervals, and the verdict.

    Raises:
        ValueError: non-finite logits (a broken graph, not an inaccurate one).
    """
    if not np.all(np.isfinite(logits)):
        raise ValueError("the INT8 graph produced non-finite logits (NaN or inf)")
    n = len(labels)
    fp_ok = fp32_logits.argmax(1) == labels
    q_ok = logits.argmax(1) == labels
    same = fp32_logits.argmax(1) == logits.argmax(1)
    drop = 100.0 * float(fp_ok.mean() - q_ok.mean())
    lo, hi = paired_bootstrap_interval(fp_ok.astype(np.float64) - q_ok, CONFIDENCE)
    agree = float(same.mean())
    a_lo, a_hi = wilson_interval(int(same.sum()), n, CONFIDENCE)
    reasons = []
    if drop > spec.max_drop + 1e-9:
        reasons.append(f"accuracy drop {drop:.2f} points > --max-drop {spec.max_drop:g}")
    if agree < spec.min_agreement - 1e-12:
        reasons.append(f"top-1 agreement {100 * agree:.1f}% < --min-agreement {100 * spec.min_agreement:g}%")
    return {
        "accuracy_drop": drop,
        "accuracy_drop_ci95": [100.0 * lo, 100.0 * hi],
        "top1_agreement": agree,
        "top1_agreement_ci95": [a_lo, a_hi],
        "flipped": int((~same).sum()),
        "max_drop": spec.max_drop,
        "min_agreement": spec.min_agreement,
        "passed": not reasons,
        "failed_because": reasons,
    }


def caveats(labels: np.ndarray, fp32_logits: np.ndarray, spec: GateSpec) -> list[str]:
    """Why this gate set cannot mean much, one sentence each (empty when it can).

    * FP32 at chance: the Wilson interval of FP32's accuracy reaches down to the share of the
      commonest class (what always giving that answer scores). Agreement with FP32 then says
      nothing about accuracy: a model that guesses agrees with anything that guesses alike.
    * Too few images for ``--min-agreement``: even full agreement has a 95 % interval that reaches
      below the bound (:func:`omsf2.metrics.images_to_show`).
    * One image worth more than ``--max-drop``: the bound then allows no net lost image.
    """
    n = len(labels)
    if n == 0:
        return ["the gate set holds no images"]
    out = []
    right = int((fp32_logits.argmax(1) == labels).sum())
    lo, hi = wilson_interval(right, n, CONFIDENCE)
    chance = float(np.bincount(labels[labels >= 0]).max(initial=0)) / n
    if lo <= chance:
        out.append(
            f"FP32 is at chance level on the {n} gate images (accuracy {100 * right / n:.1f}%, 95% CI "
            f"[{100 * lo:.1f}, {100 * hi:.1f}], vs {100 * chance:.1f}% for always answering the commonest class): "
            "agreement with it says nothing about accuracy"
        )
    need = images_to_show(spec.min_agreement, CONFIDENCE)
    if need is None or n < need:
        out.append(
            f"{n} gate images cannot decide --min-agreement {100 * spec.min_agreement:g}%: even full agreement "
            f"has a 95% interval down to {100 * n / (n + _z2()):.1f}%"
            + (f" (about {need} images are needed)" if need else "")
        )
    if 0 < spec.max_drop < 100 / n:
        out.append(
            f"one gate image is {100 / n:.2f} points, more than --max-drop {spec.max_drop:g}: the bound allows "
            "no net lost image"
        )
    return out


def _z2() -> float:
    """The square of :data:`CONFIDENCE`'s z (the Wilson lower bound of n of n is n / (n + z^2))."""
    lo, _ = wilson_interval(1, 1, CONFIDENCE)
    return 1 / lo - 1


def gate_record(images: ImageSet, fp32_logits: np.ndarray, logits: np.ndarray, spec: GateSpec) -> dict[str, Any]:
    """:func:`judge` on ``images`` plus its subgroups (with ``spec.min_group_agreement``) and :func:`caveats`.

    Raises:
        ValueError: non-finite logits.
    """
    from omsf2.export.subgroups import apply_group_bound, group_table

    rec = judge(images.labels, fp32_logits, logits, spec)
    bound = spec.min_group_agreement
    apply_group_bound(rec, group_table(images, fp32_logits, logits, bound), bound)
    rec["caveats"] = caveats(images.labels, fp32_logits, spec)
    return rec


def gate_message(r: dict[str, Any], mixed_precision: bool) -> str:
    """One line saying why a flavour failed its gate, with the numbers, what was tried and what to do."""
    lo, hi = r["accuracy_drop_ci95"]
    mixed = r.get("mixed_precision")
    search = r.get("search") or {}
    if mixed and mixed.get("float_groups"):
        tried = (
            f"; {len(mixed['float_groups'])} group(s) kept in float passed the search part ({search.get('n')} "
            f"images: drop {search.get('accuracy_drop', 0):.2f} points, agreement "
            f"{100 * search.get('top1_agreement', 0):.1f}%) but not the gate part"
        )
    elif mixed:
        best = min(mixed["tried"], key=lambda t: (t["accuracy_drop"], -t["top1_agreement"]))
        tried = (
            f"; keeping up to {mixed['max_float_groups']} of the most sensitive node groups in float did not pass the "
            f"search part (closest: {best['float_groups']} group(s), drop {best['accuracy_drop']:.2f} points, "
            f"agreement {100 * best['top1_agreement']:.1f}%)"
        )
    elif search.get("passed") and r.get("figures_on") == "gate part":
        tried = (
            f"; full INT8 passed the search part ({search.get('n')} images: drop {search.get('accuracy_drop', 0):.2f} "
            f"points, agreement {100 * search.get('top1_agreement', 0):.1f}%), so no group was kept in float, but "
            "not the gate part"
        )
    elif not mixed_precision:
        tried = "; --mixed-precision (the default) would keep the most sensitive layers in float"
    else:
        tried = ""
    one = 100 / max(1, r["eval_count"])
    caution = f"; caution: {r['caveats'][0]}" if r.get("caveats") else ""
    return (
        f"INT8 accuracy gate failed for {r['file']} (calibration method {r['method']!r}, {r['calib_count']} "
        f"images, {r['eval_mode']}): {'; '.join(r['failed_because'])} — accuracy {100 * r['int8_accuracy']:.2f}% vs "
        f"FP32 {100 * r['fp32_accuracy']:.2f}% on {r['eval_count']} gate images (drop 95% CI [{lo:.2f}, {hi:.2f}]), "
        f"top-1 agreement {100 * r['top1_agreement']:.1f}%{tried}; one gate image is {one:.2f} points: more "
        "--eval-data images (or a larger --gate-data) measure the drop better, --max-drop sets what is accepted, "
        f"--sensitivity shows the ranking{caution}"
    )
