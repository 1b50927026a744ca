"""omsf2's routing of engine targets to the TensorRT layer, replaced by a fake (tests/export/conftest.py).

These tests prove nothing about TensorRT: they check which ONNX each engine is built from, with
which EngineSpec, and the option checks in front of it (tests/export/test_tensorrt_gpu.py builds
real engines on a GPU; tests/export/test_engine_gate.py holds the engine gate).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from omsf2.export.targets import EngineVia, ExportSpec, run_export


def test_fp16_engine_is_built_from_an_fp16_onnx(tiny_ckpt: Path, phantoms64: Path, tmp_path: Path, fake_trt) -> None:
    res = run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "out"), format="all", fp16=True, batch="1,2,4",
                                eval_data=str(phantoms64 / "val")))  # fmt: skip
    [(name, source, spec)] = fake_trt["builds"]
    assert name == "model.fp16.engine" and spec.precision == "fp16" and spec.batch == (1, 2, 4)
    assert source.name == "model.fp16.onnx"
    types = {t.data_type for t in onnx.load(str(res.out / "model.fp16.onnx")).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types, "the FP16 engine's ONNX holds no float16 weights"
    assert (res.out / "model.fp16.engine").is_file() and (res.out / "model.onnx").is_file()
    assert max(fake_trt["batches"]) <= 4  # the gate ran in chunks of the profile's largest batch


def test_via_torch_tensorrt_builds_from_the_checkpoint(tiny_ckpt: Path, phantoms64: Path, tmp_path: Path,
                                                       fake_trt) -> None:  # fmt: skip
    run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "out"), format="engine", via="torch-tensorrt",
                          eval_data=str(phantoms64 / "val")))  # fmt: skip
    [(name, _, spec)] = fake_trt["builds"]
    assert name == "model.fp32.engine" and spec.precision == "fp32"


def test_engine_option_checks(tiny_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="INT8 engines come from the Q/DQ ONNX"):
        ExportSpec(str(tiny_ckpt), str(tmp_path), format="engine", int8=True, calib_data="c", eval_data="e",
                   via=EngineVia.TORCH_TENSORRT)  # fmt: skip
    with pytest.raises(ValueError, match="needs --plugin-lib"):
        ExportSpec(str(tiny_ckpt), str(tmp_path), format="engine", plugins=True)
    with pytest.raises(ValueError, match="no such file"):
        ExportSpec(str(tiny_ckpt), str(tmp_path), format="engine", plugins=True, plugin_library=str(tmp_path / "x.so"))
    with pytest.raises(ValueError, match="invalid --via"):
        ExportSpec(str(tiny_ckpt), str(tmp_path), via="tvm")
    with pytest.raises(ValueError, match="judges every engine on labelled images"):
        ExportSpec(str(tiny_ckpt), str(tmp_path), format="engine")
    with pytest.raises(ValueError, match="--gate-data judges INT8 flavours and engines"):
        ExportSpec(str(tiny_ckpt), str(tmp_path), gate_data="g")
    with pytest.raises(ValueError, match="--gate-fraction must lie strictly between 0 and 1"):
        ExportSpec(str(tiny_ckpt), str(tmp_path), gate_fraction=1.0)
    with pytest.raises(ValueError, match="--min-group-agreement must be a fraction"):
        ExportSpec(str(tiny_ckpt), str(tmp_path), min_group_agreement=2.0)
