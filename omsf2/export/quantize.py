"""FP32 ONNX -> INT8 Q/DQ ONNX: calibrate once, quantize two flavours, lint, gate, and fall back to mixed precision.

Flavours, both calibrated on the same images and both gated (:mod:`omsf2.export.gate`):

- ``int8`` (``model.int8.onnx``), the TensorRT contract: S8S8, symmetric (zero points 0),
  per-channel 8-bit weights, per-tensor activations, Q/DQ on both inputs of residual Adds so
  TensorRT fuses them into the preceding Conv. Gated in ``qdq-float`` mode (the graph's exact
  semantics, which TensorRT computes), never through a CPU's integer kernels.
- ``int8_cpu`` (``model.int8-cpu.onnx``): U8S8 (asymmetric uint8 activations) for CPU runtimes
  (onnxruntime's integer kernels; OpenVINO's u8 x s8 convolutions take it natively too), with
  7-bit weights (``reduce_range``) so that its u8s8 int16 pair sums cannot saturate on
  AVX2/AVX-512 CPUs without VNNI (:mod:`omsf2.export.qdq_rules`): the integer result
  is then the same on every x86 CPU, and the gate, run on this machine's integer kernels
  (``ort-integer``, the ISA recorded), holds where the file is deployed. The cost is one bit of
  weight resolution, per output channel.

What is quantized, and why: Conv and Gemm (the compute), the residual Adds (an Add fed by a
Conv whose result goes to a Relu: ResNet blocks and DPPM), and the neck's MaxPool, Resize and
Concat where everything they feed is INT8; the pairs sit after each ReLU
(:mod:`omsf2.export.qdq_placement` says where and why, per flavour). Everything else stays in
float: the CAM sigmoid maps and scale fusion (attention multiplies features, small errors
compound), and the BAP branch's Einsum, signed sqrt and L2 normalisation, whose output range
depends on the image. Activation ranges are computed once (:func:`omsf2.export.calibration.calibrate_ranges`)
and reused for every flavour and every trial through onnxruntime's calibration cache.

Two sets of labelled images: ``evaluation``, the search part, and ``gate_set``, the gate part
(:mod:`omsf2.export.gate_data` cuts them by patient). When a flavour fails the bounds on the search
part and ``mixed_precision`` is on, the quantizable node groups are ranked by sensitivity
(:mod:`omsf2.export.sensitivity`: the agreement lost when only that group is quantized, on
calibration images) and the fewest, most sensitive groups are kept in float (onnxruntime's
``nodes_to_exclude``) until a trial passes on the search part; the configuration found is then
judged once on the gate part, which decides (:mod:`omsf2.export.int8_search`). The report names
the groups and holds both parts' figures.

``quantizer="modelopt"`` hands the same FP32 graph and calibration images to NVIDIA ModelOpt's
``modelopt.onnx.quantization.quantize`` (TensorRT-oriented Q/DQ placement, ``max`` or
``entropy``). ModelOpt replaces onnxruntime with onnxruntime-gpu and pins onnx, so it is used only
where it is importable, in its own environment; the gate and lint are the same, the
mixed-precision search is onnxruntime's only.

``quantizer="nncf"`` writes the CPU flavour only, with NNCF's own calibration and accuracy control
(:mod:`omsf2.export.nncf_quant`; NNCF cannot write signed activations, the TensorRT contract); the
same lint and gate judge it, and the report names the layers NNCF reverted to float.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.config import parse_enum
from omsf2.export.calibration import PERCENTILE, CalibMethod, ImageSet
from omsf2.export.gate import CONFIDENCE, DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT, GateSpec, gate_message
from omsf2.export.int8_search import Work, metrics, quantize_flavour, rank
from omsf2.export.qdq_write import (
    FLAVOURS,
    MAX_FLOAT_FRACTION,
    Flavour,
    Quantizer,
    lint_qdq,
    max_float_layers,
    modelopt_unavailable_reason,
    quantizer_unavailable_reason,
    quiet_ort,
    residual_adds,
)

__all__ = [
    "FLAVOURS",
    "MAX_FLOAT_FRACTION",
    "CalibMethod",
    "Flavour",
    "GateError",
    "QuantizeResult",
    "QuantizeSpec",
    "Quantizer",
    "lint_qdq",
    "max_float_layers",
    "modelopt_unavailable_reason",
    "quantize_int8",
    "quantizer_unavailable_reason",
    "residual_adds",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantizeSpec:
    """What :func:`quantize_int8` does.

    Attributes:
        onnx_path: the FP32 ONNX (may hold ``omsf2`` custom ops).
        out_dir: folder for the flavours' files.
        calib: calibration images (already preprocessed).
        evaluation: labelled images disjoint from ``calib``: the search part (mixed-precision
            trials, NNCF's validation).
        gate_set: labelled images that judge each flavour's final configuration, disjoint from
            ``evaluation``; None: ``evaluation`` judges too (nothing then separates search from gate).
        method: calibration method.
        max_drop: accuracy points (0-100 scale) a flavour may lose against FP32 ONNX, >= 0.
        quantizer: ``ort`` (default) or ``modelopt``.
        flavours: names from :data:`FLAVOURS`.
        keep_float: module-path prefixes (matched against Conv/Gemm weight names) kept in float.
        min_agreement: least top-1 agreement with FP32.
        min_group_agreement: least top-1 agreement in each subgroup large enough to judge (None: off).
        mixed_precision: on a failed gate, keep the most sensitive groups in float until it passes.
        sensitivity: rank every node group (written to the report) even when the gate passes.
        percentile: for ``method`` percentile, the share of |x| (in %) kept inside each range.
    """

    onnx_path: str
    out_dir: str
    calib: ImageSet = dataclasses.field(repr=False)
    evaluation: ImageSet = dataclasses.field(repr=False)
    method: CalibMethod = CalibMethod.PERCENTILE
    max_drop: float = DEFAULT_MAX_DROP
    quantizer: Quantizer = Quantizer.ORT
    flavours: tuple[str, ...] = ("int8", "int8_cpu")
    keep_float: tuple[str, ...] = ()
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    mixed_precision: bool = True
    sensitivity: bool = False
    percentile: float = PERCENTILE
    gate_set: ImageSet | None = dataclasses.field(default=None, repr=False)
    min_group_agreement: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", parse_enum(CalibMethod, self.method, "calibration method"))
        if not 90.0 <= self.percentile <= 100.0:
            raise ValueError(f"calibration percentile must lie in [90, 100], got {self.percentile}")
        object.__setattr__(self, "quantizer", parse_enum(Quantizer, self.quantizer, "quantizer"))
        GateSpec(self.max_drop, self.min_agreement, self.min_group_agreement)  # validates the bounds
        unknown = [f for f in self.flavours if f not in FLAVOURS]
        if unknown or not self.flavours:
            raise ValueError(f"invalid INT8 flavour(s) {unknown}; choose from {', '.join(FLAVOURS)}")
        if self.quantizer is Quantizer.MODELOPT and self.method not in (CalibMethod.MAX, CalibMethod.ENTROPY):
            raise ValueError(f"--quantizer modelopt calibrates with max or entropy, not {self.method.value!r}")
        if self.quantizer is Quantizer.NNCF and "int8_cpu" not in self.flavours:
            raise ValueError("--quantizer nncf writes the CPU flavour (model.int8-cpu.onnx) only; use --quantizer ort")

    @property
    def gate(self) -> GateSpec:
        """The gate's thresholds."""
        return GateSpec(self.max_drop, self.min_agreement, self.min_group_agreement)

    @property
    def gate_images(self) -> ImageSet:
        """The images that judge: ``gate_set``, else ``evaluation``."""
        return self.evaluation if self.gate_set is None else self.gate_set


@dataclasses.dataclass(frozen=True)
class QuantizeResult:
    """Paths and the gate's numbers, per flavour (``report[flavour]`` has the report.json keys).

    Attributes:
        paths: written files of the flavours that passed their gate, by flavour name.
        report: per-flavour records (passed or not).
        fp32: FP32 ONNX metrics on the gate images.
        timings: seconds per step.
        sensitivity: the ranked node groups, when they were measured.
        failed: flavours that did not pass their gate (their files are removed).
        evaluations: every evaluation on labelled images (flavour, what, part, image ids): the
            search part's trials and the gate part's single verdict per flavour.
    """

    paths: dict[str, Path]
    report: dict[str, dict[str, Any]]
    fp32: dict[str, Any]
    timings: dict[str, float]
    sensitivity: list[dict[str, Any]] | None = None
    failed: tuple[str, ...] = ()
    evaluations: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class GateError(ValueError):
    """An INT8 flavour failed its accuracy gate; ``result`` holds every flavour's numbers."""

    def __init__(self, message: str, result: QuantizeResult) -> None:
        super().__init__(message)
        self.result = result


def _prepare(spec: QuantizeSpec) -> tuple[Any, Any, list[str], np.ndarray, np.ndarray]:
    """(graph as given, runnable graph, never-quantized nodes, FP32 logits on the search and on the gate part)."""
    import onnx

    from omsf2.export.custom_ops import expand_plugins, has_plugins
    from omsf2.export.onnx import ort_session, run_session

    model = onnx.load(spec.onnx_path)
    runnable = expand_plugins(model) if has_plugins(model) else model
    _, other_adds = residual_adds(runnable)
    exclude = other_adds + [
        n.name
        for n in runnable.graph.node
        if n.op_type in ("Conv", "Gemm") and any(n.input[1].startswith(p) for p in spec.keep_float)
    ]
    session = ort_session(runnable)
    search, _ = run_session(session, spec.evaluation.images)
    gate = search if spec.gate_set is None else run_session(session, spec.gate_set.images)[0]
    if not (np.all(np.isfinite(search)) and np.all(np.isfinite(gate))):
        raise ValueError("the FP32 ONNX produced non-finite logits (NaN or inf) on the eval images")
    return model, runnable, exclude, search, gate


def _calibrate(spec: QuantizeSpec, runnable_path: str, work: str) -> tuple[str, Any, Any]:
    """The calibration cache (path), its onnxruntime method and its ranges: once for every flavour and trial."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    from omsf2.export.calibration import calibrate_ranges

    cache = os.path.join(work, "calibration.json")
    with quiet_ort():
        ranges = calibrate_ranges(runnable_path, spec.calib.images, spec.method, work, spec.percentile)
    save_tensors_data(ranges, cache)
    return cache, ranges.calibration_method, ranges


def _method(spec: QuantizeSpec) -> dict[str, Any]:
    if spec.quantizer is Quantizer.NNCF:
        return {"method": "nncf (its own ranges, fast bias correction, accuracy control)"}
    return {
        "method": spec.method.value,
        **({"percentile": spec.percentile} if spec.method is CalibMethod.PERCENTILE else {}),
    }


def _entry(spec: QuantizeSpec, fl: Flavour, fp32: dict[str, Any], fp32_search: float, rec: dict[str, Any]) -> dict[
    str, Any
]:  # fmt: skip
    """One flavour's report.json entry: top-level figures are the gate part's, ``search`` the search part's."""
    rec["search"]["fp32_accuracy"] = fp32_search
    return {
        "file": fl.filename,
        "description": fl.description,
        "quantizer": spec.quantizer.value,
        **_method(spec),
        "weight_bits": 7 if fl.reduce_range else 8,
        "calib_count": len(spec.calib),
        "figures_on": "gate part" if spec.gate_set is not None else "the search images (no separate gate set)",
        "eval_count": len(spec.gate_images),
        "search_count": len(spec.evaluation),
        "fp32_accuracy": fp32["accuracy"],
        "fp32_macro_f1": fp32["macro_f1"],
        "fp32_per_class_recall": fp32["per_class_recall"],
        **fp32_intervals(fp32["confusion"]),
        **rec,
    }


def fp32_intervals(confusion: list[list[int]]) -> dict[str, Any]:
    """FP32's confusion matrix on the gate images and the 95 % intervals of its accuracy and macro-F1.

    Wilson for the accuracy, a percentile bootstrap over the images for macro-F1
    (:mod:`omsf2.metrics`); a model card reports them as they are recorded here.
    """
    from omsf2.metrics import macro_f1_interval, wilson_interval

    cm = np.asarray(confusion, np.int64)
    n = int(cm.sum())
    if n == 0:
        return {"fp32_confusion": cm.tolist()}
    return {
        "fp32_confusion": cm.tolist(),
        "fp32_accuracy_ci95": list(wilson_interval(int(np.trace(cm)), n, CONFIDENCE)),
        "fp32_macro_f1_ci95": list(macro_f1_interval(cm, CONFIDENCE)),
    }


def quantize_int8(spec: QuantizeSpec) -> QuantizeResult:
    """Calibrate, write each flavour, lint it, search on ``spec.evaluation`` and judge it on ``spec.gate_images``.

    Raises:
        GateError: a flavour failed its gate (after the mixed-precision search when on); the
            passing flavours' files stay in ``spec.out_dir``, the failing ones are removed.
        ValueError: ModelOpt requested but not importable, a lint failure, or non-finite logits.
    """
    import onnx

    from omsf2.export.qdq_placement import plan

    if reason := quantizer_unavailable_reason(spec.quantizer):
        raise ValueError(reason)
    t0 = time.perf_counter()
    model, runnable, exclude, fp32_search, fp32_gate = _prepare(spec)
    gs = spec.gate_images
    fp32 = metrics(gs.labels, fp32_gate, gs.classes)
    fp32_search_acc = float((fp32_search.argmax(1) == spec.evaluation.labels).mean())
    report: dict[str, dict[str, Any]] = {}
    paths: dict[str, Path] = {}
    timings: dict[str, float] = {}
    ort = spec.quantizer is Quantizer.ORT
    with tempfile.TemporaryDirectory(prefix="omsf2-quant-") as work:
        runnable_path = os.path.join(work, "fp32.onnx")
        onnx.save_model(runnable, runnable_path)
        fp32_path = os.path.join(work, "fp32-for-quant.onnx")
        onnx.save_model(model, fp32_path)  # the custom-op graph itself is quantized (same tensor names)
        t1 = time.perf_counter()
        cache, method, ranges = _calibrate(spec, runnable_path, work) if ort else ("", None, None)
        timings["calibrate_s"] = time.perf_counter() - t1
        where = plan(model, residual_adds(runnable)[1], ranges)
        w = Work(spec, fp32_path if ort else runnable_path, cache, method, exclude, fp32_search, fp32_gate, work,
                 where)  # fmt: skip
        ranking: list[dict[str, Any]] = []

        def ranked() -> list[dict[str, Any]]:
            if not ranking:
                t2 = time.perf_counter()
                ranking.extend(rank(w, runnable))
                timings["sensitivity_s"] = time.perf_counter() - t2
            return ranking

        if spec.sensitivity and ort:
            ranked()
        for name in spec.flavours:
            fl = FLAVOURS[name]
            if spec.quantizer is Quantizer.MODELOPT and not fl.symmetric:
                continue  # ModelOpt writes the TensorRT (S8S8) flavour only
            if spec.quantizer is Quantizer.NNCF and fl.symmetric:
                continue  # NNCF writes the CPU (U8S8) flavour only
            rec, paths[name] = quantize_flavour(w, fl, ranked)
            report[name] = _entry(spec, fl, fp32, fp32_search_acc, rec)
    timings["total_s"] = time.perf_counter() - t0
    failed = tuple(n for n, r in report.items() if not r["passed"])
    for n in failed:
        paths.pop(n).unlink(missing_ok=True)
    result = QuantizeResult(paths, report, fp32, timings, ranking or None, failed, w.evaluations)
    if failed:
        raise GateError(gate_message(report[failed[0]], spec.mixed_precision), result)
    return result
