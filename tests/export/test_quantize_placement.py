"""Q/DQ placement: after the ReLU, the neck's MaxPool / Resize / Concat in INT8 with one shared scale.

A small graph with every pattern of the neck: Conv -> Relu -> MaxPool -> Concat -> Conv, a
residual Add, a Resize that feeds INT8 and one that feeds the float attention path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from omsf2.export.calibration import CalibMethod, ImageSet, calibrate_ranges
from omsf2.export.qdq_placement import drop_identity_concat_qdq, int8_movement_nodes, plan
from omsf2.export.qdq_rules import constants, placement_problems
from omsf2.export.quantize import QuantizeSpec, lint_qdq, quantize_int8, residual_adds

CLASSES = ("a", "b", "c", "d")


def _graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [
        w("w1", 8, 1, 3, 3), w("b1", 8), w("w2", 8, 16, 1, 1), w("b2", 8), w("w3", 4, 16, 3, 3), w("b3", 4),
        w("wf", 4, 4), w("bf", 4),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("MaxPool", ["r1"], ["mp"], "pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["r1", "mp"], ["cat"], "cat", axis=1),
        helper.make_node("Conv", ["cat", "w2", "b2"], ["c2"], "conv2"),
        helper.make_node("Add", ["c2", "r1"], ["add"], "residual"),
        helper.make_node("Relu", ["add"], ["r2"], "relu2"),
        helper.make_node("Resize", ["r2", "", "scales"], ["up_a"], "up_int8", mode="nearest"),
        helper.make_node("Resize", ["r2", "", "scales"], ["up_b"], "up_float", mode="nearest"),
        helper.make_node("Sigmoid", ["up_b"], ["att"], "sigmoid"),
        helper.make_node("Mul", ["up_b", "att"], ["gated"], "gate"),
        helper.make_node("Concat", ["up_a", "gated"], ["cat2"], "cat2", axis=1),
        helper.make_node("Conv", ["cat2", "w3", "b3"], ["c3"], "conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"], "relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], "fc", transB=1),
        helper.make_node("GlobalMaxPool", ["att"], ["heatmap"], "heat"),
    ]
    graph = helper.make_graph(
        nodes,
        "neck",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 16, 16])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["batch", 8, 1, 1]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model)
    return model


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 16, 16), dtype=np.float32)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("placement")
    src = d / "fp32.onnx"
    onnx.save_model(_graph(), str(src))
    calib = ImageSet(_images(64, 1), np.zeros(64, np.int64), tuple(f"c{i}" for i in range(64)), CLASSES, "calib")
    ev = _images(32, 2)
    evaluation = ImageSet(ev, np.arange(32) % 4, tuple(f"e{i}" for i in range(32)), CLASSES, "eval")
    res = quantize_int8(QuantizeSpec(str(src), str(d), calib, evaluation, CalibMethod.MAX, 100.0, min_agreement=0.0))
    return src, res, ev


def _ort_graph(path: Path, tmp: Path) -> onnx.GraphProto:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp / "opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp / "opt.onnx")).graph


def test_the_int8_region_is_what_feeds_int8() -> None:
    model = _graph()
    _, float_adds = residual_adds(model)
    assert float_adds == []
    # up_float feeds Sigmoid and Mul (the float attention path): it stays float; everything else moves int8
    assert int8_movement_nodes(model, float_adds) == ["pool", "cat", "up_int8", "cat2"]


def test_u8s8_runs_in_integer_kernels_end_to_end(quantized, tmp_path) -> None:
    _, res, _ = quantized
    g = _ort_graph(res.paths["int8_cpu"], tmp_path)
    ops = [n.op_type for n in g.node]
    assert ops.count("QLinearConv") == 3 and "Conv" not in ops
    assert ops.count("QLinearConcat") == 2 and "QLinearAdd" in ops
    # The ReLUs were folded into the producers' output ranges: none runs in float between a DQ and a Q.
    assert "Relu" not in ops


def test_s8s8_pairs_sit_after_the_relu_and_concats_share_one_scale(quantized) -> None:
    _, res, _ = quantized
    s8 = onnx.load(str(res.paths["int8"]))
    assert lint_qdq(s8, symmetric=True) == [] and placement_problems(s8) == []
    producers = {o: n for n in s8.graph.node for o in n.output}
    consts = constants(s8)
    for relu in (n for n in s8.graph.node if n.op_type == "Relu"):
        assert producers[relu.input[0]].op_type in ("Conv", "Add"), relu.name  # no pair between them
    for cat in (n for n in s8.graph.node if n.op_type == "Concat"):
        dqs = [producers[i] for i in cat.input]
        assert all(d.op_type == "DequantizeLinear" for d in dqs)
        scales = {float(numpy_helper.to_array(consts[d.input[1]])) for d in dqs}
        assert len(scales) == 1, cat.name
        # the identity pair on the output was removed: the Conv reads the Concat of int8 values
        users = [n for n in s8.graph.node if cat.output[0] in n.input]
        assert [u.op_type for u in users] == ["Conv"]
    assert res.report["int8"]["passed"] and res.report["int8_cpu"]["passed"]


def test_dropping_the_concat_output_pair_is_exact(quantized, tmp_path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from omsf2.export.gate import EvalMode, session
    from omsf2.export.onnx import run_session

    src, _, ev = quantized
    model = onnx.load(str(src))
    ranges = calibrate_ranges(str(src), _images(64, 1), CalibMethod.MAX, str(tmp_path))
    save_tensors_data(ranges, str(tmp_path / "cache.json"))
    where = plan(model, [], ranges)
    quantize_static(
        str(src), str(tmp_path / "s8.onnx"), None, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(where.op_types), nodes_to_exclude=list(where.exclude), per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        calibration_cache_path=str(tmp_path / "cache.json"), extra_options=where.extra_options(True),
    )  # fmt: skip
    with_pairs = onnx.load(str(tmp_path / "s8.onnx"))
    without = onnx.load(str(tmp_path / "s8.onnx"))
    assert drop_identity_concat_qdq(without) == ["cat", "cat2"]
    assert drop_identity_concat_qdq(without) == []  # nothing left to drop
    a = run_session(session(with_pairs, EvalMode.QDQ_FLOAT), ev)[0]
    b = run_session(session(without, EvalMode.QDQ_FLOAT), ev)[0]
    np.testing.assert_array_equal(a, b)


def test_the_lint_flags_a_pair_between_conv_and_relu(tmp_path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    src = tmp_path / "fp32.onnx"
    onnx.save_model(_graph(), str(src))
    ranges = calibrate_ranges(str(src), _images(64, 1), CalibMethod.MAX, str(tmp_path))
    save_tensors_data(ranges, str(tmp_path / "cache.json"))
    # onnxruntime's defaults with Conv alone quantized: the Conv output gets a pair before its Relu
    quantize_static(
        str(src), str(tmp_path / "old.onnx"), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(tmp_path / "cache.json"),
        extra_options={"ActivationSymmetric": True, "QuantizeBias": False},
    )  # fmt: skip
    problems = placement_problems(onnx.load(str(tmp_path / "old.onnx")))
    assert any("'conv1': Q/DQ between it and its Relu" in p for p in problems)
    assert any("'conv3': Q/DQ between it and its Relu" in p for p in problems)


def test_calibration_merges_batches_into_the_ranges_of_all_images(tmp_path) -> None:
    """calibrate_ranges hands onnxruntime one batch per call (bounded memory); the ranges must be those
    of all images, not of any one batch."""
    import onnxruntime as ort

    src = tmp_path / "fp32.onnx"
    onnx.save_model(_graph(), str(src))
    images = _images(40, 3)  # three batches: 16, 16, 8
    images[3] *= 4.0
    images[35] *= 3.0

    def logits_range(r: Any) -> list[float]:
        return [float(np.asarray(v).ravel()[0]) for v in r["logits"].range_value]

    whole = logits_range(calibrate_ranges(str(src), images, CalibMethod.MAX, str(tmp_path)))
    logits = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(["logits"], {"image": images})[0]
    np.testing.assert_allclose(whole, [logits.min(), logits.max()], rtol=1e-5)
    for part in (images[:16], images[16:32], images[32:]):
        assert logits_range(calibrate_ranges(str(src), part, CalibMethod.MAX, str(tmp_path))) != whole
