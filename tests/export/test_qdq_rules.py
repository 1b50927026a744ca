"""One Q/DQ rule set: the quantizer's lint and TensorRT's parser check read the same rules."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from omsf2.export import parser_support as trt_ops
from omsf2.export import qdq_rules
from omsf2.export.quantize import lint_qdq


def _qdq_conv(zero_point: np.ndarray, scale: float = 0.1, weight: np.ndarray | None = None) -> onnx.ModelProto:
    w = np.full((2, 1, 1, 1), 3, np.int8) if weight is None else weight
    inits = [
        numpy_helper.from_array(np.array(scale, np.float32), "s"),
        numpy_helper.from_array(zero_point, "zp"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.full(w.shape[0], 0.01, np.float32), "w_s"),
        numpy_helper.from_array(np.zeros(w.shape[0], np.int8), "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="wdq", axis=0),
        helper.make_node("Conv", ["xd", "w"], ["y"], name="conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, w.shape[1], 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_clean_symmetric_graph_passes_both() -> None:
    m = _qdq_conv(np.array(0, np.int8))
    assert lint_qdq(m, symmetric=True) == [] and trt_ops.unsupported_ops(m) == []


def test_non_zero_zero_point_is_one_rule_for_both() -> None:
    m = _qdq_conv(np.array(5, np.int8))
    assert any("zero point [5] is not 0" in p for p in lint_qdq(m, symmetric=True))
    assert any("non-zero zero point" in p for p in trt_ops.unsupported_ops(m))
    assert lint_qdq(m, symmetric=False) == []  # an asymmetric (U8S8-style) activation is fine for the lint


def test_uint8_zero_point_and_bad_scale() -> None:
    m = _qdq_conv(np.array(128, np.uint8), scale=-1.0)
    problems = lint_qdq(m, symmetric=True)
    assert any("uint8 in an S8S8 graph" in p for p in problems) and any("scale" in p for p in problems)
    assert any("zero point type UINT8" in p for p in trt_ops.unsupported_ops(m))


def test_saturation_rule_reads_the_weights_pairwise() -> None:
    full = np.array([[127, 100, -3, 0]], np.int8).reshape(1, 4, 1, 1)
    seven = np.array([[64, 64, -64, 0]], np.int8).reshape(1, 4, 1, 1)
    assert qdq_rules.weight_pair_peak(full) == 227 and qdq_rules.weight_pair_peak(seven) == 128
    assert qdq_rules.saturation_problems(_qdq_conv(np.array(0, np.uint8), weight=full))
    assert qdq_rules.saturation_problems(_qdq_conv(np.array(0, np.uint8), weight=seven)) == []
    assert qdq_rules.has_u8_activations(_qdq_conv(np.array(0, np.uint8), weight=seven))
    assert not qdq_rules.has_u8_activations(_qdq_conv(np.array(0, np.int8)))
