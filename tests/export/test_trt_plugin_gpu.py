"""The omsf2 TensorRT plugins inside real engines, against onnxruntime on the reference graph (``needs_trt``).

Two plugin paths carry the same contract (namespace ``omsf2``, ``MultiscalePool`` / ``ScaleFuse``
version 1): the C++ IPluginV3 library built by CMake, and ``tensorrt.plugin`` with AOT Triton
kernels (TensorRT >= 10.6). Each builds an engine from the ``--plugins`` ONNX; its outputs are
held to onnxruntime running the plain (reference-op) ONNX of the same checkpoint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.needs_trt

H = W = 64  # tiny_ckpt's input size (tests/export/conftest.py)


@pytest.fixture(scope="module")
def graphs(tiny_ckpt: Path, tmp_path_factory) -> dict[str, Path]:
    from omsf2.export.onnx import OnnxExportSpec, export_onnx

    d = tmp_path_factory.mktemp("trt_plugin")
    export_onnx(OnnxExportSpec(checkpoint=str(tiny_ckpt), out=str(d / "model.onnx")))
    export_onnx(OnnxExportSpec(checkpoint=str(tiny_ckpt), out=str(d / "model.plugins.onnx"), plugins=True))
    return {"ref": d / "model.onnx", "plugins": d / "model.plugins.onnx", "dir": d}


@pytest.fixture(scope="module")
def plugin_library(tmp_path_factory) -> Path:
    """``$OMSF2_PLUGIN_LIB``, else libomsf2_plugins.so built here by CMake (``$TENSORRT_ROOT`` as a hint)."""
    if lib := os.environ.get("OMSF2_PLUGIN_LIB"):
        return Path(lib)
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("needs cmake or OMSF2_PLUGIN_LIB to get libomsf2_plugins.so")
    src = Path(__file__).resolve().parents[2] / "omsf2" / "kernels" / "cuda"
    build = tmp_path_factory.mktemp("plugin_build")
    cfg = [cmake, "-S", str(src), "-B", str(build)]
    if root := os.environ.get("TENSORRT_ROOT"):
        cfg.append(f"-DTensorRT_ROOT={root}")
    for cmd in (cfg, [cmake, "--build", str(build), "-j"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    libs = list(build.rglob("libomsf2_plugins.so"))
    assert libs, "CMake did not build libomsf2_plugins.so: is TensorRT found? (set TENSORRT_ROOT)"
    return libs[0]


def _reference(graphs: dict[str, Path], x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(graphs["ref"]), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"image": x})[0]


def _check(engine_logits: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(engine_logits, ref, atol=1e-3, rtol=1e-3)
    assert (engine_logits.argmax(1) == ref.argmax(1)).all()


def test_cpp_plugin_engine_matches_onnxruntime_reference(graphs, plugin_library) -> None:
    from omsf2.export.tensorrt import EngineSpec, build_engine, load_engine, run_engine

    x = np.random.default_rng(0).random((2, 1, H, W), dtype=np.float32)
    spec = EngineSpec(batch=(1, 2, 2), precision="fp32", plugin_library=plugin_library)
    engine = build_engine(graphs["plugins"], spec, graphs["dir"] / "cpp.engine")
    out = run_engine(load_engine(engine, plugin_library=plugin_library), x)
    _check(out["logits"], _reference(graphs, x))


def test_python_triton_plugin_engine_matches_onnxruntime_reference(graphs) -> None:
    import tensorrt as trt

    from omsf2.runtime.engine_manifest import parse_trt_version

    if parse_trt_version(trt.__version__)[:2] < (10, 6):
        pytest.skip(f"tensorrt.plugin AOT plugins need TensorRT >= 10.6, this is {trt.__version__}")
    from omsf2.export.tensorrt import EngineSpec, build_engine, load_engine, run_engine
    from omsf2.kernels.triton.trt_plugin import register_trt_plugins

    register_trt_plugins()
    x = np.random.default_rng(1).random((2, 1, H, W), dtype=np.float32)
    engine = build_engine(graphs["plugins"], EngineSpec(batch=(1, 2, 2)), graphs["dir"] / "triton.engine")
    out = run_engine(load_engine(engine), x)
    _check(out["logits"], _reference(graphs, x))
