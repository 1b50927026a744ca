"""Loading and running omsf2 TensorRT engines, and where TensorRT and a GPU are (or are not) found.

The runtime half of TensorRT (the build half is :mod:`omsf2.export.tensorrt`, which imports the
helpers here: :func:`import_trt`, :func:`require_gpu`, :func:`make_logger`, :func:`np_dtype`).
Everything TensorRT/CUDA is imported inside functions: importing this module needs neither, and
it never imports torch; device memory and the GPU query come from cuda-python.
:func:`load_engine` refuses, with one line, an engine whose manifest says it was built for another
TensorRT or GPU (the rule is in :mod:`omsf2.runtime.rules`) before TensorRT is asked to deserialize
it. :class:`EngineContext` runs batches with the TensorRT 10/11 name-based API (``set_input_shape``
/ ``set_tensor_address`` / ``execute_async_v3``, as in NVIDIA's ``samples/python/common_runtime.py``)
on buffers allocated once; :class:`TensorRTSession` (the runtime backend) keeps one per thread and
:func:`run_engine` (the export's one-shot check) one per call.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.fileio import sha256_file
from omsf2.runtime.engine_manifest import EngineManifest, compatibility_error, manifest_path, read_manifest

log = logging.getLogger(__name__)


class TensorRTError(RuntimeError):
    """TensorRT is missing, refused to build, or failed to deserialize/run (not a bad argument)."""


# --------------------------------------------------------------------------- environment


def import_trt() -> Any:
    """The ``tensorrt`` module.

    Raises:
        TensorRTError: TensorRT is not installed or its libraries do not load.
    """
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or OSError when libnvinfer is missing behind a stub
        raise TensorRTError(f"TensorRT is not installed or does not load ({type(e).__name__}: {e})") from e
    return trt


def import_cudart() -> Any:
    """cuda-python's runtime bindings (``cuda.bindings.runtime`` from 12.6 on, ``cuda.cudart`` before).

    Raises:
        TensorRTError: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise TensorRTError("cuda-python is not installed (pip install 'omsf2[trt]')") from e
    return cudart


def gpu_info() -> tuple[str, tuple[int, int]] | None:
    """(name, compute capability) of CUDA device 0 via cuda-python; None without a usable GPU."""
    try:
        cudart = import_cudart()
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or count < 1:
            return None
        err, props = cudart.cudaGetDeviceProperties(0)
        if err != cudart.cudaError_t.cudaSuccess:
            return None
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return name, (int(props.major), int(props.minor))
    except Exception:  # no driver, a broken install: no GPU as far as omsf2 is concerned
        return None


_NO_GPU = "no CUDA GPU is visible (cuda-python found none; is cuda-python installed and a driver loaded?)"


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT imports and a CUDA GPU is usable, else one line saying what is missing."""
    try:
        import_trt()
    except TensorRTError as e:
        return str(e)
    if gpu_info() is None:
        return _NO_GPU
    return None


def require_gpu() -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of CUDA device 0.

    Raises:
        TensorRTError: no CUDA GPU is visible.
    """
    gpu = gpu_info()
    if gpu is None:
        raise TensorRTError(_NO_GPU)
    return gpu


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that forwards to :mod:`logging` and keeps errors (``.errors``) for our messages."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            sev = trt.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(" ".join(str(msg).split()))
                log.error("TensorRT: %s", msg)
            elif severity == sev.WARNING:
                log.warning("TensorRT: %s", msg)
            elif severity == sev.INFO:
                log.info("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def np_dtype(trt: Any, dtype: Any) -> np.dtype:
    """The numpy dtype of a ``trt.DataType``.

    Raises:
        TensorRTError: a type numpy has no equivalent for (``trt.nptype`` maps no bf16, fp8, int4 or fp4).
    """
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError as e:
        raise TensorRTError(f"engine tensor type {dtype} has no numpy equivalent (export with float32 I/O)") from e


# --------------------------------------------------------------------------- load and run


@dataclass
class LoadedEngine:
    """A deserialized engine with what must outlive it (the runtime, the plugin library) and its manifest."""

    engine: Any
    manifest: EngineManifest
    runtime: Any
    plugin_handle: Any = None


def load_engine(engine_path: Path, *, plugin_library: Path | None = None, data: bytes | None = None) -> LoadedEngine:
    """Check the manifest against this TensorRT and GPU, then deserialize the engine.

    Args:
        engine_path: the engine; ``<engine_path>.json`` must sit beside it.
        plugin_library: the plugin library, when the manifest names one (default: the file of that
            name beside the engine). Its sha256 must match the manifest's.
        data: the engine's bytes when the caller already read and verified them (a bundle): these
            exact bytes are hashed against the manifest and deserialized; None reads the file once.

    Raises:
        ValueError: missing files, a swapped engine or plugin, or a TensorRT/GPU mismatch (one line
            saying what was built where and what is running).
        TensorRTError: no TensorRT/GPU, or deserialization failed.
    """
    p = Path(engine_path)
    if data is None and not p.is_file():
        raise ValueError(f"engine '{p}' does not exist")
    manifest = read_manifest(manifest_path(p))
    data = p.read_bytes() if data is None else data
    if hashlib.sha256(data).hexdigest() != manifest.engine_sha256:
        raise ValueError(f"engine '{p}' does not match its manifest (sha256 differs); rebuild or restore it")
    trt = import_trt()
    name, cc = require_gpu()
    err = compatibility_error(manifest, trt.__version__, name, cc)
    if err:
        raise ValueError(err)
    logger = make_logger(trt)
    runtime = trt.Runtime(logger)
    handle = None
    if manifest.plugin_library:
        lib = Path(plugin_library) if plugin_library is not None else p.with_name(manifest.plugin_library)
        if not lib.is_file():
            raise ValueError(
                f"engine '{p.name}' needs plugin library '{manifest.plugin_library}'; '{lib}' does not exist"
            )
        if sha256_file(lib) != manifest.plugin_library_sha256:
            raise ValueError(f"plugin library '{lib}' is not the one engine '{p.name}' was built with (sha256 differs)")
        handle = trt.get_plugin_registry().load_library(str(lib))
    if manifest.version_compat:
        # A version-compatible plan carries lean-runtime (and plugin) code that TensorRT runs only
        # when told the plan is trusted; it is: its hash matched the manifest omsf2 wrote.
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        why = logger.errors[-1][:400] if logger.errors else "no error reported"
        raise TensorRTError(f"TensorRT {trt.__version__} could not deserialize '{p.name}': {why}")
    return LoadedEngine(engine=engine, manifest=manifest, runtime=runtime, plugin_handle=handle)


@dataclass(frozen=True)
class EngineIO:
    """An engine's one input, its outputs, their dtypes and the input's profile (min and max shapes)."""

    input: str
    outputs: tuple[str, ...]
    dtypes: dict[str, np.dtype]
    lo: tuple[int, ...]
    hi: tuple[int, ...]

    @classmethod
    def of(cls, eng: Any, trt: Any) -> EngineIO:
        """Read from a deserialized engine.

        Raises:
            ValueError: the engine has more than one input.
        """
        names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        ins = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(ins) != 1:
            raise ValueError(f"omsf2 runs single-input engines; this one has inputs {ins}")
        lo, _, hi = (tuple(int(d) for d in s) for s in eng.get_tensor_profile_shape(ins[0], 0))
        dtypes = {n: np_dtype(trt, eng.get_tensor_dtype(n)) for n in names}
        return cls(ins[0], tuple(n for n in names if n != ins[0]), dtypes, lo, hi)

    def check(self, x: np.ndarray) -> None:
        """Refuse a batch outside the profile before any device work.

        Raises:
            ValueError: batch rank, size or image shape outside the engine's profile.
        """
        if x.ndim != 4 or x.shape[1:] != self.hi[1:] or not self.lo[0] <= x.shape[0] <= self.hi[0]:
            raise ValueError(f"batch shape {x.shape} is outside the engine's profile {self.lo}..{self.hi}")


class _Cuda:
    """cuda-python's runtime calls with their status checked."""

    def __init__(self) -> None:
        self.rt = import_cudart()

    def __call__(self, res: Any) -> Any:
        err, *rest = res if isinstance(res, tuple) else (res,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise TensorRTError(f"CUDA runtime error {err}")
        return rest[0] if rest else None


def _host_view(ptr: int, nbytes: int, dtype: np.dtype) -> np.ndarray:
    """A numpy view of ``nbytes`` of (pinned) host memory at ``ptr``."""
    import ctypes

    return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(int(ptr))).view(dtype)


class EngineContext:
    """One execution context with its CUDA stream and pinned host / device buffers, allocated once.

    The buffers are sized for the profile's largest batch, bound to the context once, and reused by
    every :meth:`run`; host memory is pinned (``cudaMallocHost``) so the copies are true async DMA.
    Not thread-safe: :class:`TensorRTSession` gives each calling thread its own.
    """

    def __init__(self, eng: Any, io: EngineIO, *, timing: bool = False) -> None:
        self.io, self.cuda = io, _Cuda()
        rt = self.cuda.rt
        self.host: dict[str, tuple[int, int]] = {}
        self.device: dict[str, int] = {}
        self.stream: Any = None
        self.events: tuple[Any, Any] | None = None
        try:
            self.context = eng.create_execution_context()
            self.context.set_input_shape(io.input, io.hi)
            for n in (io.input, *io.outputs):
                shape = io.hi if n == io.input else tuple(int(d) for d in self.context.get_tensor_shape(n))
                nbytes = max(int(np.prod(shape)) * io.dtypes[n].itemsize, 1)
                self.host[n] = (self.cuda(rt.cudaMallocHost(nbytes)), nbytes)
                self.device[n] = self.cuda(rt.cudaMalloc(nbytes))
                self.context.set_tensor_address(n, int(self.device[n]))
            self.stream = self.cuda(rt.cudaStreamCreate())
            if timing:
                self.events = (self.cuda(rt.cudaEventCreate()), self.cuda(rt.cudaEventCreate()))
        except BaseException:
            self.close()
            raise

    def run(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], float | None]:
        """Outputs by name (host copies) of one batch within the profile, and its GPU ms (with timing)."""
        rt, call, io = self.cuda.rt, self.cuda, self.io
        x = np.ascontiguousarray(x, dtype=io.dtypes[io.input])
        self.context.set_input_shape(io.input, x.shape)
        ptr, nbytes = self.host[io.input]
        _host_view(ptr, nbytes, io.dtypes[io.input])[: x.size] = x.reshape(-1)
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        call(rt.cudaMemcpyAsync(self.device[io.input], ptr, x.nbytes, h2d, self.stream))
        if self.events:
            call(rt.cudaEventRecord(self.events[0], self.stream))
        if not self.context.execute_async_v3(int(self.stream or 0)):
            raise TensorRTError("execute_async_v3 failed")
        if self.events:
            call(rt.cudaEventRecord(self.events[1], self.stream))
        shapes = {n: tuple(int(d) for d in self.context.get_tensor_shape(n)) for n in io.outputs}
        for n, shape in shapes.items():
            size = int(np.prod(shape)) * io.dtypes[n].itemsize
            call(rt.cudaMemcpyAsync(self.host[n][0], self.device[n], size, d2h, self.stream))
        call(rt.cudaStreamSynchronize(self.stream))
        out = {
            n: _host_view(*self.host[n], io.dtypes[n])[: int(np.prod(shape))].reshape(shape).copy()
            for n, shape in shapes.items()
        }
        ms = float(call(rt.cudaEventElapsedTime(*self.events))) if self.events else None
        return out, ms

    def close(self) -> None:
        """Free every buffer, the stream and the events (idempotent)."""
        rt = self.cuda.rt
        for ptr in self.device.values():
            rt.cudaFree(ptr)
        for ptr, _ in self.host.values():
            rt.cudaFreeHost(ptr)
        self.device, self.host = {}, {}
        for ev in self.events or ():
            rt.cudaEventDestroy(ev)
        if self.stream is not None:
            rt.cudaStreamDestroy(self.stream)
        self.stream, self.events = None, None


def run_engine(engine: Any, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Run one batch (N, C, H, W) through an engine once; outputs by name, as host arrays.

    A one-shot :class:`EngineContext` (the export's checks); serving uses :class:`TensorRTSession`,
    which keeps its contexts. Uses the TensorRT 10/11 name-based API: ``set_input_shape``,
    ``set_tensor_address``, ``execute_async_v3``.

    Raises:
        ValueError: batch rank, size or image shape outside the engine's profile.
        TensorRTError: execution failed.
    """
    eng = engine.engine if isinstance(engine, LoadedEngine) else engine
    io = EngineIO.of(eng, import_trt())
    x = np.asarray(batch)
    io.check(x)
    ctx = EngineContext(eng, io)
    try:
        return ctx.run(x)[0]
    finally:
        ctx.close()


class TensorRTSession:
    """The runtime's TensorRT backend: one engine, one :class:`EngineContext` per calling thread.

    Each thread's context, stream and pinned buffers are made on its first call and kept until
    :meth:`close`; nothing is allocated per batch. With ``options.gpu_timing`` the GPU time of each
    batch (CUDA events around ``execute_async_v3``) is appended to :attr:`gpu_times_ms`.
    """

    def __init__(
        self, path: Path, data: bytes, root: Path, options: Any, *, max_batch: int = 32, name: str = "tensorrt"
    ) -> None:
        from omsf2.runtime.rules import PLUGIN_LIBRARY
        from omsf2.runtime.sessions import BackendUnavailable

        if reason := tensorrt_unavailable_reason():
            raise BackendUnavailable(reason)
        lib = Path(root) / PLUGIN_LIBRARY
        self.loaded = load_engine(path, plugin_library=lib if lib.is_file() else None, data=data)
        self.io = EngineIO.of(self.loaded.engine, import_trt())
        self.name, self.max_batch = name, max(1, min(int(max_batch), self.io.hi[0]))
        self.timing = bool(getattr(options, "gpu_timing", False))
        self.gpu_times_ms: list[float] = []
        self.note = f"TensorRT {import_trt().__version__}, {self.loaded.manifest.precision} engine"
        self._local = threading.local()
        self._contexts: list[EngineContext] = []
        self._lock = threading.Lock()

    def _context(self) -> EngineContext:
        ctx = getattr(self._local, "context", None)
        if ctx is None:
            ctx = EngineContext(self.loaded.engine, self.io, timing=self.timing)
            with self._lock:
                self._contexts.append(ctx)
            self._local.context = ctx
        return ctx

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, heatmap) of one batch within the engine's profile."""
        x = np.asarray(batch)
        self.io.check(x)
        out, ms = self._context().run(x)
        if ms is not None:
            self.gpu_times_ms.append(ms)
        return out["logits"], out["heatmap"]

    def close(self) -> None:
        """Free every thread's context, stream and buffers."""
        with self._lock:
            contexts, self._contexts = self._contexts, []
        for ctx in contexts:
            ctx.close()
        self._local = threading.local()

    def __del__(self) -> None:
        if getattr(self, "_contexts", None):
            self.close()
