"""The table of ops TensorRT's ONNX parser supports (TensorRT 10.3 and 11.x), and a checker against it.

The tables transcribe onnx-tensorrt's ``docs/operators.md`` ("Supported ONNX Operators"). Only the
revisions below were readable here, so the two tables are derived from them and the changelog;
recheck them against the ``release/10.3`` and ``release/11.x`` branches when those are at hand:

* **10.3** (JetPack 6): the TensorRT 10.6 revision of ``docs/operators.md`` (onnx/onnx-tensorrt
  commit ``0137504e2b25fe5253bd85d26b073378fb67805b``) minus what ``docs/Changelog.md`` at the same
  commit says arrived after 10.3 (``BlackmanWindow``/``HammingWindow``/``HannWindow`` in 10.4,
  ``STFT`` in 10.5). Opset range 9..20: the TensorRT 10.0 header ("inclusive range of opset 9 to
  opset 20"); the 10.6 header says 9..22 after the ONNX 1.17 submodule bump, so 20 is the bound
  that is documented for 10.3.
* **11.x**: the TensorRT 10.15 revision of ``docs/operators.md`` (opset 9..24; adds ``Attention``,
  ``RMSNormalization``, ``RotaryEmbedding``, ``TensorScatter``), the newest one readable here.
  TensorRT 11 removed builder flags and calibrators, not parser ops (NVIDIA's "Migrating from
  TensorRT 10.x to 11.x" lists no removed ONNX operator).

Trade-off: a static table can lag the parser, but it lets a CPU-only CI prove, before a GPU ever
sees the graph, that every node type (and the few attributes that matter for OMSF2: Q/DQ zero
points and types, Resize modes, pooling rank/dilations) is one the parser documents. It proves
nothing about kernels TensorRT then picks. Custom ops of domain ``omsf2`` (the fused kernels'
TensorRT plugins) count as supported only when the caller declares the plugin library.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omsf2.op_contract import CUSTOM_OPS as OMSF2_CUSTOM_OPS
from omsf2.op_contract import DOMAIN as OMSF2_DOMAIN
from omsf2.op_contract import TRT_PLUGIN_ATTRS
from omsf2.runtime.engine_manifest import parse_trt_version

if TYPE_CHECKING:
    import onnx

# Everything marked "Y" in the TensorRT 10.6 revision of docs/operators.md (commit 0137504e).
_TABLE_10_6 = """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos
    Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand
    EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
    GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow
    HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
    LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
    MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
    OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
    RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
    ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
    ReverseSequence RNN RoiAlign Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu
    Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
    Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
"""
_OPS_10_6 = frozenset(_TABLE_10_6.split())
# Changelog: windows added in 10.4, real-valued STFT in 10.5.
_AFTER_10_3 = frozenset({"BlackmanWindow", "HammingWindow", "HannWindow", "STFT"})
# Added by the TensorRT 10.15 revision (docs/Changelog.md "TensorRT 10.15 GA").
_ADDED_BY_10_15 = frozenset({"Attention", "RMSNormalization", "RotaryEmbedding", "TensorScatter"})

# Documented restrictions that an OMSF2 graph can actually hit (same text in both revisions).
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_COORD_MODES = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class ParserOps:
    """The ONNX operators one TensorRT release's parser documents.

    Attributes:
        trt: the release family, ``"10.3"`` or ``"11"``.
        source: where the list comes from (repository, file, revision).
        opset_min: lowest default-domain opset the parser accepts.
        opset_max: highest default-domain opset the parser documents.
        ops: supported op types of the default ONNX domain.
        restrictions: op type -> the documented restriction this module checks.
    """

    trt: str
    source: str
    opset_min: int
    opset_max: int
    ops: frozenset[str]
    restrictions: dict[str, str] = field(default_factory=dict)


_RESTRICTIONS = {
    "QuantizeLinear": "y_zero_point must be 0; INT8 output (UINT8 is only a network I/O type)",
    "DequantizeLinear": "x_zero_point must be zero; INT8/FP8/INT4 input (no int32 bias DQ)",
    "Resize": "modes nearest/linear; coordinate modes half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, "
    "asymmetric, align_corners; nearest modes floor/ceil/round_prefer_*; no antialias",
    "MaxPool": "2D or 3D only; Indices output unsupported; dilations empty or all ones",
    "AveragePool": "2D or 3D only; dilations empty or all ones (count_include_pad is not restricted)",
}

PARSERS: dict[str, ParserOps] = {
    "10.3": ParserOps(
        trt="10.3",
        source="onnx/onnx-tensorrt docs/operators.md @0137504e (TensorRT 10.6) minus ops the changelog dates "
        "after 10.3; opset bound from the TensorRT 10.0 revision",
        opset_min=9,
        opset_max=20,
        ops=_OPS_10_6 - _AFTER_10_3,
        restrictions=_RESTRICTIONS,
    ),
    "11": ParserOps(
        trt="11",
        source="onnx/onnx-tensorrt docs/operators.md, TensorRT 10.15 revision (newest readable; 11.x removed no ops)",
        opset_min=9,
        opset_max=24,
        ops=_OPS_10_6 | _ADDED_BY_10_15,
        restrictions=_RESTRICTIONS,
    ),
}


def parser_ops(trt: str = "10.3") -> ParserOps:
    """The op table for a TensorRT version string (``"10.3"``, ``"10.3.0.30"``, ``"11"``, ``"11.1.0"``).

    Raises:
        ValueError: a version with no table, naming the valid choices.
    """
    major, minor, _ = parse_trt_version(trt)
    key = "11" if major == 11 else f"{major}.{minor}"
    if key not in PARSERS:
        raise ValueError(f"no TensorRT ONNX-parser op table for {trt!r}; choose one of {', '.join(PARSERS)} (or 11.x)")
    return PARSERS[key]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    import onnx

    out: dict[str, Any] = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def iter_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node of the model: main graph, control-flow subgraphs and model-local function bodies."""
    import onnx

    def walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
        for node in graph.node:
            yield node
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    yield from walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        yield from walk(g)

    yield from walk(model.graph)
    for fn in model.functions:
        yield from fn.node


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers and ``Constant`` node outputs of the main graph, by name (Q/DQ zero points live in either)."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:  # zero points are often Constant nodes after export/simplification
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            inits[node.output[0]] = node.attribute[0].t
    return inits


def _qdq_problem(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> str | None:
    """TensorRT's Q/DQ rule, owned by :mod:`omsf2.export.qdq_rules` (one rule set for lint and parser)."""
    from omsf2.export.qdq_rules import tensorrt_problem

    return tensorrt_problem(node, inits)


def qdq_problems(model: onnx.ModelProto) -> list[str]:
    """Why the Q/DQ nodes of ``model`` are not TensorRT's Q/DQ contract (sorted, unique); empty when they are."""
    inits = initializers(model)
    nodes = (n for n in iter_nodes(model) if n.op_type in QDQ_OPS and n.domain in ("", "ai.onnx"))
    return sorted({p for n in nodes if (p := _qdq_problem(n, inits))})


def _node_problem(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> str | None:
    if node.op_type in QDQ_OPS:
        return _qdq_problem(node, inits)
    a = _attrs(node)
    if node.op_type == "Resize":
        if a.get("mode", "nearest") not in RESIZE_MODES:
            return f"mode {a['mode']!r} (supported: {', '.join(sorted(RESIZE_MODES))})"
        if a.get("coordinate_transformation_mode", "half_pixel") not in RESIZE_COORD_MODES:
            return f"coordinate_transformation_mode {a['coordinate_transformation_mode']!r}"
        if (
            a.get("mode", "nearest") == "nearest"
            and a.get("nearest_mode", "round_prefer_floor") not in RESIZE_NEAREST_MODES
        ):
            return f"nearest_mode {a['nearest_mode']!r}"
        if a.get("antialias", 0):
            return "antialias (not supported)"
        if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            return f"keep_aspect_ratio_policy {a['keep_aspect_ratio_policy']!r} (only 'stretch')"
    if node.op_type in ("MaxPool", "AveragePool"):
        if "kernel_shape" in a and len(a["kernel_shape"]) not in (2, 3):
            return f"{len(a['kernel_shape'])}D pooling (2D or 3D only)"
        if any(d != 1 for d in a.get("dilations", [])):
            return f"dilations {list(a['dilations'])} (must be all ones)"
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
            return "Indices output (unsupported)"
    return None


def unsupported_ops(model: onnx.ModelProto, trt: str = "10.3", *, plugins: bool = False) -> list[str]:
    """What in ``model`` TensorRT's ONNX parser (release ``trt``) does not document as supported.

    Args:
        model: an ONNX model (subgraphs and local functions are checked too).
        trt: TensorRT release, see :func:`parser_ops`.
        plugins: the omsf2 plugin library will be loaded, so ``omsf2``-domain ``MultiscalePool`` /
            ``ScaleFuse`` nodes are supported.

    Returns:
        One sorted line per problem (op type first); empty when the whole graph is supported.
    """
    table = parser_ops(trt)
    problems: set[str] = set()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not table.opset_min <= imp.version <= table.opset_max:
            problems.add(f"opset {imp.version} (TensorRT {table.trt} documents {table.opset_min}..{table.opset_max})")
    local_fns = {(f.domain, f.name) for f in model.functions}
    inits = initializers(model)
    for node in iter_nodes(model):
        if (node.domain, node.op_type) in local_fns:
            continue  # the parser inlines local functions; their bodies are walked by iter_nodes
        if node.domain == OMSF2_DOMAIN:
            if node.op_type not in OMSF2_CUSTOM_OPS:
                problems.add(f"{OMSF2_DOMAIN}::{node.op_type} (no such omsf2 plugin)")
            elif not plugins:
                problems.add(f"{OMSF2_DOMAIN}::{node.op_type} (custom op: needs the omsf2 plugin library)")
            else:
                # The parser's plugin fallback looks the creator up by op type in the namespace and
                # version given by these string attributes (namespace "" when absent).
                attrs = {a.name: a.s.decode() for a in node.attribute if a.type == 3}  # AttributeProto.STRING
                if any(attrs.get(k) != v for k, v in TRT_PLUGIN_ATTRS.items()):
                    problems.add(
                        f"{OMSF2_DOMAIN}::{node.op_type} (needs plugin_namespace='omsf2', plugin_version='1' "
                        "attributes for TensorRT's plugin lookup)"
                    )
            continue
        if node.domain not in ("", "ai.onnx"):
            problems.add(f"{node.domain}::{node.op_type} (domain {node.domain!r} is not TensorRT's)")
            continue
        if node.op_type not in table.ops:
            problems.add(f"{node.op_type} (not in TensorRT {table.trt}'s ONNX-parser op list)")
            continue
        why = _node_problem(node, inits)
        if why:
            problems.add(f"{node.op_type} ({why})")
    return sorted(problems)
