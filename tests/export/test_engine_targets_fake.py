"""omsf2's routing of engine targets to the TensorRT layer, with that layer replaced by recorders.

These tests prove nothing about TensorRT: they check which ONNX each engine is built from, with
which EngineSpec, and the option checks in front of it (tests/export/test_tensorrt_gpu.py builds
real engines on a GPU).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from omsf2.export import targets
from omsf2.export.targets import EngineVia, ExportSpec, run_export


@pytest.fixture()
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object, object]]:
    import omsf2.export.tensorrt as trt_layer
    import omsf2.export.trt_dynamo as dynamo_layer

    calls: list[tuple[str, object, object]] = []

    def fake_build(onnx_path: Path, spec: object, out_path: Path, *, onnx_report: object = None) -> Path:
        # The staging folder is gone after run_export: record the graph's weight types now.
        types = {t.data_type for t in onnx.load(str(onnx_path)).graph.initializer}
        calls.append(("onnx", types, spec))
        out_path.write_bytes(b"fake engine")
        return out_path

    def fake_torch_trt(ckpt: Path, spec: object, out_path: Path) -> Path:
        calls.append(("torch-tensorrt", Path(ckpt), spec))
        out_path.write_bytes(b"fake engine")
        return out_path

    monkeypatch.setattr(targets, "_engine_unavailable", lambda: None)
    monkeypatch.setattr(trt_layer, "build_engine", fake_build)
    monkeypatch.setattr(dynamo_layer, "build_engine_torch_tensorrt", fake_torch_trt)
    return calls


def test_fp16_engine_is_built_from_an_fp16_onnx(tiny_ckpt: Path, tmp_path: Path, recorded) -> None:
    res = run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "out"), format="all", fp16=True, batch="1,2,4"))
    [(via, types, spec)] = recorded
    assert via == "onnx" and spec.precision == "fp16" and spec.batch == (1, 2, 4)  # type: ignore[attr-defined]
    assert onnx.TensorProto.FLOAT16 in types, "the FP16 engine's ONNX holds no float16 weights"  # type: ignore[operator]
    assert (res.out / "model.fp16.engine").read_bytes() == b"fake engine"
    assert (res.out / "model.onnx").is_file() and (res.out / "model.fp16.onnx").is_file()


def test_via_torch_tensorrt_builds_from_the_checkpoint(tiny_ckpt: Path, tmp_path: Path, recorded) -> None:
    run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "out"), format="engine", via="torch-tensorrt"))
    [(via, src, spec)] = recorded
    assert via == "torch-tensorrt" and src == tiny_ckpt and spec.precision == "fp32"  # type: ignore[attr-defined]


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
