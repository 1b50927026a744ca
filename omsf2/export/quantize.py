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

When a flavour fails its gate and ``mixed_precision`` is on, the quantizable node groups are
ranked by sensitivity (:mod:`omsf2.export.sensitivity`: the agreement lost when only that group
is quantized) and the fewest, most sensitive groups are kept in float (onnxruntime's
``nodes_to_exclude``) until the gate passes; the report names them.

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

import contextlib
import dataclasses
import enum
import io
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.config import parse_enum
from omsf2.export.calibration import PERCENTILE, CalibMethod, ImageSet
from omsf2.export.gate import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT, EvalMode, GateSpec, gate_message
from omsf2.export.qdq_placement import MODELOPT_OP_TYPES, Placement

__all__ = ["FLAVOURS", "CalibMethod", "Flavour", "GateError", "QuantizeResult", "QuantizeSpec", "Quantizer"]

log = logging.getLogger(__name__)

# The mixed-precision search keeps at most this fraction of the node groups in float.
MAX_FLOAT_FRACTION = 0.25


def max_float_layers(model: Any, exclude: Sequence[str]) -> int:
    """How many Conv/Gemm layers an accuracy search may keep in float: :data:`MAX_FLOAT_FRACTION` of them."""
    import math

    layers = sum(n.op_type in ("Conv", "Gemm") and n.name not in exclude for n in model.graph.node)
    return max(1, math.ceil(MAX_FLOAT_FRACTION * layers))


class Quantizer(str, enum.Enum):
    """Which tool inserts the Q/DQ nodes."""

    ORT = "ort"
    MODELOPT = "modelopt"
    NNCF = "nncf"


@dataclasses.dataclass(frozen=True)
class Flavour:
    """One INT8 artifact: file name, quantization types, and the kernels its gate runs on."""

    name: str
    filename: str
    activation: str  # onnxruntime QuantType name
    symmetric: bool
    reduce_range: bool  # 7-bit weights: u8s8 kernels without VNNI cannot saturate
    gate_mode: EvalMode
    description: str


FLAVOURS = {
    "int8": Flavour(
        "int8",
        "model.int8.onnx",
        "QInt8",
        True,
        False,
        EvalMode.QDQ_FLOAT,
        "S8S8 symmetric Q/DQ: the TensorRT contract",
    ),
    "int8_cpu": Flavour(
        "int8_cpu",
        "model.int8-cpu.onnx",
        "QUInt8",
        False,
        True,
        EvalMode.ORT_INTEGER,
        "U8S8 Q/DQ with 7-bit weights for onnxruntime on any x86 CPU",
    ),
}


@dataclasses.dataclass(frozen=True)
class QuantizeSpec:
    """What :func:`quantize_int8` does.

    Attributes:
        onnx_path: the FP32 ONNX (may hold ``omsf2`` custom ops).
        out_dir: folder for the flavours' files.
        calib: calibration images (already preprocessed).
        evaluation: labelled images disjoint from ``calib`` for the accuracy gate.
        method: calibration method.
        max_drop: accuracy points (0-100 scale) a flavour may lose against FP32 ONNX, >= 0.
        quantizer: ``ort`` (default) or ``modelopt``.
        flavours: names from :data:`FLAVOURS`.
        keep_float: module-path prefixes (matched against Conv/Gemm weight names) kept in float.
        min_agreement: least top-1 agreement with FP32 on ``evaluation``.
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", parse_enum(CalibMethod, self.method, "calibration method"))
        if not 90.0 <= self.percentile <= 100.0:
            raise ValueError(f"calibration percentile must lie in [90, 100], got {self.percentile}")
        object.__setattr__(self, "quantizer", parse_enum(Quantizer, self.quantizer, "quantizer"))
        GateSpec(self.max_drop, self.min_agreement)  # validates both
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
        return GateSpec(self.max_drop, self.min_agreement)


@dataclasses.dataclass(frozen=True)
class QuantizeResult:
    """Paths and the gate's numbers, per flavour (``report[flavour]`` has the report.json keys).

    Attributes:
        paths: written files of the flavours that passed their gate, by flavour name.
        report: per-flavour records (passed or not).
        fp32: FP32 ONNX metrics on the eval images.
        timings: seconds per step.
        sensitivity: the ranked node groups, when they were measured.
        failed: flavours that did not pass their gate (their files are removed).
    """

    paths: dict[str, Path]
    report: dict[str, dict[str, Any]]
    fp32: dict[str, Any]
    timings: dict[str, float]
    sensitivity: list[dict[str, Any]] | None = None
    failed: tuple[str, ...] = ()


class GateError(ValueError):
    """An INT8 flavour failed its accuracy gate; ``result`` holds every flavour's numbers."""

    def __init__(self, message: str, result: QuantizeResult) -> None:
        super().__init__(message)
        self.result = result


def modelopt_unavailable_reason() -> str | None:
    """None when ModelOpt's ONNX PTQ can be imported, else why not (one line)."""
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising anything
        return (
            f"NVIDIA ModelOpt is not importable here ({type(e).__name__}); install it in its own environment "
            "(pip install 'nvidia-modelopt[onnx]' after torch; it replaces onnxruntime with onnxruntime-gpu and pins "
            "onnx) and run omsf2 export there, or use --quantizer ort"
        )
    return None


def quantizer_unavailable_reason(quantizer: Quantizer) -> str | None:
    """None when ``quantizer`` can run here, else why not (one line)."""
    if quantizer is Quantizer.MODELOPT:
        return modelopt_unavailable_reason()
    if quantizer is Quantizer.NNCF:
        from omsf2.export.nncf_quant import nncf_unavailable_reason

        return nncf_unavailable_reason()
    return None


def residual_adds(model: Any) -> tuple[list[str], list[str]]:
    """(residual Add node names, other Add node names) of a graph.

    A residual Add takes two activations (no constant), one of them straight from a Conv, and
    feeds only a Relu: the pattern TensorRT fuses into ``Conv + Add + Relu`` when both inputs
    carry Q/DQ.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name for i in model.graph.initializer}
    res: list[str] = []
    other: list[str] = []
    for n in model.graph.node:
        if n.op_type != "Add":
            continue
        ins = list(n.input)
        acts = [i for i in ins if i not in inits and (i not in producers or producers[i].op_type != "Constant")]
        from_conv = any(i in producers and producers[i].op_type == "Conv" for i in ins)
        to_relu = all(c.op_type == "Relu" for c in consumers.get(n.output[0], [])) and n.output[0] in consumers
        (res if len(acts) == 2 and from_conv and to_relu else other).append(n.name)
    return res, other


def _quantize_ort(
    fp32_path: str, fl: Flavour, where: Placement, exclude: list[str], cache: str, method: Any, out: str, only: Any
) -> None:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from omsf2.export.qdq_placement import drop_identity_concat_qdq

    quantize_static(
        fp32_path,
        out,
        calibration_data_reader=None,
        calibration_cache_path=cache,
        calibrate_method=method,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(where.op_types),
        nodes_to_quantize=only,
        nodes_to_exclude=[*where.exclude, *exclude],
        per_channel=True,
        reduce_range=fl.reduce_range,
        activation_type=getattr(QuantType, fl.activation),
        weight_type=QuantType.QInt8,
        extra_options=where.extra_options(fl.symmetric),
    )
    if fl.symmetric:
        model = onnx.load(out)
        if drop_identity_concat_qdq(model):
            onnx.save_model(model, out)


def _quantize_modelopt(fp32_path: str, images: np.ndarray, method: CalibMethod, exclude: list[str], out: str) -> None:
    from modelopt.onnx.quantization import quantize

    quantize(
        onnx_path=fp32_path,
        quantize_mode="int8",
        calibration_data={"image": images},
        calibration_method=method.value,
        calibration_eps=["cpu"],
        op_types_to_quantize=list(MODELOPT_OP_TYPES),
        nodes_to_exclude=exclude,
        high_precision_dtype="fp32",
        output_path=out,
    )


def lint_qdq(
    model: Any, symmetric: bool, float_nodes: tuple[str, ...] | list[str] = (), placement: bool = True
) -> list[str]:
    """Structural problems of a Q/DQ graph (empty when clean): :func:`omsf2.export.qdq_rules.lint_problems`."""
    from omsf2.export.qdq_rules import lint_problems

    return lint_problems(model, symmetric, float_nodes, placement)


def _flavour_problems(model: Any, fl: Flavour, float_nodes: list[str], placement: bool) -> list[str]:
    from omsf2.export.qdq_rules import has_u8_activations, saturation_problems

    problems = lint_qdq(model, fl.symmetric, float_nodes, placement)
    if fl.reduce_range and has_u8_activations(model):
        problems += saturation_problems(model)
    return problems


def _metrics(labels: np.ndarray, logits: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    from omsf2.metrics import classification_metrics

    m = classification_metrics(labels, logits, list(classes))
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "per_class_recall": m["per_class_recall"]}


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """Onnxruntime's quantization tools print progress to stdout and warn on the root logger."""
    root = logging.getLogger()
    level = root.level
    buf = io.StringIO()
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        root.setLevel(level)
        log.debug("onnxruntime quantization output: %s", buf.getvalue()[-2000:])


@dataclasses.dataclass
class _Work:
    """One quantization session: the FP32 graph on disk, its calibration cache, and the eval logits."""

    spec: QuantizeSpec
    fp32_path: str  # the graph as given (custom ops kept; tensor names match the expanded one)
    cache: str
    method: Any  # onnxruntime CalibrationMethod of the cache
    exclude: list[str]  # never quantized: non-residual Adds and keep_float layers
    fp32_logits: np.ndarray
    work: str
    where: Placement  # where the Q/DQ pairs go (onnxruntime's quantizer)
    trials: int = 0

    def write(self, fl: Flavour, out: str, extra_exclude: Sequence[str] = (), only: list[str] | None = None) -> Any:
        import onnx

        self.trials += 1
        if self.spec.quantizer is Quantizer.MODELOPT:
            _quantize_modelopt(self.fp32_path, self.spec.calib.images, self.spec.method, self.exclude, out)
        elif self.spec.quantizer is Quantizer.NNCF:
            from omsf2.export.nncf_quant import quantize_nncf

            s, fp32 = self.spec, onnx.load(self.fp32_path)
            q = quantize_nncf(fp32, s.calib.images, s.evaluation, self.fp32_logits, s.gate, self.exclude,
                              fl.gate_mode, max_float_layers(fp32, self.exclude))  # fmt: skip
            onnx.save_model(q, out)
        else:
            with _quiet_ort():
                exclude = [*self.exclude, *extra_exclude]
                _quantize_ort(self.fp32_path, fl, self.where, exclude, self.cache, self.method, out, only)
        return onnx.load(out)

    def logits(self, model: Any, mode: EvalMode, images: np.ndarray) -> np.ndarray:
        from omsf2.export.gate import session
        from omsf2.export.onnx import run_session

        return run_session(session(model, mode), images)[0]

    def gate(self, fl: Flavour, model: Any) -> dict[str, Any]:
        from omsf2.export.gate import judge, kernel_path

        ev = self.spec.evaluation
        t = time.perf_counter()
        logits = self.logits(model, fl.gate_mode, ev.images)
        rec = judge(ev.labels, self.fp32_logits, logits, self.spec.gate)
        m = _metrics(ev.labels, logits, ev.classes)
        rec.update(
            int8_accuracy=m["accuracy"],
            int8_macro_f1=m["macro_f1"],
            int8_per_class_recall=m["per_class_recall"],
            eval_mode=fl.gate_mode.value,
            kernel_path=kernel_path() if fl.gate_mode is EvalMode.ORT_INTEGER else "qdq-float (no integer kernels)",
            eval_s=time.perf_counter() - t,
        )
        return rec


def _rank(w: _Work, model: Any) -> list[dict[str, Any]]:
    from omsf2.export.sensitivity import node_groups, rank_groups, sample

    images = sample(w.spec.calib.images)
    ref = w.logits(model, EvalMode.QDQ_FLOAT, images)
    fl = FLAVOURS["int8"]
    out = os.path.join(w.work, "only.onnx")

    def only(g: Any) -> np.ndarray:
        return w.logits(w.write(fl, out, only=list(g.nodes)), fl.gate_mode, images)

    return rank_groups(node_groups(model, w.exclude), only, ref)


def _flavour(w: _Work, fl: Flavour, rank: Any) -> tuple[dict[str, Any], Path]:
    """Quantize, lint and gate one flavour; on failure search for the fewest float groups."""
    import math

    out = os.path.join(w.spec.out_dir, fl.filename)
    t = time.perf_counter()
    q = w.write(fl, out)
    float_nodes: list[str] = []
    if w.spec.quantizer is Quantizer.NNCF:
        from omsf2.export.nncf_quant import float_weight_nodes

        # Left float: NNCF's placement skips some (the SE block's), its accuracy control reverts others.
        float_nodes = [n for n in float_weight_nodes(q) if n not in w.exclude]
    rec = w.gate(fl, q)
    rec["quantize_s"] = time.perf_counter() - t
    if not rec["passed"] and w.spec.mixed_precision and w.spec.quantizer is Quantizer.ORT:
        from omsf2.export.sensitivity import fewest_float_groups

        ranking = rank()
        trial_path = os.path.join(w.work, f"trial-{fl.filename}")

        def trial(k: int) -> dict[str, Any]:
            nodes = [n for r in ranking[:k] for n in r["nodes"]]
            return w.gate(fl, w.write(fl, trial_path, nodes))

        cap = max(1, math.ceil(MAX_FLOAT_FRACTION * len(ranking)))
        k, best, tried = fewest_float_groups(len(ranking), trial, cap)
        mixed: dict[str, Any] = {"tried": tried, "max_float_groups": cap, "full_int8": _brief(rec)}
        if best is not None:
            float_nodes = [n for r in ranking[:k] for n in r["nodes"]]
            q = w.write(fl, out, float_nodes)
            rec = {**best, "quantize_s": rec["quantize_s"]}
            mixed["float_groups"] = [r["group"] for r in ranking[:k]]
        rec["mixed_precision"] = mixed
    problems = _flavour_problems(q, fl, [*w.exclude, *float_nodes], w.spec.quantizer is Quantizer.ORT)
    if problems:
        raise ValueError(f"{fl.filename} fails the Q/DQ lint: {problems[0]} ({len(problems)} problem(s))")
    rec["float_groups"] = rec.get("mixed_precision", {}).get("float_groups", [])
    if w.spec.quantizer is Quantizer.NNCF:  # NNCF reverts single Conv/Gemm nodes: name them as omsf2's groups
        import onnx

        from omsf2.export.sensitivity import node_groups

        named = {n: g.name for g in node_groups(onnx.load(w.fp32_path)) for n in g.nodes}
        rec["float_groups"] = [named.get(n, n) for n in float_nodes]
    rec["float_nodes"] = float_nodes
    rec["qdq_nodes"] = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in q.graph.node)
    if fl.gate_mode is EvalMode.ORT_INTEGER:
        # How far this CPU's integer kernels are from the graph's own arithmetic: with 7-bit weights
        # they should agree on (nearly) every image, which is what makes the gate portable.
        images = w.spec.evaluation.images
        kernels = w.logits(q, EvalMode.ORT_INTEGER, images)
        semantics = w.logits(q, EvalMode.QDQ_FLOAT, images)
        rec["kernels_vs_qdq_float_agreement"] = float((kernels.argmax(1) == semantics.argmax(1)).mean())
    return rec, Path(out)


def _brief(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in ("accuracy_drop", "top1_agreement", "passed", "failed_because")}


def _prepare(spec: QuantizeSpec) -> tuple[Any, Any, list[str], np.ndarray]:
    """(graph as given, runnable graph, never-quantized nodes, FP32 logits on the eval images)."""
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
    fp32_logits, _ = run_session(ort_session(runnable), spec.evaluation.images)
    if not np.all(np.isfinite(fp32_logits)):
        raise ValueError("the FP32 ONNX produced non-finite logits (NaN or inf) on the eval images")
    return model, runnable, exclude, fp32_logits


def _calibrate(spec: QuantizeSpec, runnable_path: str, work: str) -> tuple[str, Any, Any]:
    """The calibration cache (path), its onnxruntime method and its ranges: once for every flavour and trial."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    from omsf2.export.calibration import calibrate_ranges

    cache = os.path.join(work, "calibration.json")
    with _quiet_ort():
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


def _entry(spec: QuantizeSpec, fl: Flavour, fp32: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "file": fl.filename,
        "description": fl.description,
        "quantizer": spec.quantizer.value,
        **_method(spec),
        "weight_bits": 7 if fl.reduce_range else 8,
        "calib_count": len(spec.calib),
        "eval_count": len(spec.evaluation),
        "fp32_accuracy": fp32["accuracy"],
        "fp32_macro_f1": fp32["macro_f1"],
        "fp32_per_class_recall": fp32["per_class_recall"],
        **rec,
    }


def quantize_int8(spec: QuantizeSpec) -> QuantizeResult:
    """Calibrate, write each flavour, lint it and hold it to the FP32 ONNX on ``spec.evaluation``.

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
    model, runnable, exclude, fp32_logits = _prepare(spec)
    ev = spec.evaluation
    fp32 = _metrics(ev.labels, fp32_logits, ev.classes)
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
        w = _Work(spec, fp32_path if ort else runnable_path, cache, method, exclude, fp32_logits, work, where)
        ranking: list[dict[str, Any]] = []

        def rank() -> list[dict[str, Any]]:
            if not ranking:
                t2 = time.perf_counter()
                ranking.extend(_rank(w, runnable))
                timings["sensitivity_s"] = time.perf_counter() - t2
            return ranking

        if spec.sensitivity and ort:
            rank()
        for name in spec.flavours:
            fl = FLAVOURS[name]
            if spec.quantizer is Quantizer.MODELOPT and not fl.symmetric:
                continue  # ModelOpt writes the TensorRT (S8S8) flavour only
            if spec.quantizer is Quantizer.NNCF and fl.symmetric:
                continue  # NNCF writes the CPU (U8S8) flavour only
            rec, paths[name] = _flavour(w, fl, rank)
            report[name] = _entry(spec, fl, fp32, rec)
    timings["total_s"] = time.perf_counter() - t0
    failed = tuple(n for n, r in report.items() if not r["passed"])
    for n in failed:
        paths.pop(n).unlink(missing_ok=True)
    result = QuantizeResult(paths, report, fp32, timings, ranking or None, failed)
    if failed:
        raise GateError(gate_message(report[failed[0]], spec.mixed_precision), result)
    return result
