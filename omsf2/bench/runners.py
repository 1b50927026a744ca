"""One runner per backend behind one small interface, chosen by the :data:`BACKENDS` table.

A runner is built once per (batch, image size), then :meth:`Runner.bind` returns the zero-argument
call that the interleaved rounds time (its input already in place, outputs waited for) and
:meth:`Runner.predict` returns logits for the accuracy column. Adding a backend is one class and
one table row. The runners are self-contained (onnxruntime, OpenVINO, TensorRT + cuda-python
sessions written here) so that they can later switch to :mod:`omsf2.runtime` sessions; each stack
is imported only when its runner is built.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the bench needs from a backend."""

    note: str

    def bind(self, x: np.ndarray) -> Any:
        """A zero-argument call that runs one batch ``x`` (N, C, H, W) float32 and waits for it."""
        ...

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, K) of a batch."""
        ...


@dataclasses.dataclass(frozen=True)
class Context:
    """What a runner is built from.

    Attributes:
        export_dir: the export folder (artifacts by their file names).
        checkpoint: the checkpoint the export came from, where it is here and unchanged.
        batch: batch size the runner is built for (static shapes where the backend prefers them).
        img_size: square input size.
        channels: input channels.
        threads: CPU threads the runtime may use.
    """

    export_dir: Path
    checkpoint: Path | None
    batch: int
    img_size: int
    channels: int
    threads: int


# --------------------------------------------------------------------------- PyTorch


class TorchRunner:
    """PyTorch eager FP32; channels_last when a quick probe finds it faster on this machine."""

    compile_model = False

    def __init__(self, ctx: Context, artifact: str | None) -> None:
        import torch

        from omsf2.models.checkpoint import load_checkpoint, model_from_checkpoint

        if ctx.checkpoint is None:
            raise ValueError("no checkpoint to build the PyTorch model from")
        torch.set_num_threads(ctx.threads)
        self._torch = torch
        self.model: Any = cast(Any, model_from_checkpoint(load_checkpoint(ctx.checkpoint)).eval())
        self.memory_format = self._pick_layout(ctx) if not self.compile_model else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.note = "channels_last" if self.memory_format == torch.channels_last else "contiguous (NCHW)"
        if self.compile_model:
            self.model = torch.compile(self.model, backend="inductor", dynamic=False)
            self.note = "inductor, dynamic=False"

    def _pick_layout(self, ctx: Context) -> Any:
        import time

        torch = self._torch
        x = torch.zeros(ctx.batch, ctx.channels, ctx.img_size, ctx.img_size)
        best: tuple[float, Any] | None = None
        for fmt in (torch.contiguous_format, torch.channels_last):
            m: Any = self.model.to(memory_format=fmt)
            xi = x.contiguous(memory_format=fmt)
            with torch.inference_mode():
                m(xi)
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    m(xi)
                    times.append(time.perf_counter() - t0)
            if best is None or min(times) < best[0]:
                best = (min(times), fmt)
        return best[1] if best else torch.contiguous_format

    def _forward(self, xt: Any) -> Any:
        with self._torch.inference_mode():
            return self.model(xt)

    def bind(self, x: np.ndarray) -> Any:
        """See :class:`Runner`."""
        xt = self._torch.from_numpy(np.ascontiguousarray(x)).contiguous(memory_format=self.memory_format)
        return lambda: self._forward(xt)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """See :class:`Runner`."""
        xt = self._torch.from_numpy(np.ascontiguousarray(x)).contiguous(memory_format=self.memory_format)
        logits, _ = self._forward(xt)
        return logits.float().numpy()


class TorchCompileRunner(TorchRunner):
    """``torch.compile`` with inductor (C++ codegen on CPU); compilation happens in the warm-up."""

    compile_model = True


# --------------------------------------------------------------------------- onnxruntime


class OrtRunner:
    """onnxruntime on the CPU: all graph optimisations, ``threads`` intra-op threads, sequential."""

    providers: tuple[Any, ...] = ("CPUExecutionProvider",)

    def __init__(self, ctx: Context, artifact: str | None) -> None:
        import onnxruntime as ort

        if artifact is None:
            raise ValueError("onnxruntime needs an ONNX artifact")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = ctx.threads
        so.inter_op_num_threads = 1
        profile_dir = os.environ.get("OMSF2_BENCH_ORT_PROFILE")
        if profile_dir:  # bench/profile_cpu.py: onnxruntime's per-node profiler
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(profile_dir) / Path(artifact).stem)
        self.session = ort.InferenceSession(str(ctx.export_dir / artifact), so, providers=list(self._providers(ctx)))
        self.input_name = self.session.get_inputs()[0].name
        used = self.session.get_providers()
        self.note = f"{used[0].removesuffix('ExecutionProvider')} EP, {ctx.threads} threads"

    def _providers(self, ctx: Context) -> tuple[Any, ...]:
        return self.providers

    def bind(self, x: np.ndarray) -> Any:
        """See :class:`Runner`."""
        feed = {self.input_name: np.ascontiguousarray(x, np.float32)}
        return lambda: self.session.run(None, feed)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """See :class:`Runner`."""
        return np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0])


class OrtCudaRunner(OrtRunner):
    """onnxruntime's CUDA execution provider (host latency: copies in and out included)."""

    def _providers(self, ctx: Context) -> tuple[Any, ...]:
        return (("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider")


class OrtTrtRunner(OrtRunner):
    """onnxruntime's TensorRT execution provider on the Q/DQ ONNX (explicit INT8), FP16 allowed."""

    def _providers(self, ctx: Context) -> tuple[Any, ...]:
        cache = ctx.export_dir / ".ort-trt-cache"
        opts = {
            "device_id": 0,
            "trt_fp16_enable": True,
            "trt_int8_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
        }
        return (("TensorrtExecutionProvider", opts), ("CUDAExecutionProvider", {"device_id": 0}))


# --------------------------------------------------------------------------- OpenVINO


class OpenVinoRunner:
    """OpenVINO's CPU plugin reading the ONNX, reshaped to the static batch, LATENCY hint, one stream."""

    precision_hint = "f32"

    def __init__(self, ctx: Context, artifact: str | None) -> None:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        if artifact is None:
            raise ValueError("OpenVINO needs an ONNX artifact")
        core = ov.Core()
        model = core.read_model(str(ctx.export_dir / artifact))
        model.reshape({0: [ctx.batch, ctx.channels, ctx.img_size, ctx.img_size]})
        # f32 for what is not INT8 unless asked: OpenVINO defaults to bf16 on CPUs with AVX512-BF16 or
        # AMX, which would make the "FP32" row another precision; bf16 is its own row (openvino-bf16).
        config = {
            props.inference_num_threads: ctx.threads,
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            props.num_streams: 1,
            hints.inference_precision: ov.Type.bf16 if self.precision_hint == "bf16" else ov.Type.f32,
        }
        if os.environ.get("OMSF2_BENCH_OV_PROFILE"):  # bench/profile_cpu.py: per-layer counters
            config[props.enable_profiling] = True
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.note = f"CPU plugin, {ctx.threads} threads, {self.precision_hint} outside INT8 layers"

    def bind(self, x: np.ndarray) -> Any:
        """See :class:`Runner`."""
        import openvino as ov

        self.request.set_input_tensor(ov.Tensor(np.ascontiguousarray(x, np.float32)))
        return self.request.infer

    def predict(self, x: np.ndarray) -> np.ndarray:
        """See :class:`Runner`."""
        res = self.request.infer({0: np.ascontiguousarray(x, np.float32)})
        return np.asarray(res[self.compiled.output(0)])

    def layer_times(self) -> list[tuple[str, str, str, float]]:
        """(node, type, kernel, ms) of the last inference; needs ``OMSF2_BENCH_OV_PROFILE=1``."""
        return [
            (p.node_name, p.node_type, p.exec_type, p.real_time.total_seconds() * 1e3)
            for p in self.request.get_profiling_info()
        ]


class OpenVinoBf16Runner(OpenVinoRunner):
    """OpenVINO with bf16 inference precision (CPUs with AVX512-BF16 or AMX): its accuracy column decides."""

    precision_hint = "bf16"


# --------------------------------------------------------------------------- TensorRT


def _cudart() -> Any:
    # cuda-python >= 12.6 has the runtime bindings in cuda.bindings; older releases in cuda.cudart.
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


class TensorRTRunner:
    """A TensorRT engine through its Python API, device memory and CUDA events from cuda-python.

    The timed call is what trtexec calls host latency (H2D copy, enqueue, D2H copy, synchronise);
    CUDA events around ``execute_async_v3`` give the GPU compute time, kept in :attr:`gpu_ms`.
    """

    def __init__(self, ctx: Context, artifact: str | None) -> None:
        import tensorrt as trt

        from omsf2.runtime.tensorrt_engine import load_engine

        if artifact is None:
            raise ValueError("TensorRT needs an engine artifact")
        self.loaded = load_engine(ctx.export_dir / artifact)
        eng = self.loaded.engine
        self.cudart = _cudart()
        names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        self.input = next(n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.outputs = [n for n in names if n != self.input]
        self.context = eng.create_execution_context()
        shape = (ctx.batch, ctx.channels, ctx.img_size, ctx.img_size)
        self.context.set_input_shape(self.input, shape)
        self.host = {n: np.empty(tuple(self.context.get_tensor_shape(n)), np.float32) for n in self.outputs}
        self.host[self.input] = np.zeros(shape, np.float32)
        self.device = {n: self._ok(self.cudart.cudaMalloc(max(a.nbytes, 1))) for n, a in self.host.items()}
        for n, ptr in self.device.items():
            self.context.set_tensor_address(n, int(ptr))
        self.stream = self._ok(self.cudart.cudaStreamCreate())
        self.events = (self._ok(self.cudart.cudaEventCreate()), self._ok(self.cudart.cudaEventCreate()))
        self.gpu_ms: list[float] = []
        self.note = f"TensorRT {trt.__version__}, {self.loaded.manifest.precision} engine"

    def _ok(self, res: Any) -> Any:
        err, *rest = res if isinstance(res, tuple) else (res,)
        if err != self.cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA runtime error {err}")
        return rest[0] if rest else None

    def _run(self) -> None:
        cu, s = self.cudart, self.stream
        h2d, d2h = cu.cudaMemcpyKind.cudaMemcpyHostToDevice, cu.cudaMemcpyKind.cudaMemcpyDeviceToHost
        x = self.host[self.input]
        self._ok(cu.cudaMemcpyAsync(self.device[self.input], x.ctypes.data, x.nbytes, h2d, s))
        self._ok(cu.cudaEventRecord(self.events[0], s))
        if not self.context.execute_async_v3(int(s)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self._ok(cu.cudaEventRecord(self.events[1], s))
        for n in self.outputs:
            a = self.host[n]
            self._ok(cu.cudaMemcpyAsync(a.ctypes.data, self.device[n], a.nbytes, d2h, s))
        self._ok(cu.cudaStreamSynchronize(s))
        self.gpu_ms.append(float(self._ok(cu.cudaEventElapsedTime(*self.events))))

    def bind(self, x: np.ndarray) -> Any:
        """See :class:`Runner`."""
        np.copyto(self.host[self.input], x)
        return self._run

    def predict(self, x: np.ndarray) -> np.ndarray:
        """See :class:`Runner`."""
        self.bind(x)()
        return self.host[self.outputs[0]].copy()

    def __del__(self) -> None:
        for ptr in getattr(self, "device", {}).values():
            self.cudart.cudaFree(ptr)


# --------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class Backend:
    """One row of the backend table.

    Attributes:
        name: what ``--backends`` takes.
        runner: the runner class.
        artifacts: candidate files in the export folder, first present wins (empty: the checkpoint).
        precision: ``fp32``, ``fp16`` or ``int8`` (which ceiling is its own).
        device: ``cpu`` or ``cuda``.
        modules: Python modules it imports (their absence is its skip reason).
        label: one line for the table.
    """

    name: str
    runner: type
    artifacts: tuple[str, ...]
    precision: str
    device: str
    modules: tuple[str, ...]
    label: str


BACKENDS: tuple[Backend, ...] = (
    Backend("torch", TorchRunner, (), "fp32", "cpu", ("torch",), "PyTorch eager FP32"),
    Backend("torch-compile", TorchCompileRunner, (), "fp32", "cpu", ("torch",), "torch.compile (inductor) FP32"),
    Backend("ort", OrtRunner, ("model.onnx",), "fp32", "cpu", ("onnxruntime",), "onnxruntime FP32"),
    Backend("ort-int8", OrtRunner, ("model.int8-cpu.onnx",), "int8", "cpu", ("onnxruntime",), "onnxruntime U8S8 Q/DQ"),
    Backend(
        "ort-int8-trt", OrtRunner, ("model.int8.onnx",), "int8", "cpu", ("onnxruntime",),
        "onnxruntime running the TensorRT contract (S8S8 Q/DQ)",
    ),
    Backend("openvino", OpenVinoRunner, ("model.onnx",), "fp32", "cpu", ("openvino",), "OpenVINO FP32"),
    Backend("openvino-bf16", OpenVinoBf16Runner, ("model.onnx",), "bf16", "cpu", ("openvino",), "OpenVINO BF16"),
    Backend(
        # U8S8 first: with Q/DQ after each ReLU its uint8 activations are what oneDNN's u8 x s8 (VNNI)
        # convolutions take natively; S8S8 activations cost a compensation pass (bench/results/cpu-analysis.md).
        "openvino-int8", OpenVinoRunner, ("model.int8-cpu.onnx", "model.int8.onnx"), "int8", "cpu", ("openvino",),
        "OpenVINO INT8 (Q/DQ ONNX)",
    ),
    Backend("ort-cuda", OrtCudaRunner, ("model.onnx",), "fp32", "cuda", ("onnxruntime",), "onnxruntime CUDA EP FP32"),
    Backend(
        "ort-trt", OrtTrtRunner, ("model.int8.onnx",), "int8", "cuda", ("onnxruntime",),
        "onnxruntime TensorRT EP (Q/DQ INT8)",
    ),
    Backend(
        "tensorrt", TensorRTRunner, ("model.int8.engine", "model.fp16.engine", "model.fp32.engine"), "int8", "cuda",
        ("tensorrt",), "TensorRT engine (Python API, cuda-python)",
    ),
)  # fmt: skip
BY_NAME = {b.name: b for b in BACKENDS}
# onnxruntime providers a GPU backend needs (absent from a CPU onnxruntime build).
_ORT_PROVIDER = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}


def parse_backends(text: str | None) -> list[str] | None:
    """``"torch,ort"`` -> ``["torch", "ort"]``; None or empty: every backend.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    if text is None or not text.strip():
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown backend {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    return list(dict.fromkeys(names))


def artifact_for(backend: Backend, export_dir: Path | None, planned: set[str]) -> str | None:
    """The first of the backend's artifacts present in ``export_dir`` or planned to be exported there."""
    for name in backend.artifacts:
        if name in planned or (export_dir is not None and (export_dir / name).is_file()):
            return name
    return None


def _cxx_compiler() -> str | None:
    for cand in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if cand and shutil.which(cand):
            return cand
    return None


def _has_bf16() -> bool:
    from omsf2.bench.machine import cpu_flags

    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _cuda_visible() -> bool:
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    try:
        cu = _cudart()
        err, count = cu.cudaGetDeviceCount()
        return bool(err == cu.cudaError_t.cudaSuccess and count > 0)
    except Exception:  # no cuda-python, or a driver that fails to load
        return False


def unavailable_reason(backend: Backend, export_dir: Path | None, planned: set[str], has_ckpt: bool) -> str | None:
    """Why ``backend`` cannot run here (one line), or None when it can."""
    missing = [m for m in backend.modules if importlib.util.find_spec(m) is None]
    if missing:
        extra = {"openvino": "openvino", "onnxruntime": "onnx", "tensorrt": "trt"}.get(missing[0], missing[0])
        return f"{missing[0]} is not installed (pip install 'omsf2[{extra}]')"
    if not backend.artifacts and not has_ckpt:
        return "needs the checkpoint the export came from (report.json's checkpoint is missing here or changed)"
    if backend.artifacts and artifact_for(backend, export_dir, planned) is None:
        return f"no {' or '.join(backend.artifacts)} in the export" + (
            " (export with --int8)" if backend.precision == "int8" and backend.device == "cpu" else ""
        )
    if backend.precision == "bf16" and not _has_bf16():
        return "this CPU has no bf16 instructions (AVX512-BF16 or AMX-BF16)"
    if backend.name == "torch-compile" and _cxx_compiler() is None:
        return "inductor needs a C++ compiler on the CPU (g++ or clang++); none on PATH"
    if backend.device == "cuda":
        if backend.name in _ORT_PROVIDER:
            import onnxruntime as ort

            if _ORT_PROVIDER[backend.name] not in ort.get_available_providers():
                return f"this onnxruntime has no {_ORT_PROVIDER[backend.name]} (pip install onnxruntime-gpu)"
        if backend.name == "tensorrt" and importlib.util.find_spec("cuda") is None:
            return "cuda-python is not installed (pip install 'omsf2[trt]')"
        if not _cuda_visible():
            return "no CUDA GPU is visible"
    return None


def build_runner(backend: Backend, ctx: Context, artifact: str | None) -> Runner:
    """Instantiate ``backend``'s runner for ``ctx``."""
    runner: Runner = backend.runner(ctx, artifact)
    return runner
