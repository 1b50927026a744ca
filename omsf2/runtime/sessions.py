"""Inference sessions: one small class per backend behind one interface, chosen by the rules table.

A session owns its backend's state for its whole life and only runs batches: ``run(batch) ->
(logits, heatmap)`` for a float32 ``(N, C, H, W)`` batch of at most ``max_batch`` images (the
:class:`~omsf2.runtime.predictor.Predictor` chunks, checks and activates; nothing else calls a
session). Each is built from the bytes the bundle verified, never from a second read of the file.

* onnxruntime (:class:`OrtSession`): one ``InferenceSession`` with every graph optimisation,
  sequential execution, ``threads`` intra-op threads and one inter-op thread; ``run`` is
  thread-safe. CPU, CUDA or TensorRT execution provider by backend.
* OpenVINO (:class:`OpenVinoSession`): the model compiled for the CPU on the process's one ``Core``
  (:mod:`omsf2.runtime.openvino_core`: a released CPU plugin must not leave a thread's signal stack
  unmapped) with the LATENCY hint, one
  stream and f32 (or bf16) inference precision, reshaped to a static ``[N, C, H, W]`` for each batch
  size it meets (the bundle fixes C, H, W): the configuration ``omsf2 bench`` found fastest. Each
  compiled model keeps a pool of infer requests, so concurrent callers each take one and none is
  created per call. At most :data:`STATIC_SHAPES` batch sizes get a static model of their own;
  further sizes share one model with a dynamic batch, so memory stays bounded for a server whose
  batches vary.
* TensorRT (:class:`~omsf2.runtime.tensorrt_engine.TensorRTSession`): one execution context, CUDA
  stream and pinned host / device buffers per calling thread, allocated on its first call.

Every backend stack is imported when a session is created, never when this module is imported,
and torch is never imported. The trade-off: a graph holding the ``omsf2`` custom ops needs
``onnx`` to be expanded for onnxruntime and OpenVINO (:mod:`omsf2.runtime.ort_custom_ops`); a
plain graph goes to the backend as bytes, so ``pip install omsf2[runtime]`` (no onnx) runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from omsf2.op_contract import CUSTOM_OPS
from omsf2.runtime.rules import AUTO_ORDER, BACKEND_RULES, BackendRule, backend_rule

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "heatmap")
#: Batch sizes an OpenVINO session compiles a static model for before it shares a dynamic one.
STATIC_SHAPES = 4
BACKEND_NAMES = ("auto", *(r.name for r in BACKEND_RULES))

__all__ = [
    "AUTO_ORDER",
    "BACKEND_NAMES",
    "BackendUnavailable",
    "OpenVinoSession",
    "OrtSession",
    "Session",
    "SessionOptions",
    "backend_rule",
    "make_session",
    "ort_session",
    "run_session",
]


class BackendUnavailable(RuntimeError):
    """The backend's package (or device) is missing here; the message says what to install."""


@dataclasses.dataclass(frozen=True)
class SessionOptions:
    """How a session runs.

    Attributes:
        threads: CPU threads (onnxruntime intra-op, OpenVINO inference threads); 0: the backend's default.
        profile_dir: onnxruntime writes its per-node profile there and OpenVINO keeps per-layer
            counters (:meth:`OpenVinoSession.layer_times`); None: no profiling.
        gpu_timing: TensorRT: time each batch on the GPU with CUDA events (``gpu_times_ms``).
        triton_url: the ``triton`` backend's server, ``HOST:PORT`` (gRPC) or ``http://HOST:PORT``.
        triton_model: the server's model name (``omsf2 serve triton --model-name``).
    """

    threads: int = 0
    profile_dir: Path | None = None
    gpu_timing: bool = False
    triton_url: str | None = None
    triton_model: str = "omsf2"

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 0:
            raise ValueError(f"threads must be a non-negative integer, got {self.threads!r}")
        if self.triton_url is not None:
            from omsf2.runtime.triton_client import parse_url

            parse_url(self.triton_url)


class Session(Protocol):
    """What the predictor needs from a backend."""

    name: str
    max_batch: int

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N, K), heatmap (N, h, w)) for a float32 (N, C, H, W) batch, N <= max_batch."""
        ...


# --------------------------------------------------------------------------- the graph


def _graph(model: bytes | Any) -> bytes | Any:
    """Serialized ONNX bytes, with ``omsf2`` custom ops expanded when the graph holds any (needs onnx)."""
    if not isinstance(model, bytes | bytearray):
        from omsf2.runtime.ort_custom_ops import expand_plugins, has_plugins

        return expand_plugins(model).SerializeToString() if has_plugins(model) else model.SerializeToString()
    if not any(op.encode() in model for op in CUSTOM_OPS):  # no custom op's name in the file: nothing to expand
        return bytes(model)
    try:
        import onnx
    except ImportError:
        return bytes(model)  # onnxruntime then reports the unknown domain in its own words
    from omsf2.runtime.ort_custom_ops import expand_plugins, has_plugins

    proto = onnx.load_from_string(bytes(model))
    return expand_plugins(proto).SerializeToString() if has_plugins(proto) else bytes(model)


def _read(model: bytes | str | os.PathLike[str] | Any) -> bytes | Any:
    """Bytes for a path (reading it once), else the bytes or ModelProto given."""
    if isinstance(model, str | os.PathLike):
        return Path(model).read_bytes()
    return model


# --------------------------------------------------------------------------- onnxruntime


def ort_session(
    model: Any,
    threads: int = 0,
    *,
    disable_optimizations: bool = False,
    providers: tuple[Any, ...] = ("CPUExecutionProvider",),
    profile_dir: Path | None = None,
) -> Any:
    """An onnxruntime session for ONNX bytes, a ModelProto or a path (``omsf2`` custom ops expanded).

    Every session omsf2 makes comes from here, with the options ``omsf2 bench`` measures: all graph
    optimisations, sequential execution, ``threads`` intra-op threads and one inter-op thread.

    Args:
        model: ONNX bytes, an ``onnx.ModelProto`` or the path of an ``.onnx`` file.
        threads: intra-op threads (0: onnxruntime's default, one per physical core).
        disable_optimizations: ``ORT_DISABLE_ALL``: Q/DQ nodes run as the float ops they are
            instead of being fused into integer kernels (the export gate's Q/DQ-float mode).
        providers: execution providers in order of preference (names or (name, options)).
        profile_dir: write onnxruntime's per-node profile there (None: off).

    Raises:
        BackendUnavailable: onnxruntime is not installed.
        RuntimeError: onnxruntime cannot load the graph (one line).
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailable("onnxruntime is not installed (pip install 'omsf2[runtime]')") from e
    graph = _graph(_read(model))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if disable_optimizations
        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(profile_dir) / "onnxruntime")
    try:
        return ort.InferenceSession(graph, opts, providers=list(providers))
    except Exception as e:  # onnxruntime's own exception types derive from Exception only
        raise RuntimeError(f"onnxruntime cannot load the graph: {' '.join(str(e).split())[:300]}") from e


def run_session(session: Any, images: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(logits, heatmap) of a raw onnxruntime session over ``images`` in batches of ``batch`` (export's checks)."""
    logits, heat = [], []
    for i in range(0, len(images), batch):
        lo, hm = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images[i : i + batch])})
        logits.append(lo)
        heat.append(hm)
    return np.concatenate(logits), np.concatenate(heat)


def _ort_trt_cache(model: bytes) -> Path:
    """Where the TensorRT execution provider keeps its engines: per model, outside the (verified) bundle."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "omsf2" / "ort-trt"
    return base / hashlib.sha256(model).hexdigest()[:16]


class OrtSession:
    """onnxruntime on the CPU, or through its CUDA or TensorRT execution provider; ``run`` is thread-safe."""

    def __init__(
        self, model: Any, options: SessionOptions, *, device: str = "cpu", name: str = "ort", max_batch: int = 32
    ) -> None:
        self.name, self.max_batch = name, max_batch
        providers: tuple[Any, ...] = ("CPUExecutionProvider",)
        if device != "cpu":
            providers = self._gpu_providers(device, model)
        self._session = ort_session(model, options.threads, providers=providers, profile_dir=options.profile_dir)
        used = self._session.get_providers()
        self.note = f"{used[0].removesuffix('ExecutionProvider')} EP, {options.threads or 'default'} threads"

    @staticmethod
    def _gpu_providers(device: str, model: Any) -> tuple[Any, ...]:
        import onnxruntime as ort

        need = "TensorrtExecutionProvider" if device == "tensorrt" else "CUDAExecutionProvider"
        if need not in ort.get_available_providers():
            raise BackendUnavailable(f"this onnxruntime has no {need} (install onnxruntime-gpu on a CUDA machine)")
        cuda = ("CUDAExecutionProvider", {"device_id": 0})
        if device != "tensorrt":
            return (cuda, "CPUExecutionProvider")
        data = model if isinstance(model, bytes | bytearray) else b""
        trt = {
            "device_id": 0,
            "trt_fp16_enable": True,
            "trt_int8_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(_ort_trt_cache(bytes(data))),
        }
        return (("TensorrtExecutionProvider", trt), cuda)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, heatmap) of one batch."""
        lo, hm = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(batch, np.float32)})
        return lo, hm

    def end_profiling(self) -> str:
        """Stop onnxruntime's profiler; the path of the JSON trace it wrote."""
        return str(self._session.end_profiling())


# --------------------------------------------------------------------------- OpenVINO


class _Compiled:
    """One compiled model and its pool of idle infer requests."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.outputs = [compiled.output(n) for n in OUTPUT_NAMES]
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.last: Any = None

    @contextlib.contextmanager
    def request(self) -> Iterator[Any]:
        """An idle infer request (a new one only when every request is busy), returned to the pool after use."""
        try:
            req = self._idle.get_nowait()
        except queue.Empty:
            req = self.compiled.create_infer_request()
        try:
            yield req
        finally:
            self.last = req
            self._idle.put(req)


class OpenVinoSession:
    """OpenVINO's CPU plugin; see the module docstring for its configuration."""

    def __init__(
        self,
        model: Any,
        options: SessionOptions,
        *,
        input_chw: tuple[int, int, int],
        precision: str = "f32",
        name: str = "openvino",
        max_batch: int = 32,
    ) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailable("OpenVINO is not installed (pip install openvino)") from e
        self.name, self.max_batch = name, max_batch
        self._ov, self._graph = ov, _graph(_read(model))
        self._chw = tuple(int(d) for d in input_chw)
        self._options, self._precision = options, precision
        self._models: dict[int | None, _Compiled] = {}
        self._lock = threading.Lock()
        self.note = f"CPU plugin, {options.threads or 'default'} threads, {precision} outside INT8 layers"
        self._model_for(1)  # compile one now, so a graph OpenVINO cannot run fails at load, not at the first image

    def _compile(self, batch: int | None) -> _Compiled:
        ov = self._ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        from omsf2.runtime.openvino_core import openvino_core

        core = openvino_core()  # the process's one Core (why: omsf2.runtime.openvino_core)
        model = core.read_model(self._graph, b"") if isinstance(self._graph, bytes) else self._graph
        dim = batch if batch is not None else ov.Dimension(1, self.max_batch)
        model.reshape({0: ov.PartialShape([dim, *self._chw])})
        # f32 for what is not INT8 unless asked: OpenVINO defaults to bf16 on CPUs with AVX512-BF16 or AMX,
        # which would make the "FP32" backend another precision; bf16 is its own backend (openvino-bf16).
        config: dict[Any, Any] = {
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            props.num_streams: 1,
            hints.inference_precision: ov.Type.bf16 if self._precision == "bf16" else ov.Type.f32,
        }
        if self._options.threads:
            config[props.inference_num_threads] = self._options.threads
        if self._options.profile_dir is not None:
            config[props.enable_profiling] = True
        return _Compiled(core.compile_model(model, "CPU", config))

    def _model_for(self, batch: int) -> _Compiled:
        key: int | None = batch
        with self._lock:
            if key not in self._models and sum(k is not None for k in self._models) >= STATIC_SHAPES:
                key = None  # the shared dynamic-batch model
            if key not in self._models:
                self._models[key] = self._compile(key)
            return self._models[key]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, heatmap) of one batch."""
        x = np.ascontiguousarray(batch, np.float32)
        entry = self._model_for(len(x))
        with entry.request() as req:
            res = req.infer({0: x}, share_inputs=True)
            return np.asarray(res[entry.outputs[0]]), np.asarray(res[entry.outputs[1]])

    def layer_times(self) -> list[tuple[str, str, str, float]]:
        """(node, type, kernel, ms) of the last inference; needs ``SessionOptions.profile_dir``."""
        last = next((m.last for m in self._models.values() if m.last is not None), None)
        if last is None:
            return []
        return [
            (p.node_name, p.node_type, p.exec_type, p.real_time.total_seconds() * 1e3)
            for p in last.get_profiling_info()
        ]


# --------------------------------------------------------------------------- the table


SessionFactory = Callable[[Any, "SessionContext"], Session]


@dataclasses.dataclass(frozen=True)
class SessionContext:
    """What a backend's session is made from, besides the model bytes.

    Attributes:
        rule: the backend's row of :data:`omsf2.runtime.rules.BACKEND_RULES`.
        path: the model file the bytes were read from (a TensorRT engine's manifest sits beside it).
        root: the bundle folder (the TensorRT plugin library lives there).
        input_chw: the model input's (C, H, W) from the bundle's preprocessing spec.
        max_batch: the most images per call.
        options: threads, profiling, GPU timing.
    """

    rule: BackendRule
    path: Path
    root: Path
    input_chw: tuple[int, int, int]
    max_batch: int
    options: SessionOptions


def _ort(model: Any, ctx: SessionContext) -> Session:
    device = {"ort-cuda": "cuda", "ort-trt": "tensorrt"}.get(ctx.rule.name, "cpu")
    return OrtSession(model, ctx.options, device=device, name=ctx.rule.name, max_batch=ctx.max_batch)


def _openvino(model: Any, ctx: SessionContext) -> Session:
    precision = "bf16" if ctx.rule.precision == "bf16" else "f32"
    return OpenVinoSession(
        model, ctx.options, input_chw=ctx.input_chw, precision=precision, name=ctx.rule.name, max_batch=ctx.max_batch
    )


def _tensorrt(model: Any, ctx: SessionContext) -> Session:
    from omsf2.runtime.tensorrt_engine import TensorRTSession

    return TensorRTSession(ctx.path, model, ctx.root, ctx.options, max_batch=ctx.max_batch)


#: backend name -> how its session is made (the files it runs are in the rules table).
FACTORIES: dict[str, SessionFactory] = {
    "ort": _ort,
    "ort-int8": _ort,
    "ort-cuda": _ort,
    "ort-trt": _ort,
    "openvino": _openvino,
    "openvino-int8": _openvino,
    "openvino-bf16": _openvino,
    "tensorrt": _tensorrt,
}


def make_session(model: Any, ctx: SessionContext) -> Session:
    """The session of ``ctx.rule`` on ``model`` (verified bytes; a TensorRT engine's path and bytes).

    Raises:
        BackendUnavailable: the backend's package or device is missing here.
        ValueError, RuntimeError: the backend cannot load the model (one line).
    """
    if ctx.rule.name == "openvino-bf16":
        from omsf2.runtime.cpu import cpu_flags

        if not cpu_flags() & {"avx512_bf16", "amx_bf16"}:
            raise BackendUnavailable("this CPU has no bf16 instructions (AVX512-BF16 or AMX-BF16)")
    return FACTORIES[ctx.rule.name](model, ctx)
