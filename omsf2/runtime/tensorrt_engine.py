"""Loading and running omsf2 TensorRT engines, and where TensorRT and a GPU are (or are not) found.

The runtime half of TensorRT (the build half is :mod:`omsf2.export.tensorrt`, which imports the
helpers here: :func:`import_trt`, :func:`require_gpu`, :func:`make_logger`, :func:`np_dtype`).
Everything TensorRT/CUDA is imported inside functions: importing this module needs neither, and
it never imports torch; device memory and the GPU query come from cuda-python.
:func:`load_engine` refuses, with one line, an engine whose manifest says it was built for another
TensorRT or GPU (the rule is in :mod:`omsf2.runtime.engine_manifest`) before TensorRT is asked to
deserialize it; :func:`run_engine` runs one batch with the TensorRT 10/11 name-based API
(``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``, as in NVIDIA's
``samples/python/common_runtime.py``).
"""

from __future__ import annotations

import hashlib
import logging
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
    """The numpy dtype of a ``trt.DataType``."""
    return np.dtype(trt.nptype(dtype))


# --------------------------------------------------------------------------- load and run


@dataclass
class LoadedEngine:
    """A deserialized engine with what must outlive it (the runtime, the plugin library) and its manifest."""

    engine: Any
    manifest: EngineManifest
    runtime: Any
    plugin_handle: Any = None


def load_engine(engine_path: Path, *, plugin_library: Path | None = None) -> LoadedEngine:
    """Check the manifest against this TensorRT and GPU, then deserialize the engine.

    Args:
        engine_path: the engine; ``<engine_path>.json`` must sit beside it.
        plugin_library: the plugin library, when the manifest names one (default: the file of that
            name beside the engine). Its sha256 must match the manifest's.

    Raises:
        ValueError: missing files, a swapped engine or plugin, or a TensorRT/GPU mismatch (one line
            saying what was built where and what is running).
        TensorRTError: no TensorRT/GPU, or deserialization failed.
    """
    p = Path(engine_path)
    if not p.is_file():
        raise ValueError(f"engine '{p}' does not exist")
    manifest = read_manifest(manifest_path(p))
    data = p.read_bytes()
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


def run_engine(engine: Any, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Run one batch (N, C, H, W) through an engine; outputs by name, as host arrays.

    Device memory comes from cuda-python (``cudaMalloc`` / ``cudaMemcpyAsync`` on a stream of its
    own). Uses the TensorRT 10/11 name-based API: ``set_input_shape``, ``set_tensor_address``,
    ``execute_async_v3``.

    Raises:
        ValueError: batch rank, size or image shape outside the engine's profile.
        TensorRTError: execution failed.
    """
    eng = engine.engine if isinstance(engine, LoadedEngine) else engine
    trt = import_trt()
    x = np.asarray(batch)
    names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
    ins = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outs = [n for n in names if n not in ins]
    if len(ins) != 1:
        raise ValueError(f"run_engine runs single-input engines; this one has inputs {ins}")
    name = ins[0]
    lo, _, hi = (tuple(int(d) for d in s) for s in eng.get_tensor_profile_shape(name, 0))
    if x.ndim != 4 or x.shape[1:] != hi[1:] or not lo[0] <= x.shape[0] <= hi[0]:
        raise ValueError(f"batch shape {x.shape} is outside the engine's profile {lo}..{hi}")
    x = np.ascontiguousarray(x, dtype=np_dtype(trt, eng.get_tensor_dtype(name)))
    ctx = eng.create_execution_context()
    ctx.set_input_shape(name, x.shape)
    out_meta = {
        n: (tuple(int(d) for d in ctx.get_tensor_shape(n)), np_dtype(trt, eng.get_tensor_dtype(n))) for n in outs
    }
    return _run_cudart(ctx, name, x, out_meta)


def _run_cudart(ctx: Any, name: str, x: np.ndarray, out_meta: dict[str, Any]) -> dict[str, np.ndarray]:
    cudart = import_cudart()

    def call(res: Any) -> Any:
        err, *rest = res if isinstance(res, tuple) else (res,)
        if err != cudart.cudaError_t.cudaSuccess:
            raise TensorRTError(f"CUDA runtime error {err}")
        return rest[0] if rest else None

    host = {n: np.empty(shape, dt) for n, (shape, dt) in out_meta.items()}
    ptrs: dict[str, int] = {}
    stream = call(cudart.cudaStreamCreate())
    try:
        for n, arr in ((name, x), *host.items()):
            ptrs[n] = call(cudart.cudaMalloc(max(arr.nbytes, 1)))
            ctx.set_tensor_address(n, int(ptrs[n]))
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        call(cudart.cudaMemcpyAsync(ptrs[name], x.ctypes.data, x.nbytes, h2d, stream))
        if not ctx.execute_async_v3(int(stream)):
            raise TensorRTError("execute_async_v3 failed")
        for n, arr in host.items():
            call(cudart.cudaMemcpyAsync(arr.ctypes.data, ptrs[n], arr.nbytes, d2h, stream))
        call(cudart.cudaStreamSynchronize(stream))
    finally:
        for ptr in ptrs.values():
            cudart.cudaFree(ptr)
        cudart.cudaStreamDestroy(stream)
    return host
