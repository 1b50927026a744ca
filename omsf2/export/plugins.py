"""The fused neck ops as ONNX custom ops (domain ``omsf2``, version 1) and their onnxruntime implementation.

The contract, shared with the TensorRT IPluginV3 plugins (namespace ``omsf2``, same names, version 1):

- ``MultiscalePool(x) -> y``, attributes ``windows`` (ints, odd) and ``mode`` (int, 0 = max, 1 = avg
  over valid elements): ``y = concat([x, pool_k1(x), ...], axis=1)``, stride 1, padding ``k // 2``.
- ``ScaleFuse(l, a, l_up, a_up) -> y``: ``y = (1 + a) * l + a * up(a_up) * up(l_up)``, ``up`` being
  nearest upsampling with ``src = floor(dst * h / H)``.

Export: :func:`plugin_ops` swaps the model's calls to ``omsf2.kernels.multiscale_pool`` /
``scale_fuse`` for ``torch.library`` custom ops whose dynamo translation emits the two nodes.
The swap rebinds those names in the loaded ``omsf2.models`` modules (and the ``omsf2.kernels``
namespace) for the duration of the block: the kernels dispatch has no "emit a custom op" backend
yet, and export must not edit model code. :func:`export_onnx` checks afterwards that the nodes
really are in the graph, so a model that stops calling these functions fails loudly.

onnxruntime: :func:`expand_plugins` rewrites each custom node into the contract's decomposition
in standard ops (MaxPool/AveragePool + Concat; Resize(nearest, asymmetric, floor) + Mul/Add), so
parity, calibration and the accuracy gate run here unchanged. onnxruntime-extensions' Python ops
were the other option; they live in domain ``ai.onnx.contrib`` and take no int-list attributes,
so they could not run the ``omsf2``-domain graph without a rewrite anyway, and would add a
dependency that copies every output through Python lists.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

DOMAIN = "omsf2"
VERSION = 1
MULTISCALE_POOL = "MultiscalePool"
SCALE_FUSE = "ScaleFuse"
POOL_MODES = ("max", "avg")  # attribute value = index
# TensorRT's ONNX parser maps an unknown node to the plugin creator named by its op type, in the
# namespace and version these attributes give (default namespace "": ours would not be found).
TRT_ATTRS = {"plugin_namespace": DOMAIN, "plugin_version": str(VERSION)}


def _trt_attributes() -> list[Any]:
    from onnx.defs import OpSchema

    return [
        OpSchema.Attribute(name, OpSchema.AttrType.STRING, "TensorRT plugin lookup", required=False)
        for name in TRT_ATTRS
    ]


@functools.cache
def _register() -> tuple[Any, Any, dict[Any, Any]]:
    """Register the ONNX schemas and torch custom ops once; returns (pool op, fuse op, translation table)."""
    import onnx
    import onnxscript
    import torch
    from onnx.defs import OpSchema

    floats = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
    # Schemas make the nodes known to onnxscript's builder and to onnx.checker (full check).
    for schema in (
        OpSchema(
            MULTISCALE_POOL,
            DOMAIN,
            VERSION,
            doc="Dense multi-scale pooling: concat([x, pool_k(x) for k in windows]) on channels.",
            inputs=[OpSchema.FormalParameter("x", "T")],
            outputs=[OpSchema.FormalParameter("y", "T")],
            type_constraints=[("T", floats, "floating point")],
            attributes=[
                OpSchema.Attribute("windows", OpSchema.AttrType.INTS, "odd window sizes, in output order"),
                OpSchema.Attribute("mode", OpSchema.AttrType.INT, "0 = max, 1 = avg over valid elements"),
                *_trt_attributes(),
            ],
        ),
        OpSchema(
            SCALE_FUSE,
            DOMAIN,
            VERSION,
            doc="(1 + a) * l + a * up(a_up) * up(l_up), nearest upsampling src = floor(dst * h / H).",
            inputs=[OpSchema.FormalParameter(n, "T") for n in ("l", "a", "l_up", "a_up")],
            outputs=[OpSchema.FormalParameter("y", "T")],
            type_constraints=[("T", floats, "floating point")],
            attributes=_trt_attributes(),
        ),
    ):
        if not onnx.defs.has(schema.name, schema.domain):
            onnx.defs.register_schema(schema)

    # The kernels' torch.library ops (registered once, by omsf2.kernels.cuda.library): the same
    # nodes torch.compile sees, here translated to the ONNX custom nodes.
    import omsf2.kernels.cuda.library  # noqa: F401

    pool_op, fuse_op = torch.ops.omsf2.multiscale_pool, torch.ops.omsf2.scale_fuse

    opset = onnxscript.values.Opset(DOMAIN, VERSION)

    def pool_onnx(x: Any, windows: Sequence[int], mode: str) -> Any:
        return opset.MultiscalePool(x, windows=[int(w) for w in windows], mode=POOL_MODES.index(mode), **TRT_ATTRS)

    def fuse_onnx(l: Any, a: Any, l_up: Any, a_up: Any) -> Any:  # noqa: E741
        return opset.ScaleFuse(l, a, l_up, a_up, **TRT_ATTRS)

    table = {pool_op.default: pool_onnx, fuse_op.default: fuse_onnx}
    return pool_op, fuse_op, table


def translation_table() -> dict[Any, Any]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``."""
    return _register()[2]


@contextlib.contextmanager
def plugin_ops() -> Iterator[None]:
    """Within the block, the model's fused-op calls trace to the ``omsf2`` custom ops.

    Uses the kernels' own hook (``omsf2.kernels.use_implementation``), so no model code changes.
    """
    from omsf2.kernels import use_implementation

    pool_op, fuse_op, _ = _register()

    def pool(x: Any, windows: Sequence[int] = (5, 9, 13), mode: str = "max") -> Any:
        if mode not in POOL_MODES:
            raise ValueError(f"invalid pooling mode {mode!r}; choose one of {POOL_MODES}")
        return pool_op(x, [int(w) for w in windows], mode)

    def fuse(l: Any, a: Any, l_up: Any, a_up: Any) -> Any:  # noqa: E741
        return fuse_op(l, a, l_up, a_up)

    with use_implementation(pool, fuse):
        yield


def has_plugins(model: Any) -> bool:
    """Whether an ONNX ModelProto holds ``omsf2``-domain nodes."""
    return any(n.domain == DOMAIN for n in model.graph.node)


def expand_plugins(model: Any) -> Any:
    """Return a copy of ``model`` with each ``omsf2`` custom node replaced by its standard-op decomposition.

    This is the onnxruntime implementation of the plugins; tensor names are kept, so ranges
    calibrated on the expanded graph apply to the custom-op graph.

    Raises:
        ValueError: an ``omsf2`` node of an unknown type or version, or with bad attributes.
    """
    import onnx
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    versions = {o.domain: o.version for o in out.opset_import}
    if DOMAIN in versions and versions[DOMAIN] != VERSION:
        raise ValueError(f"omsf2 custom-op domain version {versions[DOMAIN]} is not supported (only {VERSION})")
    nodes = []
    one = None
    for k, node in enumerate(out.graph.node):
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        p = f"_omsf2_{k}_"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == MULTISCALE_POOL:
            windows = [int(w) for w in attrs.get("windows", ())]
            mode = int(attrs.get("mode", 0))
            if not windows or any(w < 1 or w % 2 == 0 for w in windows) or mode not in (0, 1):
                raise ValueError(f"{node.name}: MultiscalePool needs odd windows and mode 0|1, got {attrs}")
            parts = [node.input[0]]
            for w in windows:
                kw: dict[str, Any] = {"kernel_shape": [w, w], "strides": [1, 1], "pads": [w // 2] * 4}
                if mode == 1:
                    kw["count_include_pad"] = 0
                op = "MaxPool" if mode == 0 else "AveragePool"
                nodes.append(helper.make_node(op, [node.input[0]], [f"{p}pool{w}"], name=f"{p}pool{w}", **kw))
                parts.append(f"{p}pool{w}")
            nodes.append(helper.make_node("Concat", parts, [node.output[0]], name=f"{p}concat", axis=1))
        elif node.op_type == SCALE_FUSE:
            l, a, l_up, a_up = node.input  # noqa: E741
            if one is None:
                one = "_omsf2_one"
                out.graph.initializer.append(helper.make_tensor(one, onnx.TensorProto.FLOAT, [], [1.0]))
            nodes += [
                helper.make_node("Shape", [l], [f"{p}hw"], name=f"{p}hw", start=2),
                *(
                    helper.make_node(
                        "Resize",
                        [src, "", "", f"{p}hw"],
                        [f"{p}up_{i}"],
                        name=f"{p}up_{i}",
                        axes=[2, 3],
                        mode="nearest",
                        coordinate_transformation_mode="asymmetric",  # src = dst * h / H ...
                        nearest_mode="floor",  # ... rounded down: PyTorch's "nearest"
                    )
                    for i, src in enumerate((l_up, a_up))
                ),
                helper.make_node("Add", [a, one], [f"{p}a1"], name=f"{p}a1"),
                helper.make_node("Mul", [f"{p}a1", l], [f"{p}enh"], name=f"{p}enh"),
                helper.make_node("Mul", [a, f"{p}up_1"], [f"{p}gate"], name=f"{p}gate"),
                helper.make_node("Mul", [f"{p}gate", f"{p}up_0"], [f"{p}sel"], name=f"{p}sel"),
                helper.make_node("Add", [f"{p}enh", f"{p}sel"], [node.output[0]], name=f"{p}out"),
            ]
        else:
            raise ValueError(f"unknown omsf2 custom op {node.op_type!r}; known: {MULTISCALE_POOL}, {SCALE_FUSE}")
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    # Shapes recorded around unknown custom ops (e.g. by the quantizer's shape inference) can be
    # wrong; onnxruntime re-infers them from the standard ops.
    del out.graph.value_info[:]
    kept = [o for o in out.opset_import if o.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    return out
