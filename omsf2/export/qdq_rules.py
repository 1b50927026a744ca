"""The one set of Q/DQ rules: what a QuantizeLinear/DequantizeLinear pair may look like, per consumer.

Three consumers read INT8 graphs, and each needs a different subset of the same rules:

- the **lint** after quantization (:func:`lint_problems`): every Conv/Gemm weight comes through a
  DequantizeLinear (unless deliberately kept in float), every scale is finite and positive, weight
  zero points are 0, and in a symmetric (S8S8) graph every zero point is an int8 0;
- **TensorRT's ONNX parser** (:func:`tensorrt_problem`, used by ``parser_support``): a constant int8 zero
  point of 0 on every Q/DQ, no int32 bias DequantizeLinear (onnx/onnx-tensorrt#850);
- the **placement** (:func:`placement_problems`, part of the lint): no Q/DQ pair between a
  Conv/Gemm and the Relu after it (the pair belongs on the Relu output, where the runtimes fuse
  Conv + ReLU), and every Concat whose inputs are all dequantized shares one scale and zero point
  across its inputs (and its output pair, when it has one), so it moves int8 unchanged;
- **onnxruntime's u8s8 CPU kernels** (:func:`saturation_problems`): on x86 CPUs with AVX2 or
  AVX-512 but without VNNI, the u8 x s8 dot product goes through ``vpmaddubsw``, which adds two
  u8·s8 products into a saturating int16. With full-range int8 weights, 255·127 + 255·127 =
  64,770 overflows 32,767, so the same graph answers differently on such a CPU and on a VNNI one.
  Weights in the 7-bit range [-64, 64] (onnxruntime's ``reduce_range``) keep every pair within
  255·128 = 32,640, so integer kernels are exact on every x86 CPU.

The rules read constants through :func:`constants`, which also sees ``Constant`` nodes (zero
points often become those after export or simplification). Trade-off: the rules are structural,
so they prove the graph is well-formed for its consumer, never that it is accurate; the accuracy
gate does that.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
WEIGHT_OPS = frozenset({"Conv", "Gemm"})
# u8 activations (0..255) times s8 weights, two products per int16 lane of vpmaddubsw.
U8_MAX = 255
INT16_MAX = 32767
# The widest symmetric weight range whose pairs cannot overflow: 2 * 255 * 64 = 32,640.
SAFE_WEIGHT_ABS = 64


def constants(model: Any) -> dict[str, Any]:
    """Name -> ``TensorProto`` of every initializer and ``Constant`` node output of the main graph."""
    found = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = node.attribute[0].t
    return found


def _array(t: Any) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(t)


def scale_problem(node: Any, consts: dict[str, Any]) -> str | None:
    """A Q/DQ scale that is missing (not constant), non-finite or not positive."""
    scale = consts.get(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        return "scale missing or not a constant"
    s = _array(scale)
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        return "scale non-finite or not positive"
    return None


def tensorrt_problem(node: Any, consts: dict[str, Any]) -> str | None:
    """Why TensorRT's parser would reject this Q/DQ node's zero point (None when it accepts it)."""
    import onnx

    if len(node.input) < 3 or not node.input[2]:
        # ONNX's default zero point is uint8, which TensorRT only accepts as network I/O.
        return "no zero point (ONNX defaults to uint8; TensorRT needs an int8 zero point of 0)"
    zp = consts.get(node.input[2])
    if zp is None:
        return "zero point is computed at run time; TensorRT needs a constant 0"
    allowed = {onnx.TensorProto.INT8}
    if node.op_type == "DequantizeLinear":  # FP8/INT4 weights dequantize too (docs: INT8, FP8, INT4)
        allowed |= {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.INT4}
    if zp.data_type == onnx.TensorProto.INT32:
        # onnxruntime's quantize_static quantizes Conv/Gemm biases to int32 by default; TensorRT rejects
        # that DequantizeLinear ("only activation types allowed as input": onnx/onnx-tensorrt#850,
        # NVIDIA/TensorRT#3360). Keep biases float: extra_options={"QuantizeBias": False}.
        return "zero point type INT32 (int32 bias Q/DQ; TensorRT needs float biases: QuantizeBias=False)"
    if zp.data_type not in allowed:
        return f"zero point type {onnx.TensorProto.DataType.Name(zp.data_type)} (TensorRT needs INT8)"
    if _array(zp).astype("float64").any():
        return "non-zero zero point (TensorRT quantization is symmetric)"
    return None


def _zero_point_problems(node: Any, consts: dict[str, Any], symmetric: bool) -> list[str]:
    zp_t = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zp_t is None:
        return []
    zp = _array(zp_t)
    is_weight = node.op_type == "DequantizeLinear" and node.input[0] in consts
    problems = []
    if (symmetric or is_weight) and np.any(zp != 0):
        problems.append(f"zero point {zp.ravel()[:4].tolist()} is not 0")
    if symmetric and zp.dtype == np.uint8:  # int32 is the bias's type
        problems.append("zero point type uint8 in an S8S8 graph")
    return problems


def same_qparams(a: Any, b: Any, consts: dict[str, Any]) -> bool:
    """Whether two Q/DQ nodes have equal constant scales and zero points (absent zero points are equal)."""

    def params(n: Any) -> list[np.ndarray | None]:
        names = [n.input[1] if len(n.input) > 1 else "", n.input[2] if len(n.input) > 2 else ""]
        return [_array(consts[x]) if x in consts else None for x in names]

    (sa, za), (sb, zb) = params(a), params(b)
    if sa is None or sb is None or not np.array_equal(sa, sb):
        return False
    if za is None or zb is None:
        return za is None and zb is None
    return za.dtype == zb.dtype and np.array_equal(za, zb)


def placement_problems(model: Any) -> list[str]:
    """Q/DQ pairs placed where they stop the runtimes' int8 fusions (empty when none).

    - a QuantizeLinear on a Conv/Gemm output whose DequantizeLinear feeds a Relu: the pair
      belongs after the Relu;
    - a Concat whose inputs are all DequantizeLinear outputs but with different scales or zero
      points (or a different pair on its output): it would requantize instead of moving int8.
    """
    consts = constants(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    problems = []
    for n in model.graph.node:
        src = producers.get(n.input[0]) if n.input else None
        if n.op_type == "QuantizeLinear" and src is not None and src.op_type in WEIGHT_OPS:
            dqs = [c for c in consumers.get(n.output[0], []) if c.op_type == "DequantizeLinear"]
            if any(c.op_type == "Relu" for dq in dqs for c in consumers.get(dq.output[0], [])):
                problems.append(f"{src.op_type} {src.name!r}: Q/DQ between it and its Relu (quantize the Relu output)")
        if n.op_type == "Concat":
            ins = [producers.get(i) for i in n.input if i]
            if not ins or not all(p is not None and p.op_type == "DequantizeLinear" for p in ins):
                continue
            outs = [c for c in consumers.get(n.output[0], []) if c.op_type == "QuantizeLinear"]
            if not all(same_qparams(ins[0], other, consts) for other in [*ins[1:], *outs]):
                problems.append(f"Concat {n.name!r}: inputs (and output) quantized with different scales")
    return problems


def lint_problems(model: Any, symmetric: bool, float_nodes: Iterable[str] = (), placement: bool = True) -> list[str]:
    """Structural problems of a Q/DQ graph written by the quantizer (empty when clean).

    Includes :func:`placement_problems`.

    Args:
        model: the Q/DQ ``ModelProto``.
        symmetric: the S8S8 contract (every zero point an int8 0).
        float_nodes: Conv/Gemm node names deliberately kept in float.
        placement: also check :func:`placement_problems` (our quantizer's placement; ModelOpt has its own).
    """
    consts = constants(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    keep = set(float_nodes)
    problems = []
    for n in model.graph.node:
        if n.op_type in WEIGHT_OPS and n.name not in keep:
            w = producers.get(n.input[1])
            if w is None or w.op_type != "DequantizeLinear":
                problems.append(f"{n.op_type} {n.name!r}: weight {n.input[1]!r} has no Q/DQ")
        if n.op_type in QDQ_OPS:
            scale = scale_problem(n, consts)
            for why in ([scale] if scale else []) + _zero_point_problems(n, consts, symmetric):
                problems.append(f"{n.op_type} {n.name!r}: {why}")
    return problems + (placement_problems(model) if placement else [])


def weight_pair_peak(w: np.ndarray) -> int:
    """Largest |w_a| + |w_b| over any two int8 weights of one output channel (the worst vpmaddubsw pair).

    The kernel's packing decides which two weights share an int16 lane; the bound over any pair
    holds whatever the packing.
    """
    flat = np.abs(np.asarray(w, np.int64).reshape(w.shape[0], -1)) if w.ndim > 1 else np.abs(w[None])
    if flat.shape[1] < 2:
        return int(flat.max(initial=0))
    top2 = np.sort(flat, axis=1)[:, -2:]
    return int(top2.sum(axis=1).max(initial=0))


def saturation_problems(model: Any) -> list[str]:
    """Conv/Gemm nodes whose u8 x s8 int16 pair sums can saturate on AVX2/AVX-512 CPUs without VNNI.

    Only graphs with uint8 activations reach that kernel path with these weights; the caller
    decides whether the graph is such a one (:func:`has_u8_activations`).
    """
    consts = constants(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    problems = []
    for n in model.graph.node:
        if n.op_type not in WEIGHT_OPS or len(n.input) < 2:
            continue
        dq = producers.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in consts:
            continue
        w = _array(consts[dq.input[0]])
        if w.dtype != np.int8:
            continue
        peak = weight_pair_peak(w)
        if U8_MAX * peak > INT16_MAX:
            problems.append(
                f"{n.op_type} {n.name!r}: int8 weights up to a pair sum of {peak} overflow int16 "
                f"({U8_MAX}·{peak} > {INT16_MAX}) in u8s8 kernels without VNNI; quantize with reduce_range"
            )
    return problems


def has_u8_activations(model: Any) -> bool:
    """Whether any QuantizeLinear of the graph produces uint8 (the u8s8 CPU kernel path)."""
    consts = constants(model)
    for n in model.graph.node:
        zp = consts.get(n.input[2]) if n.op_type == "QuantizeLinear" and len(n.input) > 2 else None
        if zp is not None and _array(zp).dtype == np.uint8:
            return True
    return False
