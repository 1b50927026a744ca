"""Where the Q/DQ pairs go, per INT8 flavour: after the ReLU, and through the neck in INT8.

Everything here is decided on the FP32 graph and handed to onnxruntime's ``quantize_static`` as
its own options (``op_types_to_quantize``, ``nodes_to_exclude`` and ``extra_options``), so that the
library places the pairs; one exact clean-up (:func:`drop_identity_concat_qdq`) is ours.

- **After the ReLU.** Relu is a quantized op type. For the asymmetric U8S8 flavour onnxruntime
  removes a Relu whose input it quantizes and gives the producer's output the Relu's range
  (zero point 0, the full uint8 range for the positive half), so its CPU optimiser fuses
  ``DQ -> Conv -> Q`` into one ``QLinearConv`` and ``QLinearAdd`` absorbs the block's ReLU. For the
  symmetric S8S8 flavour (TensorRT) Conv, Gemm and Add outputs are not quantized
  (``OpTypesToExcludeOutputQuantization``), so the only pair sits on the ReLU output where the
  next layer reads it: TensorRT fuses Conv (+ residual Add) + ReLU itself and wants no pair in
  between, and OpenVINO fuses Conv + ReLU + FakeQuantize into one INT8 convolution.
- **The neck in INT8.** MaxPool, Resize and Concat whose every consumer is INT8 (a quantized
  Conv/Gemm, a residual Add or another such node) are quantized, with ``ForceQuantizeNoInputCheck``
  so that the library does not skip them for an input it has not marked yet. MaxPool and Resize
  reuse their input's scale (onnxruntime's ``quantize_output_same_as_input``: the runtimes move
  int8 through them), and every input and the output of such a Concat share one range, the union
  of their calibrated ranges (``TensorQuantOverrides`` ``rmin``/``rmax``), so that a Concat moves
  int8 without requantizing (onnxruntime ``QLinearConcat``, OpenVINO's int8 Concat, TensorRT's
  Q/DQ propagation through Concat, which needs equal scales). Nodes outside that region (the
  attention path's Resize, shape Concats) stay float.
- In the S8S8 graph a Concat whose inputs all come from DequantizeLinear with the output's own
  scale and zero point needs no pair on its output: re-quantizing int8 values with the scale they
  already have is the identity. :func:`drop_identity_concat_qdq` removes that pair, because
  OpenVINO's low-precision pass keeps a Concat and the convolution after it in f32 when the pair
  is there, and in int8 when it is not.

The trade-off: one shared Concat range is as wide as its widest input, so a narrow input loses
resolution; the accuracy gate measures what that costs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

COMPUTE = ("Conv", "Gemm")
MOVEMENT = ("MaxPool", "Resize", "Concat")
# Op types onnxruntime quantizes in both flavours (non-residual Adds and nodes outside the int8
# neck are excluded by name); the calibration covers the same ones.
OP_TYPES = (*COMPUTE, "Add", "Relu", *MOVEMENT)
# ModelOpt places its own Q/DQ around these (it knows Concat, pooling and Resize itself).
MODELOPT_OP_TYPES = (*COMPUTE, "Add")
_SHAPE_OPS = frozenset({"Shape", "Constant", "ConstantOfShape", "Size"})


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one graph's Q/DQ pairs go.

    Attributes:
        op_types: ``op_types_to_quantize``.
        exclude: node names never quantized (with the caller's own exclusions added).
        int8_nodes: MaxPool / Resize / Concat nodes kept in INT8.
        shared_ranges: tensor -> (rmin, rmax) shared by every tensor of one Concat group.
    """

    op_types: tuple[str, ...]
    exclude: tuple[str, ...]
    int8_nodes: tuple[str, ...]
    shared_ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    def extra_options(self, symmetric: bool) -> dict[str, Any]:
        """Onnxruntime ``extra_options`` for the S8S8 (``symmetric``) or the U8S8 flavour."""
        opts: dict[str, Any] = {
            "ActivationSymmetric": symmetric,
            "WeightSymmetric": True,
            # S8S8 keeps Relu in the graph (TensorRT and OpenVINO fuse it); U8S8 folds it into the
            # producer's output range so that onnxruntime's QLinearConv / QLinearAdd clamp at 0.
            "QDQKeepRemovableActivations": symmetric,
            # TensorRT's parser rejects int32 bias Q/DQ (onnx/onnx-tensorrt#850) and quantizes the
            # float bias itself; onnxruntime's QLinearConv wants it int32.
            "QuantizeBias": not symmetric,
            "ForceQuantizeNoInputCheck": True,
        }
        if symmetric:
            opts["OpTypesToExcludeOutputQuantization"] = [*COMPUTE, "Add"]
        if self.shared_ranges:
            opts["TensorQuantOverrides"] = {
                t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in self.shared_ranges.items()
            }
        return opts


class _Graph:
    """Producer / consumer maps of an ONNX graph."""

    def __init__(self, model: Any) -> None:
        self.nodes = list(model.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {i.name for i in model.graph.initializer}

    def is_shape_concat(self, node: Any) -> bool:
        """A Concat of shape values (Shape outputs, constants), not of feature maps."""
        srcs = [self.producer.get(i) for i in node.input if i]
        return any(i in self.inits for i in node.input) or any(p is not None and p.op_type in _SHAPE_OPS for p in srcs)


def int8_movement_nodes(model: Any, float_adds: Iterable[str]) -> list[str]:
    """MaxPool / Resize / Concat nodes whose every consumer is INT8 (recursively), in graph order.

    Args:
        model: the FP32 ``ModelProto``.
        float_adds: Add nodes that stay float (everything but residual Adds).
    """
    g = _Graph(model)
    floats = set(float_adds)
    memo: dict[str, bool] = {}

    def feeds_int8(tensor: str) -> bool:
        if tensor in memo:
            return memo[tensor]
        memo[tensor] = False  # cycles cannot happen in ONNX; this also bounds the recursion
        users = g.consumers.get(tensor, [])
        ok = bool(users) and all(_int8_consumer(u, tensor) for u in users)
        memo[tensor] = ok
        return ok

    def _int8_consumer(node: Any, tensor: str) -> bool:
        if node.op_type in COMPUTE:
            return node.input[0] == tensor
        if node.op_type == "Add":
            return node.name not in floats
        if node.op_type == "Shape":
            return True  # reads the shape only
        if node.op_type in ("MaxPool", "Resize") and node.input[0] == tensor:
            return feeds_int8(node.output[0])
        if node.op_type == "Concat" and not g.is_shape_concat(node):
            return feeds_int8(node.output[0])
        return False

    return [
        n.name
        for n in g.nodes
        if n.op_type in MOVEMENT and not (n.op_type == "Concat" and g.is_shape_concat(n)) and feeds_int8(n.output[0])
    ]


def concat_groups(model: Any, int8_nodes: Sequence[str]) -> list[list[str]]:
    """Tensors that must share one scale, one list per group.

    A group is an INT8 Concat's output and inputs, traced back through INT8 MaxPool / Resize
    (which reuse their input's scale); groups that share a tensor merge.
    """
    g = _Graph(model)
    keep = set(int8_nodes)
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.setdefault(t, t) != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for n in g.nodes:
        if n.op_type != "Concat" or n.name not in keep:
            continue
        stack = [i for i in n.input if i]
        while stack:
            t = stack.pop()
            parent[find(t)] = find(n.output[0])
            p = g.producer.get(t)
            if p is not None and p.name in keep and p.op_type in ("MaxPool", "Resize"):
                stack.append(p.input[0])
    groups: dict[str, list[str]] = {}
    for t in list(parent):
        groups.setdefault(find(t), []).append(t)
    return [sorted(v) for v in groups.values() if len(v) > 1]


def plan(model: Any, float_adds: Sequence[str], ranges: Any | None = None) -> Placement:
    """The placement for ``model`` (the graph that is quantized).

    Args:
        model: the FP32 ``ModelProto``.
        float_adds: Add nodes that stay float.
        ranges: onnxruntime ``TensorsData`` of the calibration (None: no shared Concat ranges).
    """
    int8 = int8_movement_nodes(model, float_adds)
    keep = set(int8)
    outside = [n.name for n in model.graph.node if n.op_type in MOVEMENT and n.name not in keep]
    shared: dict[str, tuple[float, float]] = {}
    if ranges is not None:
        for group in concat_groups(model, int8):
            known = [ranges[t].range_value for t in group if t in ranges]
            if not known:
                continue
            lo = min(float(np.min(r[0])) for r in known)
            hi = max(float(np.max(r[1])) for r in known)
            shared.update(dict.fromkeys(group, (lo, hi)))
    return Placement(OP_TYPES, (*float_adds, *outside), tuple(int8), shared)


def drop_identity_concat_qdq(model: Any) -> list[str]:
    """Remove the Q/DQ pair on a Concat output when it is the identity; returns the Concats changed.

    The pair is the identity when every Concat input comes from a DequantizeLinear with the same
    constant scale and zero point as the output's QuantizeLinear, and that pair has no other
    consumer: int8 values re-quantized with the scale they already carry are unchanged.
    """
    from omsf2.export.qdq_rules import constants, same_qparams

    g = _Graph(model)
    consts = constants(model)
    drop: set[str] = set()
    rename: dict[str, str] = {}
    outputs = {o.name for o in model.graph.output}
    changed = []
    for n in g.nodes:
        users = g.consumers.get(n.output[0], []) if n.op_type == "Concat" else []
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            continue
        q = users[0]
        dqs = g.consumers.get(q.output[0], [])
        srcs = [g.producer.get(i) for i in n.input]
        if len(dqs) != 1 or dqs[0].op_type != "DequantizeLinear" or dqs[0].output[0] in outputs:
            continue
        if not all(p is not None and p.op_type == "DequantizeLinear" and same_qparams(p, q, consts) for p in srcs):
            continue
        drop |= {q.name, dqs[0].name}
        rename[dqs[0].output[0]] = n.output[0]
        changed.append(n.name)
    if not changed:
        return []
    kept = [n for n in g.nodes if n.name not in drop]
    for n in kept:
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return changed
