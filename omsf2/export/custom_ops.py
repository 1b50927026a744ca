"""The fused neck ops as ONNX custom ops (domain ``omsf2``, version 1): schemas, torch ops, translation.

The contract, shared with the TensorRT IPluginV3 plugins (namespace ``omsf2``, same names, version 1;
the identity and the mode table live in :mod:`omsf2.op_contract`):

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

onnxruntime: :func:`expand_plugins` (in :mod:`omsf2.runtime.ort_custom_ops`, re-exported here)
rewrites each custom node into the contract's decomposition in standard ops (MaxPool/AveragePool +
Concat; Resize(nearest, asymmetric, floor) + Mul/Add), so parity, calibration and the accuracy gate
run here unchanged. onnxruntime-extensions' Python ops were the other option; they live in domain
``ai.onnx.contrib`` and take no int-list attributes, so they could not run the ``omsf2``-domain
graph without a rewrite anyway, and would add a dependency that copies every output through Python
lists.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

from omsf2.op_contract import DOMAIN, MULTISCALE_POOL, SCALE_FUSE, VERSION, check_pool_mode, pool_mode_code
from omsf2.op_contract import TRT_PLUGIN_ATTRS as TRT_ATTRS
from omsf2.runtime.ort_custom_ops import expand_plugins, has_plugins

__all__ = ["expand_plugins", "has_plugins", "plugin_ops", "translation_table"]


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
        return opset.MultiscalePool(x, windows=[int(w) for w in windows], mode=pool_mode_code(mode), **TRT_ATTRS)

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
        return pool_op(x, [int(w) for w in windows], check_pool_mode(mode))

    def fuse(l: Any, a: Any, l_up: Any, a_up: Any) -> Any:  # noqa: E741
        return fuse_op(l, a, l_up, a_up)

    with use_implementation(pool, fuse):
        yield
