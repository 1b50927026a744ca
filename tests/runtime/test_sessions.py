"""Backend sessions behind one interface: OpenVINO (where installed) against onnxruntime, the backend table,
and the TensorRT session through a fake ``tensorrt`` and a fake cuda-python that simulate device memory."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from omsf2.runtime import sessions
from omsf2.runtime.bundle import load_bundle
from omsf2.runtime.predictor import Predictor


def test_backend_table_names_every_cli_choice() -> None:
    from omsf2.cli.predict import Backend

    assert tuple(b.value for b in Backend) == sessions.BACKEND_NAMES
    with pytest.raises(ValueError, match="unknown backend 'x'; choose one of auto, ort"):
        sessions.backend_rule("x")


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed")
def test_openvino_matches_onnxruntime(tiny_bundle_master: Path, images) -> None:
    ov = Predictor.from_bundle(tiny_bundle_master, backend="openvino", threads=1)
    ort = Predictor.from_bundle(tiny_bundle_master, backend="ort", threads=1)
    assert ov.backend == "openvino"
    for a, b in zip(ov.predict(images), ort.predict(images), strict=True):
        assert a.label == b.label
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-4)
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed")
def test_openvino_session_compiles_static_shapes_and_reuses_its_requests(tiny_bundle_master: Path) -> None:
    """The bench's configuration, owned by the session: static [N, C, H, W] per batch size (a bounded number,
    then one dynamic-batch model), LATENCY hint, one stream, f32; infer requests pooled, never made per call."""
    import threading

    pred = Predictor.from_bundle(tiny_bundle_master, backend="openvino", threads=1)
    s = pred.session
    assert isinstance(s, sessions.OpenVinoSession)
    x = np.random.default_rng(0).standard_normal((8, 1, 64, 64)).astype(np.float32)
    for n in (1, 1, 2, 1):
        pred.run_batch(x[:n])
    compiled = s._models
    assert set(compiled) == {1, 2}
    for n, entry in compiled.items():
        assert [d.get_length() for d in entry.compiled.input(0).get_partial_shape()] == [n, 1, 64, 64]
        assert entry._idle.qsize() == 1  # one request made, reused by every call
        assert str(entry.compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
        assert int(entry.compiled.get_property("NUM_STREAMS")) == 1
        assert str(entry.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
        assert entry.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    for n in (3, 4, 5, 6):  # past STATIC_SHAPES sizes: one shared dynamic-batch model
        got, _ = pred.run_batch(x[:n])
        assert got.shape[0] == n
    assert sum(k is not None for k in compiled) == sessions.STATIC_SHAPES and None in compiled
    assert compiled[None].compiled.input(0).get_partial_shape()[0].is_dynamic
    want, _ = Predictor.from_bundle(tiny_bundle_master, backend="ort", threads=1).run_batch(x)
    outs: list = [None] * 4

    def work(i: int) -> None:
        outs[i] = pred.run_batch(x[:2])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for got in outs:
        np.testing.assert_allclose(got, want[:2], atol=1e-4)
    assert 1 <= compiled[2]._idle.qsize() <= 4  # concurrent callers took a request each, all returned


def test_missing_backend_package_is_one_line(tiny_bundle_master: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ValueError, match=r"openvino: OpenVINO is not installed \(pip install openvino\)"):
        Predictor.from_bundle(tiny_bundle_master, backend="openvino")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ValueError, match=r"ort: onnxruntime is not installed"):
        Predictor.from_bundle(tiny_bundle_master, backend="ort")


# --------------------------------------------------------------------------- TensorRT through fakes

GPU = ("NVIDIA H100 80GB HBM3", (9, 0))


def _fake_cudart(gpu=GPU) -> types.ModuleType:
    """cuda-python's runtime API over host memory: device buffers are numpy arrays at real addresses."""
    import ctypes

    rt = types.ModuleType("cuda.bindings.runtime")
    ok = "success"
    rt.cudaError_t = types.SimpleNamespace(cudaSuccess=ok)
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    rt.buffers = {}
    rt.freed = []
    rt.pinned = []
    rt.freed_pinned = []

    def malloc(n):
        buf = np.zeros(n, np.uint8)
        rt.buffers[buf.ctypes.data] = buf
        return ok, buf.ctypes.data

    def malloc_host(n):
        err, ptr = malloc(n)
        rt.pinned.append(ptr)
        return err, ptr

    rt.cudaMalloc = malloc
    rt.cudaMallocHost = malloc_host
    rt.cudaFree = lambda p: rt.freed.append(p) or (ok,)
    rt.cudaFreeHost = lambda p: rt.freed_pinned.append(p) or (ok,)
    rt.cudaEventCreate = lambda: (ok, object())
    rt.cudaEventRecord = lambda ev, s: (ok,)
    rt.cudaEventElapsedTime = lambda a, b: (ok, 0.25)
    rt.cudaEventDestroy = lambda ev: (ok,)
    rt.cudaMemcpyAsync = lambda dst, src, n, kind, stream: ctypes.memmove(dst, src, n) and (ok,)
    rt.cudaStreamCreate = lambda: (ok, 7)
    rt.cudaStreamSynchronize = lambda s: (ok,)
    rt.cudaStreamDestroy = lambda s: (ok,)
    rt.cudaGetDeviceCount = lambda: (ok, 0 if gpu is None else 1)
    props = types.SimpleNamespace(
        name=(gpu or ("", (0, 0)))[0].encode(), major=(gpu or ("", (0, 0)))[1][0], minor=(gpu or ("", (0, 0)))[1][1]
    )
    rt.cudaGetDeviceProperties = lambda i: (ok, props)
    return rt


def _fake_trt(version: str = "10.3.0.30") -> types.ModuleType:
    """The slice of the TensorRT Python API that load_engine/run_engine use; the engine computes a known function."""
    import ctypes
    import enum

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class ILogger:
        class Severity(enum.Enum):
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dt: np.float32

    def view(ptr, shape):
        n = int(np.prod(shape))
        return np.ctypeslib.as_array((ctypes.c_float * n).from_address(ptr)).reshape(shape)

    class Context:
        def __init__(self) -> None:
            self.addr: dict[str, int] = {}

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)

        def get_tensor_shape(self, name):
            n = self.shape[0]
            return (n, 4) if name == "logits" else (n, 8, 8)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            x = view(self.addr["image"], self.shape)
            view(self.addr["logits"], (self.shape[0], 4))[:] = x.mean(axis=(1, 2, 3))[:, None] * np.arange(1, 5)
            view(self.addr["heatmap"], (self.shape[0], 8, 8))[:] = x[:, 0, ::8, ::8]
            return True

    class Engine:
        num_io_tensors = 3
        names = ("image", "logits", "heatmap")

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, n):
            return "in" if n == "image" else "out"

        def get_tensor_profile_shape(self, name, k):
            return [(1, 1, 64, 64), (2, 1, 64, 64), (2, 1, 64, 64)]

        def get_tensor_dtype(self, n):
            return "float32"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data.startswith(b"ENGINE:") else None

    trt.Runtime = Runtime
    return trt


@pytest.fixture()
def engine_bundle(tiny_export: Path, tmp_path: Path) -> Path:
    """An export folder with a (fake) FP32 engine and its manifest, bundled."""
    import hashlib
    import json
    import shutil

    from omsf2.runtime.bundle import BundleSpec, make_bundle
    from omsf2.runtime.engine_manifest import EngineManifest, TensorInfo, manifest_path, write_manifest

    export = Path(shutil.copytree(tiny_export, tmp_path / "export"))
    data = b"ENGINE:fake"
    (export / "model.fp32.engine").write_bytes(data)
    write_manifest(
        manifest_path(export / "model.fp32.engine"),
        EngineManifest(
            engine_file="model.fp32.engine",
            engine_sha256=hashlib.sha256(data).hexdigest(),
            tensorrt_version="10.3.0.30",
            gpu_name=GPU[0],
            compute_capability=GPU[1],
            precision="fp32",
            inputs=(TensorInfo("image", "float32", (-1, 1, 64, 64), ((1, 1, 64, 64), (2, 1, 64, 64), (2, 1, 64, 64))),),
            outputs=(TensorInfo("logits", "float32", (-1, 4)), TensorInfo("heatmap", "float32", (-1, 8, 8))),
        ),
    )
    report = json.loads((export / "report.json").read_text())
    report["artifacts"]["engine_fp32"] = {"file": "model.fp32.engine", "sha256": hashlib.sha256(data).hexdigest()}
    (export / "report.json").write_text(json.dumps(report))
    return make_bundle(BundleSpec(str(export), str(tmp_path / "bundle"))).root


def test_tensorrt_session_runs_the_engine_with_cuda_python_memory(engine_bundle: Path, images, monkeypatch) -> None:
    cudart = _fake_cudart()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt())
    monkeypatch.setitem(sys.modules, "cuda", types.SimpleNamespace(bindings=types.SimpleNamespace(runtime=cudart)))
    monkeypatch.setitem(sys.modules, "cuda.bindings", types.SimpleNamespace(runtime=cudart))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    assert set(load_bundle(engine_bundle).metadata["files"]) >= {"model.fp32.engine", "model.fp32.engine.json"}
    pred = Predictor.from_bundle(engine_bundle)  # auto: TensorRT is "available"
    assert pred.backend == "tensorrt" and pred.max_batch == 2  # the engine profile's max batch
    got = pred.predict(images)  # 5 images -> engine batches of 2, 2, 1
    from omsf2.data.io import read_image
    from omsf2.data.preprocess import preprocess_batch, unletterbox

    x = preprocess_batch([read_image(p) for p in images], pred.spec)
    logits = x.mean(axis=(1, 2, 3))[:, None] * np.arange(1, 5)
    e = np.exp(logits - logits.max(1, keepdims=True))
    for k, p in enumerate(got):
        np.testing.assert_allclose(list(p.probabilities.values()), e[k] / e[k].sum(), rtol=1e-5)
        np.testing.assert_allclose(p.heatmap, unletterbox(x[k, 0, ::8, ::8], read_image(images[k]).shape, pred.spec))
    # Buffers are made once per calling thread (3 device + 3 pinned host), not per batch, and freed on close.
    assert len(cudart.buffers) == 6 and len(cudart.pinned) == 3 and not cudart.freed
    import threading

    worker = threading.Thread(target=pred.predict, args=(images[:1],))  # a second thread: its own context
    worker.start()
    worker.join(timeout=30)
    assert len(cudart.buffers) == 12
    pred.session.close()
    assert len(cudart.freed) == 6 and sorted(cudart.freed_pinned) == sorted(cudart.pinned)


def test_tensorrt_engine_of_another_gpu_is_refused_in_one_line(engine_bundle: Path, monkeypatch) -> None:
    cudart = _fake_cudart(("NVIDIA A100-SXM4-80GB", (8, 0)))
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt())
    monkeypatch.setitem(sys.modules, "cuda.bindings", types.SimpleNamespace(runtime=cudart))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    with pytest.raises(
        ValueError, match=r"built with TensorRT 10\.3\.0\.30 on NVIDIA H100.*compute capability differs"
    ):
        Predictor.from_bundle(engine_bundle, backend="tensorrt")
    assert Predictor.from_bundle(engine_bundle).backend == "ort"  # auto moves on to onnxruntime, with a warning


@pytest.mark.needs_trt
def test_real_tensorrt_engine_bundle_matches_onnxruntime(tiny_export: Path, images, tmp_path: Path) -> None:
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.runtime.bundle import BundleSpec, make_bundle

    export = tmp_path / "export"
    from omsf2.data.synthetic import write_dataset

    write_dataset(tmp_path / "phantoms", 8, seed=1, size=64, n_val=4, n_test=8, workers=1)  # the engine gate's images
    run_export(ExportSpec(str(tiny_export.parent / "tiny.pt"), str(export), format="all", batch="1,2,4",
                          eval_data=str(tmp_path / "phantoms" / "test"),
                          max_drop=100.0, min_agreement=0.0))  # fmt: skip
    bundle = make_bundle(BundleSpec(str(export), str(tmp_path / "bundle"))).root
    trt = Predictor.from_bundle(bundle, backend="tensorrt")
    ort = Predictor.from_bundle(bundle, backend="ort")
    assert Predictor.from_bundle(bundle).backend == "tensorrt" and trt.max_batch == 4
    for a, b in zip(trt.predict(images), ort.predict(images), strict=True):
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-3)
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-2)


def test_ort_session_can_run_qdq_as_float_ops(tiny_bundle_master: Path) -> None:
    import onnxruntime as ort

    path = tiny_bundle_master / "model.onnx"
    plain = sessions.ort_session(path, 1)
    raw = sessions.ort_session(path, 1, disable_optimizations=True)
    assert raw.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert plain.get_session_options().graph_optimization_level != ort.GraphOptimizationLevel.ORT_DISABLE_ALL
