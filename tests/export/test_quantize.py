"""INT8: both flavours and the Q/DQ lint, the four calibration methods, the accuracy gate, calibration input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from omsf2.config import PreprocessSpec
from omsf2.export.calibration import CalibrationSpec, check_disjoint, load_calibration, load_eval
from omsf2.export.quantize import CalibMethod, QuantizeSpec, lint_qdq, quantize_int8
from omsf2.export.targets import ExportFormat, parse_batch, select_targets

CLASSES = ("normal", "stage_I", "stage_II", "stage_III")
PRE = PreprocessSpec(size=(64, 64))


def test_both_flavours_are_written_linted_and_reported(int8_export) -> None:
    rep = int8_export.report
    s8 = onnx.load(str(int8_export.artifacts["onnx_int8"]))
    u8 = onnx.load(str(int8_export.artifacts["onnx_int8_cpu"]))
    assert lint_qdq(s8, symmetric=True) == []
    assert lint_qdq(u8, symmetric=False) == []
    inits = {i.name: numpy_helper.to_array(i) for i in s8.graph.initializer}
    zps = [inits[n.input[2]] for n in s8.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    weight_scales = [
        inits[n.input[1]] for n in s8.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
    ]
    assert any(s.size > 1 for s in weight_scales)  # per-channel weights
    u8_inits = {i.name: numpy_helper.to_array(i) for i in u8.graph.initializer}
    assert any(u8_inits[n.input[2]].dtype == np.uint8 for n in u8.graph.node if n.op_type == "QuantizeLinear")
    for key in ("int8", "int8_cpu"):
        keys = {"method", "calib_count", "fp32_accuracy", "int8_accuracy", "accuracy_drop", "top1_agreement"}
        keys |= {"top1_agreement_ci95", "accuracy_drop_ci95", "min_agreement", "eval_mode", "float_groups"}
        assert keys | {"fp32_macro_f1", "int8_macro_f1"} <= set(rep[key])
        assert rep[key]["calib_count"] == 64 and rep[key]["passed"]
    assert rep["int8"]["eval_mode"] == "qdq-float" and rep["int8_cpu"]["eval_mode"] == "ort-integer"
    assert rep["int8"]["weight_bits"] == 8 and rep["int8_cpu"]["weight_bits"] == 7
    assert rep["int8_cpu"]["kernel_path"]["isa"] != "" and "onnxruntime" in rep["int8_cpu"]["kernel_path"]
    assert rep["eval_data"]["n"] == 16 and set(rep["artifacts"]) == {"onnx", "onnx_int8", "onnx_int8_cpu"}
    assert all(len(a["sha256"]) == 64 for a in rep["artifacts"].values())


def test_lint_catches_nonzero_zero_points_and_bad_scales(int8_export) -> None:
    model = onnx.load(str(int8_export.artifacts["onnx_int8"]))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    for init in model.graph.initializer:
        if init.name == q.input[2]:
            init.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), init.name))
        if init.name == q.input[1]:
            init.CopyFrom(numpy_helper.from_array(np.array(-1.0, np.float32), init.name))
    problems = lint_qdq(model, symmetric=True)
    assert any("zero point" in p for p in problems) and any("scale" in p for p in problems)


@pytest.fixture(scope="module")
def sets(phantoms64):
    calib = load_calibration(CalibrationSpec(str(phantoms64 / "train"), 64), PRE, CLASSES)
    ev = load_eval(phantoms64 / "val", PRE, CLASSES)
    return calib, ev


def test_calibration_is_stratified_and_disjoint(sets, phantoms64) -> None:
    calib, ev = sets
    assert calib.per_class() == dict.fromkeys(CLASSES, 16)
    assert calib.images.shape == (64, 1, 64, 64) and calib.images.dtype == np.float32
    check_disjoint(calib, ev)
    with pytest.raises(ValueError, match="shares"):
        check_disjoint(calib, load_eval(phantoms64 / "train", PRE, CLASSES))


@pytest.mark.parametrize("method", list(CalibMethod))
def test_every_calibration_method_quantizes(method, sets, int8_export, tmp_path) -> None:
    calib, ev = sets
    res = quantize_int8(
        QuantizeSpec(str(int8_export.artifacts["onnx"]), str(tmp_path), calib, ev, method, 100.0, flavours=("int8",))
    )
    r = res.report["int8"]
    assert r["method"] == method.value and 0.0 <= r["top1_agreement"] <= 1.0
    assert lint_qdq(onnx.load(str(res.paths["int8"])), symmetric=True) == []


def test_negative_max_drop_and_bad_agreement_are_refused(sets, int8_export, tmp_path) -> None:
    calib, ev = sets
    src = str(int8_export.artifacts["onnx"])
    with pytest.raises(ValueError, match=r"--max-drop must be .* \[0, 100\], got -1"):
        QuantizeSpec(src, str(tmp_path), calib, ev, "max", -1.0)
    with pytest.raises(ValueError, match="--min-agreement must be a fraction"):
        QuantizeSpec(src, str(tmp_path), calib, ev, "max", 1.0, min_agreement=98.0)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        CalibrationSpec("x", 10)
    with pytest.raises(ValueError, match="choose one of"):
        QuantizeSpec("m.onnx", ".", None, None, "minmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MIN,OPT,MAX"):
        parse_batch("8,4,16")
    assert parse_batch("1,8,32") == (1, 8, 32)
    names = [t.name for t in select_targets(ExportFormat.ENGINE, int8=True, fp16=False)]
    assert names == ["onnx", "onnx_int8", "engine_int8"]
    with pytest.raises(ValueError, match="--fp16"):
        select_targets(ExportFormat.ONNX, int8=False, fp16=True)
