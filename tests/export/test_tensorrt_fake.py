"""omsf2's own logic around the TensorRT API, driven by a FAKE ``tensorrt`` module that records calls.

These tests prove nothing about TensorRT itself: the fake accepts whatever omsf2 asks for. They
check what omsf2 decides before and around each call (the optimisation profile from ``batch``
and the ONNX's H/W, the strongly typed flag per TensorRT version, DLA and compatibility flags,
plugin loading, the manifest and its atomic write, error messages). The real build and parity
tests are ``test_tensorrt_gpu.py`` (``needs_trt``).
"""

from __future__ import annotations

import enum
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from omsf2.export.tensorrt import (
    EngineSpec,
    TensorRTError,
    build_engine,
    load_engine,
    run_engine,
    tensorrt_unavailable_reason,
    to_fp16_onnx,
)
from omsf2.export.trt_dynamo import build_engine_torch_tensorrt
from omsf2.runtime import tensorrt_engine as trt_runtime
from omsf2.runtime.engine_manifest import manifest_path, read_manifest

ORIN = ("Orin (nvgpu)", (8, 7))
H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


# --------------------------------------------------------------------------- tiny ONNX graphs


def _graph_onnx(path: Path, kind: str = "fp32", hw: tuple[int | str, int | str] = (32, 32)) -> Path:
    """image (N,1,H,W) -> Conv -> Relu -> GlobalAveragePool -> Flatten -> logits; fp32, fp16, qdq or qdq-u8."""
    fdt = np.float16 if kind == "fp16" else np.float32
    tdt = TensorProto.FLOAT16 if kind == "fp16" else TensorProto.FLOAT
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), fdt), "w")
    inits = [w]
    nodes = []
    x = "image"
    if kind.startswith("qdq"):
        zdt = np.uint8 if kind == "qdq-u8" else np.int8
        inits += [
            numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(0, zdt), "z"),
        ]
        nodes += [helper.make_node("QuantizeLinear", ["image", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]  # fmt: skip
        x = "dq"
    nodes += [
        helper.make_node("Conv", [x, "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", tdt, ["batch", 1, *hw])],
        [helper.make_tensor_value_info("logits", tdt, ["batch", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.metadata_props.add(key="omsf2.preprocess", value=json.dumps({"size": [32, 32]}))
    model.metadata_props.add(key="omsf2.classes", value=json.dumps(list("abcd")))
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------- the fake module


class _Sev(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


def _enum(name: str, members: dict[str, int]) -> Any:
    return enum.IntEnum(name, members)


def make_fake_trt(
    version: str = "10.3.0.30", *, strongly_typed_enum: bool = True, build_ok: bool = True
) -> types.ModuleType:
    """A ``tensorrt`` stand-in: records every call in ``trt.calls``; parses ONNX inputs/outputs with onnx."""
    trt: Any = types.ModuleType("tensorrt")
    trt.__version__ = version
    calls: list[tuple] = []
    trt.calls = calls
    trt.registry_loads = []

    class ILogger:
        Severity: Any = _Sev

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger
    members = {"EXPLICIT_BATCH": 0, "PREFER_PRECISION_CONSTRAINTS": 1}
    if strongly_typed_enum:
        members["STRONGLY_TYPED"] = 5
    trt.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", members)
    trt.BuilderFlag = _enum("BuilderFlag", {"FP16": 0, "INT8": 1, "GPU_FALLBACK": 2, "VERSION_COMPATIBLE": 3,
                                            "EXCLUDE_LEAN_RUNTIME": 4})  # fmt: skip
    trt.MemoryPoolType = _enum("MemoryPoolType", {"WORKSPACE": 0})
    trt.HardwareCompatibilityLevel = _enum("HardwareCompatibilityLevel", {"NONE": 0, "AMPERE_PLUS": 1})
    trt.DeviceType = _enum("DeviceType", {"GPU": 0, "DLA": 1})
    trt.DataType = _enum("DataType", {"FLOAT": 0, "HALF": 1})
    trt.TensorIOMode = _enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.nptype = lambda dt: {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}[dt]

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

    def _tensor(vi):
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
        dt = trt.DataType.HALF if vi.type.tensor_type.elem_type == TensorProto.FLOAT16 else trt.DataType.FLOAT
        return Tensor(vi.name, dims, dt)

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.outputs = flags, [], []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))
        get_input = lambda self, i: self.inputs[i]  # noqa: E731
        get_output = lambda self, i: self.outputs[i]  # noqa: E731

    class ParserError:
        def __str__(self):
            return "In node 0 (Conv):\n  UNSUPPORTED_NODE: fake parse failure"

    class OnnxParser:
        fail = False

        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            if OnnxParser.fail:
                self.num_errors = 2
                return False
            model = onnx.load(path)
            self.network.inputs = [_tensor(v) for v in model.graph.input]
            self.network.outputs = [_tensor(v) for v in model.graph.output]
            return True

        def get_error(self, i):
            return ParserError()

    trt.OnnxParser = OnnxParser

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"timings:" + self.data

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.pool = set(), [], {}

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool] = size

        def set_flag(self, flag):
            calls.append(("set_flag", flag))
            self.flags.add(flag)

        def add_optimization_profile(self, p):
            self.profiles.append(p)

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def __setattr__(self, k, v):
            if k not in ("flags", "profiles", "pool", "cache"):
                calls.append(("config." + k, v))
            object.__setattr__(self, k, v)

    class Profile:
        def set_shape(self, name, min, opt, max):  # TensorRT's keyword names
            calls.append(("set_shape", name, tuple(min), tuple(opt), tuple(max)))

    class Registry:
        def load_library(self, path):
            trt.registry_loads.append(path)
            return object()

    trt.get_plugin_registry = lambda: Registry()

    class Builder:
        num_DLA_cores = 2

        def __init__(self, logger):
            self.logger = logger

        get_plugin_registry = lambda self: Registry()  # noqa: E731

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network(flags)

        create_builder_config = lambda self: Config()  # noqa: E731
        create_optimization_profile = lambda self: Profile()  # noqa: E731

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            self.config = config
            if not build_ok:
                self.logger.log(_Sev.ERROR, "fake: no implementation for layer /conv/Conv")
                return None
            return b"ENGINE:" + json.dumps([t.name for t in network.inputs + network.outputs]).encode()

    trt.Builder = Builder

    class Engine:
        def __init__(self, data):
            self.io = [("image", trt.TensorIOMode.INPUT), ("logits", trt.TensorIOMode.OUTPUT)]
            self.num_io_tensors = 2

        get_tensor_name = lambda self, i: self.io[i][0]  # noqa: E731
        get_tensor_mode = lambda self, n: dict(self.io)[n]  # noqa: E731
        get_tensor_dtype = lambda self, n: trt.DataType.FLOAT  # noqa: E731
        get_tensor_profile_shape = lambda self, n, p: [(1, 1, 32, 32), (4, 1, 32, 32), (8, 1, 32, 32)]  # noqa: E731

        def create_execution_context(self):
            raise AssertionError("a bad batch must be refused before any context is made")

    class Runtime:
        def __init__(self, logger):
            calls.append(("Runtime",))

        def deserialize_cuda_engine(self, data):
            calls.append(("deserialize_cuda_engine", getattr(self, "engine_host_code_allowed", False)))
            return Engine(data) if data.startswith(b"ENGINE:") else None

    trt.Runtime = Runtime
    return trt


@pytest.fixture()
def fake(monkeypatch):
    """Install a fake tensorrt 10.3 and an Orin GPU; returns a function to swap version / GPU."""

    def install(version: str = "10.3.0.30", gpu=ORIN, **kw) -> types.ModuleType:
        trt = make_fake_trt(version, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(trt_runtime, "gpu_info", lambda: gpu)
        return trt

    return install


@pytest.fixture()
def fp32_onnx(tmp_path) -> Path:
    return _graph_onnx(tmp_path / "model.onnx")


@pytest.fixture()
def qdq_onnx(tmp_path) -> Path:
    return _graph_onnx(tmp_path / "model.int8.onnx", "qdq")


def _names(calls, what):
    return [c for c in calls if c[0] == what]


# --------------------------------------------------------------------------- build


def test_fake_profile_from_batch_and_onnx_hw(fake, fp32_onnx, tmp_path) -> None:
    trt = fake()
    spec = EngineSpec(batch=(1, 4, 8), precision="fp32", workspace_mib=256)
    build_engine(fp32_onnx, spec, tmp_path / "m.engine")
    assert _names(trt.calls, "set_shape") == [("set_shape", "image", (1, 1, 32, 32), (4, 1, 32, 32), (8, 1, 32, 32))]
    flags = {c[1] for c in _names(trt.calls, "set_flag")}
    assert not flags & {trt.BuilderFlag.FP16, trt.BuilderFlag.INT8}, "strongly typed: no precision flags"


def test_fake_dynamic_hw_comes_from_spec_or_metadata(fake, tmp_path) -> None:
    trt = fake()
    path = _graph_onnx(tmp_path / "dyn.onnx", hw=("h", "w"))
    build_engine(path, EngineSpec(batch=(1, 1, 2)), tmp_path / "a.engine")  # metadata size [32, 32]
    build_engine(path, EngineSpec(batch=(1, 1, 2), image_size=(64, 48)), tmp_path / "b.engine")
    shapes = _names(trt.calls, "set_shape")
    assert shapes[0][2] == (1, 1, 32, 32) and shapes[1][4] == (2, 1, 64, 48)


@pytest.mark.parametrize(
    ("version", "has_enum", "expected"),
    [("10.3.0.30", True, 1 << 5), ("11.1.0.7", True, 1 << 5), ("11.1.0.7", False, 0)],
    ids=["10.3-flag", "11.1-flag-accepted", "11.1-always-strong"],
)
def test_fake_strongly_typed_flag_per_version(fake, fp32_onnx, tmp_path, version, has_enum, expected) -> None:
    trt = fake(version, strongly_typed_enum=has_enum)
    build_engine(fp32_onnx, EngineSpec(), tmp_path / "m.engine")
    assert _names(trt.calls, "create_network") == [("create_network", expected)]
    assert read_manifest(manifest_path(tmp_path / "m.engine")).tensorrt_version == version


@pytest.mark.parametrize(("version", "has_enum"), [("10.3.0", False), ("8.6.1", True)])
def test_fake_refuses_trt_without_strong_typing(fake, fp32_onnx, tmp_path, version, has_enum) -> None:
    fake(version, strongly_typed_enum=has_enum)
    with pytest.raises(TensorRTError, match=r"10\.x or 11\.x"):
        build_engine(fp32_onnx, EngineSpec(), tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_fake_dla_on_10_and_refused_where_trt_has_no_dla(fake, qdq_onnx, tmp_path) -> None:
    trt = fake("10.3.0.30")
    build_engine(qdq_onnx, EngineSpec(batch=(4, 4, 4), precision="int8", dla_core=1), tmp_path / "dla.engine")
    assert ("config.default_device_type", trt.DeviceType.DLA) in trt.calls
    assert ("config.DLA_core", 1) in trt.calls
    assert ("set_flag", trt.BuilderFlag.GPU_FALLBACK) in trt.calls
    assert _names(trt.calls, "set_shape") == [("set_shape", "image", *[(4, 1, 32, 32)] * 3)]
    with pytest.raises(ValueError, match="has 2 DLA core"):
        build_engine(qdq_onnx, EngineSpec(batch=(1, 1, 1), precision="int8", dla_core=2), tmp_path / "x.engine")
    for version in ("10.8.0", "11.1.0.7", "11.4.0"):
        fake(version)
        with pytest.raises(ValueError, match="has no DLA support"):
            build_engine(qdq_onnx, EngineSpec(batch=(1, 1, 1), precision="int8", dla_core=0), tmp_path / "y.engine")
    trt = fake("11.4.1")
    build_engine(qdq_onnx, EngineSpec(batch=(1, 1, 1), precision="int8", dla_core=0), tmp_path / "z.engine")
    assert ("config.DLA_core", 0) in trt.calls


def test_fake_compatibility_flags_and_plugin_library(fake, fp32_onnx, tmp_path) -> None:
    trt = fake("10.8.0.43", gpu=H100)
    lib = tmp_path / "libomsf2_plugins.so"
    lib.write_bytes(b"\x7fELF fake plugin")
    spec = EngineSpec(hardware_compat=True, version_compat=True, exclude_lean_runtime=True, plugin_library=lib,
                      builder_optimization_level=4)  # fmt: skip
    build_engine(fp32_onnx, spec, tmp_path / "m.engine")
    assert ("config.hardware_compatibility_level", trt.HardwareCompatibilityLevel.AMPERE_PLUS) in trt.calls
    assert ("set_flag", trt.BuilderFlag.VERSION_COMPATIBLE) in trt.calls
    assert ("set_flag", trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME) in trt.calls
    assert ("config.plugins_to_serialize", [str(lib)]) in trt.calls
    assert ("config.builder_optimization_level", 4) in trt.calls
    assert trt.registry_loads == [str(lib)]
    m = read_manifest(manifest_path(tmp_path / "m.engine"))
    assert m.plugin_library == lib.name and len(m.plugin_library_sha256 or "") == 64
    assert m.hardware_compat and m.version_compat


def test_fake_hardware_compat_needs_ampere_builder(fake, fp32_onnx, tmp_path) -> None:
    fake(gpu=("Xavier", (7, 2)))
    with pytest.raises(ValueError, match="Ampere or newer"):
        build_engine(fp32_onnx, EngineSpec(hardware_compat=True), tmp_path / "m.engine")


def test_fake_manifest_content_and_atomic_write(fake, qdq_onnx, tmp_path) -> None:
    fake()
    report = {
        "int8": {"method": "max", "calibration_sha256": "c" * 64, "accuracy_drop": 0.4, "top1_agreement": 0.99},
        "onnx_parity": {"max_abs_err": 1e-5, "top1_agreement": 1.0},
    }
    out = build_engine(qdq_onnx, EngineSpec(batch=(1, 2, 4), precision="int8"), tmp_path / "out" / "m.engine",
                       onnx_report=report)  # fmt: skip
    m = read_manifest(manifest_path(out))
    assert (m.tensorrt_version, m.gpu_name, m.compute_capability, m.precision) == ("10.3.0.30", ORIN[0], (8, 7), "int8")
    assert m.calibration_sha256 == "c" * 64 and m.accuracy["int8"]["accuracy_drop"] == 0.4
    assert m.accuracy["onnx_parity"]["top1_agreement"] == 1.0
    assert m.inputs[0].name == "image" and m.inputs[0].shape == (-1, 1, 32, 32)
    assert m.inputs[0].profile == ((1, 1, 32, 32), (2, 1, 32, 32), (4, 1, 32, 32))
    assert [(o.name, o.dtype, o.shape) for o in m.outputs] == [("logits", "float32", (-1, 4))]
    assert json.loads(m.metadata["omsf2.classes"]) == list("abcd")
    assert m.build["batch"] == [1, 2, 4] and m.build["via"] == "onnx-parser" and m.build["strongly_typed"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.engine", "m.engine.json"], "no temp files left"


def test_fake_build_failure_is_one_clear_error_and_writes_nothing(fake, fp32_onnx, tmp_path) -> None:
    fake(build_ok=False)
    with pytest.raises(TensorRTError, match=r"could not build 'model.onnx'.*no implementation for layer") as e:
        build_engine(fp32_onnx, EngineSpec(), tmp_path / "m.engine")
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_fake_parse_errors_are_one_line(fake, fp32_onnx, tmp_path) -> None:
    trt = fake()
    trt.OnnxParser.fail = True
    with pytest.raises(
        ValueError, match=r"cannot parse 'model.onnx': In node 0 \(Conv\): UNSUPPORTED_NODE.*\(\+1 more\)$"
    ):
        build_engine(fp32_onnx, EngineSpec(), tmp_path / "m.engine")


def test_fake_timing_cache_saved_then_reused(fake, fp32_onnx, tmp_path) -> None:
    trt = fake()
    cache = tmp_path / "timing.cache"
    build_engine(fp32_onnx, EngineSpec(timing_cache=cache), tmp_path / "a.engine")
    assert cache.read_bytes() == b"timings:"
    build_engine(fp32_onnx, EngineSpec(timing_cache=cache), tmp_path / "b.engine")
    assert [c[1] for c in _names(trt.calls, "create_timing_cache")] == [b"", b"timings:"]


def test_fake_fp16_engine_from_to_fp16_onnx(fake, fp32_onnx, tmp_path) -> None:
    fp16 = to_fp16_onnx(fp32_onnx, tmp_path / "model.fp16.onnx")
    model = onnx.load(str(fp16))
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT, "keep_io_types: float32 I/O"
    fake()
    m = read_manifest(manifest_path(build_engine(fp16, EngineSpec(precision="fp16"), tmp_path / "m.engine")))
    assert m.precision == "fp16" and m.inputs[0].dtype == "float32"


@pytest.mark.parametrize(
    ("kind", "precision", "match"),
    [
        ("fp32", "int8", "needs the Q/DQ ONNX"),
        ("qdq", "fp32", "holds Q/DQ nodes"),
        ("fp32", "fp16", "needs an fp16 ONNX"),
        ("fp16", "fp32", "holds float16 tensors"),
        ("qdq-u8", "int8", "zero point type UINT8"),
    ],
)
def test_precision_must_match_the_graph(tmp_path, kind, precision, match) -> None:
    # No TensorRT needed: the graph is checked before TensorRT is imported.
    path = _graph_onnx(tmp_path / f"{kind}.onnx", kind)
    with pytest.raises(ValueError, match=match):
        build_engine(path, EngineSpec(precision=precision), tmp_path / "m.engine")


def test_custom_ops_need_the_plugin_library(tmp_path) -> None:
    path = _graph_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.node.insert(0, helper.make_node("MultiscalePool", ["image"], ["mp"], domain="omsf2", windows=[5]))
    model.opset_import.append(helper.make_opsetid("omsf2", 1))
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match=r"omsf2 custom ops \(MultiscalePool\); set plugin_library"):
        build_engine(path, EngineSpec(), tmp_path / "m.engine")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"batch": (2, 1, 4)}, "min <= opt <= max"),
        ({"batch": (0, 1, 1)}, "min <= opt <= max"),
        ({"batch": (1, 2)}, "three integers"),
        ({"precision": "bf16"}, "choose one of fp32, fp16, int8"),
        ({"dla_core": 0}, "DLA runs fp16 and int8"),
        ({"precision": "int8", "dla_core": 0}, "DLA has no dynamic shapes"),
        ({"batch": (2, 2, 2), "precision": "int8", "dla_core": 0, "hardware_compat": True}, "not supported for DLA"),
        ({"exclude_lean_runtime": True}, "only applies with version_compat"),
        ({"builder_optimization_level": 6}, "0..5"),
        ({"workspace_mib": 0}, "positive integer"),
    ],
)
def test_engine_spec_validation(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        EngineSpec(**kw)


# --------------------------------------------------------------------------- load, run, environment


def test_fake_load_engine_checks_manifest_against_running_trt_and_gpu(fake, fp32_onnx, tmp_path) -> None:
    fake("10.3.0.30", gpu=ORIN)
    engine = build_engine(fp32_onnx, EngineSpec(), tmp_path / "m.engine")
    loaded = load_engine(engine)
    assert loaded.manifest.gpu_name == ORIN[0] and loaded.engine.num_io_tensors == 2
    fake("10.8.0.43", gpu=ORIN)
    with pytest.raises(ValueError, match=r"built with TensorRT 10\.3\.0\.30 on Orin.*running TensorRT 10\.8\.0\.43"):
        load_engine(engine)
    fake("10.3.0.30", gpu=H100)
    with pytest.raises(ValueError, match=r"\(sm_87\); running .* H100 .*\(sm_90\): compute capability differs"):
        load_engine(engine)
    engine.write_bytes(engine.read_bytes() + b"x")
    with pytest.raises(ValueError, match="does not match its manifest"):
        load_engine(engine)


def test_fake_version_compatible_engine_loads_on_newer_trt_as_trusted_plan(fake, fp32_onnx, tmp_path) -> None:
    fake("10.3.0.30", gpu=H100)
    engine = build_engine(fp32_onnx, EngineSpec(version_compat=True), tmp_path / "m.engine")
    trt = fake("10.8.0.43", gpu=H100)
    load_engine(engine)
    assert ("deserialize_cuda_engine", True) in trt.calls  # engine_host_code_allowed was set first
    fake("10.2.0", gpu=H100)
    with pytest.raises(ValueError, match="older than the builder"):
        load_engine(engine)


def test_fake_load_engine_checks_the_plugin_library(fake, fp32_onnx, tmp_path) -> None:
    fake()
    lib = tmp_path / "libomsf2_plugins.so"
    lib.write_bytes(b"v1")
    engine = build_engine(fp32_onnx, EngineSpec(plugin_library=lib), tmp_path / "m.engine")
    trt = fake()
    load_engine(engine)  # found beside the engine by the manifest's file name
    assert trt.registry_loads == [str(lib)]
    lib.write_bytes(b"v2")
    with pytest.raises(ValueError, match=r"is not the one engine 'm\.engine' was built with"):
        load_engine(engine)


def test_fake_run_engine_refuses_a_batch_outside_the_profile(fake, fp32_onnx, tmp_path) -> None:
    fake()
    loaded = load_engine(build_engine(fp32_onnx, EngineSpec(batch=(1, 4, 8)), tmp_path / "m.engine"))
    for bad in (np.zeros((9, 1, 32, 32)), np.zeros((1, 1, 16, 32)), np.zeros((1, 32, 32))):
        with pytest.raises(ValueError, match="outside the engine's profile"):
            run_engine(loaded, bad)


def test_unavailable_reason_names_what_is_missing(fake, monkeypatch) -> None:
    if "tensorrt" not in sys.modules:
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
        assert "TensorRT is not installed" in (tensorrt_unavailable_reason() or "")
    fake(gpu=None)
    assert (tensorrt_unavailable_reason() or "").startswith("no CUDA GPU is visible")
    fake(gpu=H100)
    assert tensorrt_unavailable_reason() is None


def test_build_without_tensorrt_is_a_one_line_error(monkeypatch, fp32_onnx, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTError, match="TensorRT is not installed"):
        build_engine(fp32_onnx, EngineSpec(), tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_torch_tensorrt_path_refuses_int8_and_needs_torch_tensorrt(monkeypatch, tmp_path) -> None:
    with pytest.raises(ValueError, match="int8 engines come from the Q/DQ ONNX"):
        build_engine_torch_tensorrt(tmp_path / "c.pt", EngineSpec(precision="int8"), tmp_path / "m.engine")
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)
    with pytest.raises(TensorRTError, match=r"Torch-TensorRT is not installed.*torch 2\.14 and TensorRT 11\.1"):
        build_engine_torch_tensorrt(tmp_path / "c.pt", EngineSpec(), tmp_path / "m.engine")
