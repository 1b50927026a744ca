"""Multiply-adds of one image through an ONNX graph: the numerator of every efficiency figure.

Counted from the graph (Conv, ConvTranspose, MatMul, Gemm after shape inference), so it needs
neither torch nor the checkpoint and counts exactly what every runtime executes. Elementwise,
pooling and resize work is not counted: efficiency is against GEMM ceilings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _dims(vi: Any) -> list[int]:
    # Symbolic dims (the dynamic batch) count as 1: the figure is per image.
    return [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]


def onnx_macs(path: str | Path) -> int:
    """Multiply-adds per image of the ONNX model at ``path`` (batch 1).

    Raises:
        ValueError: the file is not a readable ONNX model.
    """
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as e:  # onnx raises DecodeError, ValidationError, InferenceError, ...
        raise ValueError(f"cannot read ONNX '{path}' to count its multiply-adds ({type(e).__name__}: {e})") from e
    g = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        shapes[vi.name] = _dims(vi)
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in g.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in shapes:
            w = shapes[node.input[1]]  # Conv: (Cout, Cin/g, kh, kw); ConvTranspose: (Cin, Cout/g, kh, kw)
            if node.op_type == "Conv":
                total += math.prod(out) * math.prod(w[1:])
            else:
                total += math.prod(shapes.get(node.input[0], [0])) * math.prod(w[1:])
        elif node.op_type in ("MatMul", "Gemm") and node.input[0] in shapes:
            a = shapes[node.input[0]]
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if trans_a and len(a) >= 2 else a[-1]
            total += math.prod(out) * k
    return int(total)
