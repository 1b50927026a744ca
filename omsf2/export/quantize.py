"""FP32 ONNX -> INT8 Q/DQ ONNX: calibrate once, quantize two flavours, lint, and gate on accuracy.

Flavours, both calibrated on the same images and both gated:

- ``int8`` (``model.int8.onnx``), the TensorRT contract: S8S8, symmetric (zero points 0),
  per-channel weights, per-tensor activations, Q/DQ on both inputs of residual Adds so TensorRT
  fuses them into the preceding Conv. onnxruntime on a CPU runs this graph slowly; that says
  nothing about TensorRT.
- ``int8_cpu`` (``model.int8-cpu.onnx``): U8S8 (asymmetric uint8 activations) for onnxruntime's
  CPU kernels.

What is quantized, and why: Conv and Gemm (the compute), plus the residual Adds (an Add fed by a
Conv whose result goes to a Relu: ResNet blocks and DPPM). Everything else stays in float: the
CAM sigmoid maps and scale fusion (attention multiplies features, small errors compound), and
the BAP branch's Einsum, signed sqrt and L2 normalisation, whose output range depends on the
image. Activation ranges are computed once (:func:`calibrate_ranges`) and reused for both
flavours through onnxruntime's calibration cache, so the two flavours see identical ranges.

Calibration methods: ``percentile`` (onnxruntime's, 99.999th of |x|; the default), ``max``
(min/max), ``entropy`` and ``mse``. Why percentile: on the cxr-real checkpoint (512 calibration
images, 150 val images) the S8S8 flavour lost 2.0 accuracy points with ``max`` (98.0 % top-1
agreement), 2.0 with ``entropy``, 0.67 with ``mse`` and 0.0 with ``percentile`` (98.7 %);
keeping Conv groups (stem, SE, SPP/DPPM, CAM, BAP, heads) in float moved ``max`` by at most one
image, so the loss is the range, not one layer. ``mse`` picks, per tensor, the symmetric
clipping threshold minimising the expected squared quantization error over the |x| histogram
(onnxruntime has no MSE calibrator). In an earlier probe here entropy kept only 61 % agreement.

``quantizer="modelopt"`` hands the same FP32 graph and calibration images to NVIDIA ModelOpt's
``modelopt.onnx.quantization.quantize`` (TensorRT-oriented Q/DQ placement, ``max`` or
``entropy``). ModelOpt replaces onnxruntime with onnxruntime-gpu and pins onnx, so it is used only
where it is importable, in its own environment; the gate and lint are the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import io
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.config import parse_enum
from omsf2.export.calibration import ImageSet

log = logging.getLogger(__name__)

OP_TYPES = ("Conv", "Gemm", "Add")
PERCENTILE = 99.999
MSE_BINS = 2048


class CalibMethod(str, enum.Enum):
    """How activation ranges are chosen from the calibration images."""

    MAX = "max"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"
    MSE = "mse"


class Quantizer(str, enum.Enum):
    """Which tool inserts the Q/DQ nodes."""

    ORT = "ort"
    MODELOPT = "modelopt"


@dataclasses.dataclass(frozen=True)
class Flavour:
    """One INT8 artifact: file name and quantization types."""

    name: str
    filename: str
    activation: str  # onnxruntime QuantType name
    symmetric: bool
    description: str


FLAVOURS = {
    "int8": Flavour("int8", "model.int8.onnx", "QInt8", True, "S8S8 symmetric Q/DQ: the TensorRT contract"),
    "int8_cpu": Flavour("int8_cpu", "model.int8-cpu.onnx", "QUInt8", False, "U8S8 Q/DQ for onnxruntime on CPU"),
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
        max_drop: accuracy points (0-100 scale) a flavour may lose against FP32 ONNX; negative
            demands a gain.
        quantizer: ``ort`` (default) or ``modelopt``.
        flavours: names from :data:`FLAVOURS`.
        keep_float: module-path prefixes (matched against Conv/Gemm weight names) kept in float.
    """

    onnx_path: str
    out_dir: str
    calib: ImageSet = dataclasses.field(repr=False)
    evaluation: ImageSet = dataclasses.field(repr=False)
    method: CalibMethod = CalibMethod.PERCENTILE
    max_drop: float = 1.0
    quantizer: Quantizer = Quantizer.ORT
    flavours: tuple[str, ...] = ("int8", "int8_cpu")
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", parse_enum(CalibMethod, self.method, "calibration method"))
        object.__setattr__(self, "quantizer", parse_enum(Quantizer, self.quantizer, "quantizer"))
        if not math.isfinite(self.max_drop):
            raise ValueError(f"--max-drop must be a finite number of accuracy points, got {self.max_drop!r}")
        unknown = [f for f in self.flavours if f not in FLAVOURS]
        if unknown or not self.flavours:
            raise ValueError(f"invalid INT8 flavour(s) {unknown}; choose from {', '.join(FLAVOURS)}")
        if self.quantizer is Quantizer.MODELOPT and self.method not in (CalibMethod.MAX, CalibMethod.ENTROPY):
            raise ValueError(f"--quantizer modelopt calibrates with max or entropy, not {self.method.value!r}")


@dataclasses.dataclass(frozen=True)
class QuantizeResult:
    """Paths and the gate's numbers, per flavour (``report[flavour]`` has the report.json keys)."""

    paths: dict[str, Path]
    report: dict[str, dict[str, Any]]
    fp32: dict[str, Any]
    timings: dict[str, float]


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


class _Reader:
    """onnxruntime CalibrationDataReader over preprocessed images (batches of 16)."""

    def __init__(self, images: np.ndarray, input_name: str) -> None:
        self.images = images
        self.input_name = input_name
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.images):
            return None
        batch = self.images[self.pos : self.pos + 16]
        self.pos += 16
        return {self.input_name: np.ascontiguousarray(batch)}

    def __len__(self) -> int:
        return math.ceil(len(self.images) / 16)


def _mse_threshold(hist: np.ndarray, edges: np.ndarray, levels: int = 127) -> float:
    """Clipping threshold T over a histogram of |x| minimising E[(x - q(x))^2] for scale T / levels."""
    centers = (edges[:-1] + edges[1:]) / 2
    weights = hist.astype(np.float64)
    best_t, best_err = float(edges[-1]), math.inf
    for k in range(max(1, len(edges) // 64), len(edges), max(1, len(edges) // 256)):
        t = float(edges[k])
        if t <= 0:
            continue
        step = t / levels
        inside = centers <= t
        err = np.sum(weights[inside]) * step * step / 12 + np.sum(weights[~inside] * (centers[~inside] - t) ** 2)
        if err < best_err:
            best_t, best_err = t, float(err)
    return best_t


def calibrate_ranges(model_path: str, images: np.ndarray, method: CalibMethod, work: str) -> Any:
    """Run onnxruntime's calibrator once; returns its ``TensorsData`` (MSE computed here from histograms)."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorData,
        TensorsData,
        create_calibrator,
    )

    ort_method = {
        CalibMethod.MAX: CalibrationMethod.MinMax,
        CalibMethod.ENTROPY: CalibrationMethod.Entropy,
        CalibMethod.PERCENTILE: CalibrationMethod.Percentile,
        CalibMethod.MSE: CalibrationMethod.Percentile,  # collects the symmetric |x| histograms we need
    }[method]
    # Signed histograms: a post-ReLU tensor keeps its [0, T] range for the uint8 flavour; the
    # S8S8 flavour symmetrises it to [-T, T] in the quantizer anyway.
    extra: dict[str, Any] = {"percentile": PERCENTILE, "symmetric": False} if method is CalibMethod.PERCENTILE else {}
    if method is CalibMethod.MSE:
        extra = {"symmetric": True, "num_bins": MSE_BINS}
    calibrator = create_calibrator(
        Path(model_path),
        list(OP_TYPES),
        augmented_model_path=os.path.join(work, "augmented.onnx"),
        calibrate_method=ort_method,
        extra_options=extra,
    )
    calibrator.collect_data(_Reader(images, "image"))
    if method is not CalibMethod.MSE:
        return calibrator.compute_data()
    data = {}
    for name, (hist, edges, lo, hi) in calibrator.collector.histogram_dict.items():
        t = _mse_threshold(np.asarray(hist), np.asarray(edges))
        data[name] = TensorData(lowest=np.float32(max(float(lo), -t)), highest=np.float32(min(float(hi), t)))
    return TensorsData(CalibrationMethod.Percentile, data)


def _quantize_ort(
    fp32: Any, flavour: Flavour, exclude: list[str], cache: str, method: Any, out: str, work: str
) -> None:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src = os.path.join(work, "fp32-for-quant.onnx")
    onnx.save_model(fp32, src)
    quantize_static(
        src,
        out,
        calibration_data_reader=None,
        calibration_cache_path=cache,
        calibrate_method=method,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(OP_TYPES),
        nodes_to_exclude=exclude,
        per_channel=True,
        reduce_range=False,
        activation_type=getattr(QuantType, flavour.activation),
        weight_type=QuantType.QInt8,
        extra_options={
            "ActivationSymmetric": flavour.symmetric,
            "WeightSymmetric": True,
            # Keep Relu explicit: TensorRT and the lint want the float graph's structure intact.
            "QDQKeepRemovableActivations": flavour.symmetric,
            # TensorRT's parser rejects int32 bias Q/DQ (onnx/onnx-tensorrt#850) and quantizes the
            # float bias itself; onnxruntime's QLinearConv wants it int32.
            "QuantizeBias": not flavour.symmetric,
        },
    )


def _quantize_modelopt(fp32_path: str, images: np.ndarray, method: CalibMethod, exclude: list[str], out: str) -> None:
    from modelopt.onnx.quantization import quantize

    quantize(
        onnx_path=fp32_path,
        quantize_mode="int8",
        calibration_data={"image": images},
        calibration_method=method.value,
        calibration_eps=["cpu"],
        op_types_to_quantize=list(OP_TYPES),
        nodes_to_exclude=exclude,
        high_precision_dtype="fp32",
        output_path=out,
    )


def lint_qdq(model: Any, symmetric: bool, float_nodes: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Structural problems of a Q/DQ graph (empty when clean).

    Checks: every Conv/Gemm weight comes through a DequantizeLinear; every Q/DQ scale is finite
    and positive; with ``symmetric``, every zero point is 0 (weight zero points always are).
    ``float_nodes`` names the Conv/Gemm nodes deliberately kept in float.
    """
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    problems = []
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm") and n.name not in float_nodes:
            w = producers.get(n.input[1])
            if w is None or w.op_type != "DequantizeLinear":
                problems.append(f"{n.op_type} {n.name!r}: weight {n.input[1]!r} has no Q/DQ")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = inits.get(n.input[1])
            if scale is None or not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
                problems.append(f"{n.op_type} {n.name!r}: scale missing, non-finite or not positive")
            zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            is_weight = n.op_type == "DequantizeLinear" and n.input[0] in inits
            if (symmetric or is_weight) and zp is not None and np.any(zp != 0):
                problems.append(f"{n.op_type} {n.name!r}: zero point {zp.ravel()[:4].tolist()} is not 0")
            if symmetric and zp is not None and zp.dtype == np.uint8:  # int32 is the bias's type
                problems.append(f"{n.op_type} {n.name!r}: zero point type uint8 in an S8S8 graph")
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


def quantize_int8(spec: QuantizeSpec) -> QuantizeResult:
    """Calibrate, write each flavour, lint it and hold it to the FP32 ONNX on ``spec.evaluation``.

    Raises:
        ValueError: ModelOpt requested but not importable, a lint failure, or a flavour that loses
            more than ``spec.max_drop`` accuracy points (the message names the method and numbers).
    """
    import onnx
    from onnxruntime.quantization.calibrate import save_tensors_data

    from omsf2.export.custom_ops import expand_plugins, has_plugins
    from omsf2.export.onnx import ort_session, run_session

    if spec.quantizer is Quantizer.MODELOPT and (reason := modelopt_unavailable_reason()):
        raise ValueError(reason)
    t0 = time.perf_counter()
    model = onnx.load(spec.onnx_path)
    runnable = expand_plugins(model) if has_plugins(model) else model
    _, other_adds = residual_adds(runnable)
    exclude = other_adds + [
        n.name
        for n in runnable.graph.node
        if n.op_type in ("Conv", "Gemm") and any(n.input[1].startswith(p) for p in spec.keep_float)
    ]
    ev = spec.evaluation
    fp32_logits, _ = run_session(ort_session(runnable), ev.images)
    fp32 = _metrics(ev.labels, fp32_logits, ev.classes)
    paths: dict[str, Path] = {}
    report: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="omsf2-quant-") as work:
        runnable_path = os.path.join(work, "fp32.onnx")
        onnx.save_model(runnable, runnable_path)
        cache = os.path.join(work, "calibration.json")
        t1 = time.perf_counter()
        if spec.quantizer is Quantizer.ORT:
            with _quiet_ort():
                ranges = calibrate_ranges(runnable_path, spec.calib.images, spec.method, work)
            save_tensors_data(ranges, cache)
            timings["calibrate_s"] = time.perf_counter() - t1
        for name in spec.flavours:
            fl = FLAVOURS[name]
            out = os.path.join(spec.out_dir, fl.filename)
            t2 = time.perf_counter()
            if spec.quantizer is Quantizer.ORT:
                # The custom-op graph itself is quantized (its tensor names match the expanded one's).
                with _quiet_ort():
                    _quantize_ort(model, fl, exclude, cache, ranges.calibration_method, out, work)
            else:
                if not fl.symmetric:
                    continue  # ModelOpt writes the TensorRT (S8S8) flavour only
                with _quiet_ort():
                    _quantize_modelopt(runnable_path, spec.calib.images, spec.method, exclude, out)
            q = onnx.load(out)
            problems = lint_qdq(q, fl.symmetric, exclude)
            if problems:
                raise ValueError(f"{fl.filename} fails the Q/DQ lint: {problems[0]} ({len(problems)} problem(s))")
            t3 = time.perf_counter()
            logits, _ = run_session(ort_session(q), ev.images)
            t4 = time.perf_counter()
            m = _metrics(ev.labels, logits, ev.classes)
            drop = 100.0 * (fp32["accuracy"] - m["accuracy"])
            report[name] = {
                "file": fl.filename,
                "description": fl.description,
                "quantizer": spec.quantizer.value,
                "method": spec.method.value,
                "calib_count": len(spec.calib),
                "eval_count": len(ev),
                "fp32_accuracy": fp32["accuracy"],
                "int8_accuracy": m["accuracy"],
                "accuracy_drop": drop,
                "max_drop": spec.max_drop,
                "top1_agreement": float((logits.argmax(1) == fp32_logits.argmax(1)).mean()),
                "fp32_macro_f1": fp32["macro_f1"],
                "int8_macro_f1": m["macro_f1"],
                "fp32_per_class_recall": fp32["per_class_recall"],
                "int8_per_class_recall": m["per_class_recall"],
                "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in q.graph.node),
                "quantize_s": t3 - t2,
                "eval_s": t4 - t3,
            }
            paths[name] = Path(out)
    timings["total_s"] = time.perf_counter() - t0
    failed = [(n, r) for n, r in report.items() if r["accuracy_drop"] > spec.max_drop]
    if failed:
        name, r = failed[0]
        raise ValueError(
            f"INT8 accuracy gate failed for {r['file']} (calibration method {r['method']!r}, {r['calib_count']} "
            f"images): accuracy {100 * r['int8_accuracy']:.2f}% vs FP32 {100 * r['fp32_accuracy']:.2f}% on "
            f"{r['eval_count']} eval images, a drop of {r['accuracy_drop']:.2f} points > --max-drop "
            f"{spec.max_drop:g} (top-1 agreement {100 * r['top1_agreement']:.1f}%); try --calib-method max or "
            "more --calib-count"
        )
    return QuantizeResult(paths, report, fp32, timings)
