"""How each quantizer writes a Q/DQ graph: the INT8 flavours, onnxruntime's and ModelOpt's writers, the lint.

:mod:`omsf2.export.quantize` decides what to write and judges it; this module only writes. A
:class:`Flavour` names an artifact's quantization types and the kernels its gate runs on
(:data:`FLAVOURS`: the S8S8 TensorRT contract and the U8S8 CPU file with 7-bit weights). The
onnxruntime writer takes the placement of :mod:`omsf2.export.qdq_placement` as its own options;
the ModelOpt writer hands the same graph and images to ``modelopt.onnx.quantization``; NNCF's is
in :mod:`omsf2.export.nncf_quant`. Every written graph goes through the same lint
(:func:`lint_qdq`, :mod:`omsf2.export.qdq_rules`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import io
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from omsf2.export.calibration import CalibMethod
from omsf2.export.gate import EvalMode
from omsf2.export.qdq_placement import MODELOPT_OP_TYPES, Placement

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


def quantize_ort(
    fp32_path: str, fl: Flavour, where: Placement, exclude: list[str], cache: str, method: Any, out: str, only: Any
) -> None:
    """Write ``fl`` with onnxruntime's ``quantize_static`` from the calibration cache, placed as ``where`` says.

    ``exclude`` nodes stay float; ``only``, when given, is the one set of nodes quantized (sensitivity).
    """
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


def quantize_modelopt(fp32_path: str, images: np.ndarray, method: CalibMethod, exclude: list[str], out: str) -> None:
    """Write the S8S8 flavour with ModelOpt's ONNX PTQ, calibrated on ``images`` (``max`` or ``entropy``)."""
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


def flavour_problems(model: Any, fl: Flavour, float_nodes: list[str], placement: bool) -> list[str]:
    """The lint's findings for a written flavour, plus u8s8 saturation risks for the 7-bit CPU flavour."""
    from omsf2.export.qdq_rules import has_u8_activations, saturation_problems

    problems = lint_qdq(model, fl.symmetric, float_nodes, placement)
    if fl.reduce_range and has_u8_activations(model):
        problems += saturation_problems(model)
    return problems


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
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
