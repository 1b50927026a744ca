"""Acceptance 2: every op of the exported ONNX graphs is one TensorRT's ONNX parser supports (10.3 and 11.x).

The graphs are real: a tiny omsf2 checkpoint exported with ``omsf2.export.onnx.export_onnx``
(FP32, and with ``--plugins``), and two Q/DQ INT8 versions of it: the pipeline's own
``model.int8.onnx`` from ``omsf2.export.quantize.quantize_int8``, and a reference one from
onnxruntime's ``quantize_static`` with the settings TensorRT's contract needs (QDQ, S8S8,
per-channel weights, symmetric activations and weights, float biases). The op table is static
(``omsf2/export/parser_support.py`` says which onnx-tensorrt revisions it comes from): this proves the
graphs use documented ops and attributes, not that TensorRT builds them (``test_tensorrt_gpu.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from omsf2.export.parser_support import PARSERS, parser_ops, unsupported_ops

TRT = ["10.3", "11"]


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory) -> dict[str, Path]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from omsf2.export.onnx import OnnxExportSpec, export_onnx

    d = tmp_path_factory.mktemp("trt_ops")
    export_onnx(OnnxExportSpec(checkpoint=str(tiny_ckpt), out=str(d / "model.onnx")))
    export_onnx(OnnxExportSpec(checkpoint=str(tiny_ckpt), out=str(d / "model.plugins.onnx"), plugins=True))

    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"image": rng.random((1, 1, 64, 64), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static warns through the root logger
    try:
        quantize_static(
            str(d / "model.onnx"), str(d / "model.int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )  # fmt: skip
    finally:
        root.setLevel(level)
    return {k: d / f"model{s}.onnx" for k, s in (("fp32", ""), ("plugins", ".plugins"), ("int8", ".int8"))}


@pytest.fixture(scope="module")
def pipeline_int8(exported, tmp_path_factory) -> Path:
    """``model.int8.onnx`` as ``omsf2 export --int8`` writes it (random images; the gate is not under test)."""
    from omsf2.export.calibration import ImageSet
    from omsf2.export.quantize import QuantizeSpec, quantize_int8

    rng = np.random.default_rng(0)

    def images(n: int) -> ImageSet:
        paths = tuple(f"{i}.png" for i in range(n))
        return ImageSet(rng.random((n, 1, 64, 64), dtype=np.float32), rng.integers(0, 4, n), paths, tuple("abcd"), "")

    out = tmp_path_factory.mktemp("pipeline_int8")
    spec = QuantizeSpec(onnx_path=str(exported["fp32"]), out_dir=str(out), calib=images(8), evaluation=images(8),
                        max_drop=100.0, flavours=("int8",))  # fmt: skip
    return quantize_int8(spec).paths["int8"]


@pytest.mark.parametrize("trt", TRT)
def test_pipeline_int8_graph_uses_only_parser_supported_ops(pipeline_int8, trt) -> None:
    assert unsupported_ops(onnx.load(str(pipeline_int8)), trt) == []


@pytest.mark.parametrize("trt", TRT)
@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_exported_graphs_use_only_parser_supported_ops(exported, kind, trt) -> None:
    model = onnx.load(str(exported[kind]))
    assert unsupported_ops(model, trt) == []
    if kind == "int8":
        assert any(n.op_type == "QuantizeLinear" for n in model.graph.node), "not a Q/DQ graph"


@pytest.mark.parametrize("trt", TRT)
def test_plugin_graph_needs_the_declared_plugins(exported, trt) -> None:
    model = onnx.load(str(exported["plugins"]))
    assert unsupported_ops(model, trt) == [
        "omsf2::MultiscalePool (custom op: needs the omsf2 plugin library)",
        "omsf2::ScaleFuse (custom op: needs the omsf2 plugin library)",
    ]
    assert unsupported_ops(model, trt, plugins=True) == []


# --------------------------------------------------------------------------- the checker itself


def _model(nodes, inits=(), opset=19, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits),
    )  # fmt: skip
    ops = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=ops)


def _qdq(zp: np.ndarray) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(zp, "z")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    return _model(nodes, inits)


def _node(op: str, outputs=("y",), inputs=("x",), **attrs) -> onnx.ModelProto:
    return _model([helper.make_node(op, list(inputs), list(outputs), **attrs)])


MS = helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft")
CASES = [
    (_qdq(np.array(0, np.int8)), []),
    (_qdq(np.array(3, np.int8)), ["DequantizeLinear (non-zero zero point", "QuantizeLinear (non-zero zero point"]),
    (
        _qdq(np.array(128, np.uint8)),
        ["DequantizeLinear (zero point type UINT8", "QuantizeLinear (zero point type UINT8"],
    ),
    (_node("QuantizeLinear", inputs=("x", "x")), ["QuantizeLinear (no zero point"]),
    (_node("Resize", inputs=("x", "", "x"), mode="cubic"), ["Resize (mode 'cubic'"]),
    (
        _node("Resize", inputs=("x", "", "x"), coordinate_transformation_mode="tf_crop_and_resize"),
        ["Resize (coordinate_transformation_mode 'tf_crop_and_resize'"],
    ),
    (_node("MaxPool", kernel_shape=[3, 3], dilations=[2, 2]), ["MaxPool (dilations [2, 2]"]),
    (_node("MaxPool", outputs=("y", "i"), kernel_shape=[3, 3]), ["MaxPool (Indices output"]),
    (_node("AveragePool", kernel_shape=[3], count_include_pad=1), ["AveragePool (1D pooling"]),
    (_node("StringNormalizer"), ["StringNormalizer (not in TensorRT"]),
    (_model([MS], domains=["com.microsoft"]), ["com.microsoft::FusedConv (domain 'com.microsoft' is not TensorRT's)"]),
    (_model([helper.make_node("Relu", ["x"], ["y"])], opset=8), ["opset 8"]),
]


@pytest.mark.parametrize(("model", "expected"), CASES)
def test_checker_flags_what_the_parser_docs_exclude(model, expected) -> None:
    got = unsupported_ops(model, "10.3")
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.startswith(e), got


def test_version_specific_ops() -> None:
    stft = _model([helper.make_node("HannWindow", ["x"], ["y"])], opset=20)
    assert unsupported_ops(stft, "10.3") == ["HannWindow (not in TensorRT 10.3's ONNX-parser op list)"]
    assert unsupported_ops(stft, "11") == []
    opset22 = _model([helper.make_node("Relu", ["x"], ["y"])], opset=22)
    assert unsupported_ops(opset22, "10.3") == ["opset 22 (TensorRT 10.3 documents 9..20)"]
    assert unsupported_ops(opset22, "11.1.0") == []


def test_parser_ops_version_strings() -> None:
    assert parser_ops("10.3.0.30") is PARSERS["10.3"] and parser_ops("11.1") is PARSERS["11"]
    with pytest.raises(ValueError, match=r"choose one of 10\.3, 11"):
        parser_ops("10.8")
    assert {"Conv", "QuantizeLinear", "Resize", "MaxPool"} <= PARSERS["10.3"].ops <= PARSERS["11"].ops
