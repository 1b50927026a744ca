"""The onnxruntime implementation of the ``omsf2`` custom ops: rewrite each node into standard ops.

:func:`expand_plugins` replaces every ``MultiscalePool`` / ``ScaleFuse`` node (the contract is in
:mod:`omsf2.op_contract` and :mod:`omsf2.export.custom_ops`) by its decomposition in standard ops
(MaxPool/AveragePool + Concat; Resize(nearest, asymmetric, floor) + Mul/Add), so parity,
calibration, the accuracy gate and the runtime's onnxruntime sessions run a custom-op graph
unchanged. Tensor names are kept, so ranges calibrated on the expanded graph apply to the
custom-op graph. Needs ``onnx`` (imported inside the functions), never torch.
"""

from __future__ import annotations

from typing import Any

from omsf2.op_contract import DOMAIN, MULTISCALE_POOL, POOL_MODES, SCALE_FUSE, VERSION


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
            if not windows or any(w < 1 or w % 2 == 0 for w in windows) or not 0 <= mode < len(POOL_MODES):
                raise ValueError(f"{node.name}: MultiscalePool needs odd windows and mode 0|1, got {attrs}")
            parts = [node.input[0]]
            for w in windows:
                kw: dict[str, Any] = {"kernel_shape": [w, w], "strides": [1, 1], "pads": [w // 2] * 4}
                if POOL_MODES[mode] == "avg":
                    kw["count_include_pad"] = 0
                op = "MaxPool" if POOL_MODES[mode] == "max" else "AveragePool"
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
