"""Inference sessions, one small class per backend behind one interface, chosen by a table.

A session is created once per model file and then only runs batches: ``run(batch) -> (logits,
heatmap)``. onnxruntime (CPU, or CUDA with ``ort-cuda``), OpenVINO (``openvino.Core().compile_model``)
and a TensorRT engine (:mod:`omsf2.runtime.tensorrt_engine`, device memory from cuda-python) all
fit it. onnxruntime's ``InferenceSession.run`` and OpenVINO's ``CompiledModel`` called with a
fresh infer request are safe to call from several threads; the TensorRT session creates an
execution context per call, so none needs a lock. Every backend stack is imported when a session
is created, never when this module is imported, and torch is never imported.

The trade-off: a graph holding the ``omsf2`` custom ops needs ``onnx`` to be expanded for
onnxruntime and OpenVINO (:mod:`omsf2.runtime.ort_custom_ops`); a plain graph is handed to the
backend as a path, so ``pip install omsf2[runtime]`` (no onnx) runs every plain export.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "heatmap")


class BackendUnavailable(RuntimeError):
    """The backend's package (or device) is missing here; the message says what to install."""


class Session(Protocol):
    """What the predictor needs from a backend."""

    name: str
    max_batch: int

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N, K), heatmap (N, h, w)) for a float32 (N, C, H, W) batch."""
        ...


# --------------------------------------------------------------------------- onnxruntime


def _load_graph(model: Any) -> Any:
    """A path stays a path unless its graph holds omsf2 custom ops (then an expanded ModelProto)."""
    if not isinstance(model, str | os.PathLike):
        from omsf2.runtime.ort_custom_ops import expand_plugins, has_plugins

        return expand_plugins(model) if has_plugins(model) else model
    try:
        import onnx
    except ImportError:
        return Path(model)  # no onnx here: a custom-op graph fails in onnxruntime with its own message
    from omsf2.runtime.ort_custom_ops import expand_plugins, has_plugins

    proto = onnx.load(str(model))
    return expand_plugins(proto) if has_plugins(proto) else Path(model)


def ort_session(
    model: Any,
    threads: int = 0,
    *,
    disable_optimizations: bool = False,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> Any:
    """An onnxruntime session for a ModelProto or path (``omsf2`` custom ops expanded).

    Args:
        model: an ``onnx.ModelProto`` or the path of an ``.onnx`` file.
        threads: intra-op threads (0: onnxruntime's default, one per physical core).
        disable_optimizations: ``ORT_DISABLE_ALL``: Q/DQ nodes run as the float ops they are
            instead of being fused into integer kernels (the export gate's Q/DQ-float mode).
        providers: execution providers in order of preference.

    Raises:
        BackendUnavailable: onnxruntime is not installed.
        RuntimeError: onnxruntime cannot load the graph (one line).
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailable("onnxruntime is not installed (pip install 'omsf2[runtime]')") from e
    graph = _load_graph(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    if disable_optimizations:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = str(graph) if isinstance(graph, Path) else graph.SerializeToString()
    try:
        return ort.InferenceSession(src, opts, providers=list(providers))
    except Exception as e:  # onnxruntime's own exception types derive from Exception only
        raise RuntimeError(f"onnxruntime cannot load the graph: {' '.join(str(e).split())[:300]}") from e


def run_session(session: Any, images: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(logits, heatmap) of an onnxruntime session over ``images`` in batches of ``batch``."""
    logits, heat = [], []
    for i in range(0, len(images), batch):
        lo, hm = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images[i : i + batch])})
        logits.append(lo)
        heat.append(hm)
    return np.concatenate(logits), np.concatenate(heat)


@dataclasses.dataclass
class OrtSession:
    """onnxruntime on CPU (or CUDA); ``InferenceSession.run`` is thread-safe."""

    path: Path
    threads: int = 0
    cuda: bool = False
    max_batch: int = 32
    name: str = "ort"

    def __post_init__(self) -> None:
        providers: tuple[str, ...] = ("CPUExecutionProvider",)
        if self.cuda:
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable(
                    "onnxruntime has no CUDA execution provider here (install onnxruntime-gpu on a CUDA machine)"
                )
            providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
        self._session = ort_session(self.path, self.threads, providers=providers)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, heatmap) of one batch."""
        return run_session(self._session, batch, self.max_batch)


# --------------------------------------------------------------------------- OpenVINO


@dataclasses.dataclass
class OpenVinoSession:
    """OpenVINO on CPU: ``Core().compile_model``; each call makes its own infer request (thread-safe)."""

    path: Path
    threads: int = 0
    max_batch: int = 32
    name: str = "openvino"

    def __post_init__(self) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailable("OpenVINO is not installed (pip install openvino)") from e
        core = ov.Core()
        graph = _load_graph(self.path)
        model = core.read_model(str(graph)) if isinstance(graph, Path) else core.read_model(graph.SerializeToString())
        # f32 unless the graph itself is quantized: OpenVINO may otherwise pick bf16/f16 on CPUs that have it.
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        self._compiled = core.compile_model(model, "CPU", config)
        self._outputs = [self._compiled.output(n) for n in OUTPUT_NAMES]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, heatmap) of one batch."""
        logits, heat = [], []
        for i in range(0, len(batch), self.max_batch):
            request = self._compiled.create_infer_request()
            res = request.infer({INPUT_NAME: np.ascontiguousarray(batch[i : i + self.max_batch])})
            logits.append(np.asarray(res[self._outputs[0]]))
            heat.append(np.asarray(res[self._outputs[1]]))
        return np.concatenate(logits), np.concatenate(heat)


# --------------------------------------------------------------------------- TensorRT


@dataclasses.dataclass
class TensorRTSession:
    """A TensorRT engine with its manifest checked (:func:`omsf2.runtime.tensorrt_engine.load_engine`)."""

    path: Path
    plugin_library: Path | None = None
    max_batch: int = 0
    name: str = "tensorrt"

    def __post_init__(self) -> None:
        from omsf2.runtime.tensorrt_engine import load_engine, tensorrt_unavailable_reason

        if reason := tensorrt_unavailable_reason():
            raise BackendUnavailable(reason)
        self._engine = load_engine(self.path, plugin_library=self.plugin_library)
        profile = self._engine.manifest.inputs[0].profile
        self.max_batch = int(profile[2][0]) if profile else 1

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, heatmap) of one batch, split to the engine's profile."""
        from omsf2.runtime.tensorrt_engine import run_engine

        logits, heat = [], []
        for i in range(0, len(batch), self.max_batch):
            out = run_engine(self._engine, batch[i : i + self.max_batch])
            logits.append(out[OUTPUT_NAMES[0]])
            heat.append(out[OUTPUT_NAMES[1]])
        return np.concatenate(logits).astype(np.float32), np.concatenate(heat).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class BackendRow:
    """One row of :data:`BACKENDS`: which bundle file a backend runs and how its session is made.

    Attributes:
        name: the ``--backend`` value.
        artifact: the export target it runs (``onnx``, ``onnx_int8_cpu``, ``engine_int8`` ...), in
            order of preference when several would do.
        make: (path, bundle folder, threads) -> session.
        needs_gpu: runs on a CUDA GPU only.
    """

    name: str
    artifact: tuple[str, ...]
    make: Callable[[Path, Path, int], Session]
    needs_gpu: bool = False


def _trt(path: Path, root: Path, threads: int) -> Session:
    lib = root / "libomsf2_plugins.so"
    return TensorRTSession(path, lib if lib.is_file() else None)


BACKENDS: tuple[BackendRow, ...] = (
    BackendRow("ort", ("onnx",), lambda p, r, t: OrtSession(p, t)),
    BackendRow("ort-int8", ("onnx_int8_cpu", "onnx_int8"), lambda p, r, t: OrtSession(p, t, name="ort-int8")),
    BackendRow("openvino", ("onnx",), lambda p, r, t: OpenVinoSession(p, t)),
    # U8S8 first, as for onnxruntime: it agreed with FP32 better than the S8S8 TensorRT contract under
    # OpenVINO (README, "Predict"); neither is gated on OpenVINO, the export gate runs onnxruntime.
    BackendRow(
        "openvino-int8", ("onnx_int8_cpu", "onnx_int8"), lambda p, r, t: OpenVinoSession(p, t, name="openvino-int8")
    ),
    BackendRow("tensorrt", ("engine_int8", "engine_fp16", "engine_fp32"), _trt, needs_gpu=True),
    BackendRow("ort-cuda", ("onnx",), lambda p, r, t: OrtSession(p, t, cuda=True, name="ort-cuda"), needs_gpu=True),
)
BACKEND_NAMES = ("auto", *(b.name for b in BACKENDS))
#: What ``auto`` tries, in order: a GPU engine, then onnxruntime on CPU.
AUTO_ORDER = ("tensorrt", "ort")


def backend_row(name: str) -> BackendRow:
    """The table row of a backend name.

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    for row in BACKENDS:
        if row.name == name:
            return row
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
