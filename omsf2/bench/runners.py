"""What the bench times for each backend, chosen by the :data:`BACKENDS` table.

A runner is built once per (batch, image size), then :meth:`Runner.bind` returns the zero-argument
call that the interleaved rounds time (its input already in place, outputs waited for) and
:meth:`Runner.predict` returns scores for the accuracy column. Every backend but PyTorch is the
shipped runtime itself (:class:`RuntimeRunner`: ``Predictor.from_bundle(...).run_batch``), so the
bench times what ``omsf2 predict``, the DICOM node and Triton serving run; PyTorch eager and
``torch.compile`` are the baselines the speed-ups are measured against. The bench keeps only what
timing needs (warm-up, interleaved rounds, ceilings); a backend's configuration lives in
:mod:`omsf2.runtime.sessions`. Each stack is imported only when its runner is built.
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
    """PyTorch eager FP32 on the backend's device; channels_last when a quick probe finds it faster there.

    On CUDA each timed call waits for the GPU (host latency, what the rounds time) and CUDA events
    around the forward give the GPU's own time (``gpu_ms``, the row's ``gpu_compute_ms``).
    """

    compile_model = False

    def __init__(self, ctx: Context, artifact: str | None, backend: Backend | None = None) -> None:
        import torch

        from omsf2.models.checkpoint import load_checkpoint, model_from_checkpoint

        if ctx.checkpoint is None:
            raise ValueError("no checkpoint to build the PyTorch model from")
        torch.set_num_threads(ctx.threads)
        self._torch = torch
        self.device = backend.device if backend is not None else "cpu"
        self.gpu_ms: list[float] = []
        model = model_from_checkpoint(load_checkpoint(ctx.checkpoint)).eval().to(self.device)
        self.model: Any = cast(Any, model)
        self.memory_format = self._pick_layout(ctx) if not self.compile_model else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.note = "channels_last" if self.memory_format == torch.channels_last else "contiguous (NCHW)"
        if self.compile_model:
            self.model = torch.compile(self.model, backend="inductor", dynamic=False)
            self.note = "inductor, dynamic=False"
        if self.device == "cuda":
            self.note += f", {torch.cuda.get_device_name(0)}"

    def _sync(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.synchronize()

    def _pick_layout(self, ctx: Context) -> Any:
        import time

        torch = self._torch
        x = torch.zeros(ctx.batch, ctx.channels, ctx.img_size, ctx.img_size, device=self.device)
        best: tuple[float, Any] | None = None
        for fmt in (torch.contiguous_format, torch.channels_last):
            m: Any = self.model.to(memory_format=fmt)
            xi = x.contiguous(memory_format=fmt)
            with torch.inference_mode():
                m(xi)
                self._sync()
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    m(xi)
                    self._sync()
                    times.append(time.perf_counter() - t0)
            if best is None or min(times) < best[0]:
                best = (min(times), fmt)
        return best[1] if best else torch.contiguous_format

    def _forward(self, xt: Any) -> Any:
        with self._torch.inference_mode():
            return self.model(xt)

    def _input(self, x: np.ndarray) -> Any:
        xt = self._torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return xt.contiguous(memory_format=self.memory_format)

    def bind(self, x: np.ndarray) -> Any:
        """See :class:`Runner`."""
        xt = self._input(x)
        if self.device != "cuda":
            return lambda: self._forward(xt)
        torch = self._torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def call() -> Any:
            start.record()
            out = self._forward(xt)
            end.record()
            end.synchronize()
            self.gpu_ms.append(start.elapsed_time(end))
            return out

        return call

    def predict(self, x: np.ndarray) -> np.ndarray:
        """See :class:`Runner`."""
        logits, _ = self._forward(self._input(x))
        return logits.float().cpu().numpy()


class TorchCompileRunner(TorchRunner):
    """``torch.compile`` with inductor (C++ codegen on CPU); compilation happens in the warm-up."""

    compile_model = True


# --------------------------------------------------------------------------- the runtime


class RuntimeRunner:
    """A backend of the shipped runtime: the bench times :meth:`omsf2.runtime.Predictor.run_batch`.

    The predictor is opened exactly as a user opens it (``Predictor.from_bundle`` on the export
    folder, with the backend, thread count and export target), so the timed call is the one
    ``omsf2 predict``, the DICOM node and Triton serving make: the session's own configuration,
    chunking, output checks and activation included. Nothing here configures a backend.
    """

    def __init__(self, ctx: Context, artifact: str | None, backend: Backend) -> None:
        from omsf2.runtime.predictor import Predictor
        from omsf2.runtime.sessions import SessionOptions

        if artifact is None or backend.runtime is None:
            raise ValueError(f"{backend.name} needs an exported model file")
        options = SessionOptions(threads=ctx.threads, gpu_timing=backend.device == "cuda")
        self.predictor = Predictor.from_bundle(
            ctx.export_dir, backend.runtime, ctx.threads, artifact=target_of(artifact), options=options
        )
        self.note = str(getattr(self.predictor.session, "note", self.predictor.backend))

    @property
    def gpu_ms(self) -> list[float] | None:
        """GPU compute time of each timed batch (CUDA events), on GPU backends."""
        return getattr(self.predictor.session, "gpu_times_ms", None)

    def bind(self, x: np.ndarray) -> Any:
        """See :class:`Runner`."""
        x = np.ascontiguousarray(x, np.float32)
        return lambda: self.predictor.run_batch(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K): their arg-max is the logits'."""
        return self.predictor.run_batch(x)[0]


def target_of(filename: str) -> str:
    """The export target (``onnx_int8_cpu`` ...) whose file is ``filename`` (``model.int8-cpu.onnx``)."""
    from omsf2.export.targets import TARGETS

    for t in TARGETS:
        if t.filename == filename:
            return t.name
    raise ValueError(f"{filename!r} is not a file omsf2 export writes")


# --------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class Backend:
    """One row of the backend table.

    Attributes:
        name: what ``--backends`` takes.
        runner: the runner class.
        targets: export targets it runs, first present wins (empty: the checkpoint).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``int8`` (which ceiling is its own).
        device: ``cpu`` or ``cuda``.
        modules: Python modules it imports (their absence is its skip reason).
        label: one line for the table.
        runtime: the runtime backend it runs (:data:`omsf2.runtime.rules.BACKEND_RULES`); None: PyTorch.
    """

    name: str
    runner: type
    targets: tuple[str, ...]
    precision: str
    device: str
    modules: tuple[str, ...]
    label: str
    runtime: str | None = None

    @property
    def artifacts(self) -> tuple[str, ...]:
        """The file names of :attr:`targets` in an export folder."""
        from omsf2.export.targets import TARGETS

        files = {t.name: t.filename for t in TARGETS}
        return tuple(files[t] for t in self.targets)


_RT = RuntimeRunner
BACKENDS: tuple[Backend, ...] = (
    Backend("torch", TorchRunner, (), "fp32", "cpu", ("torch",), "PyTorch eager FP32"),
    Backend("torch-compile", TorchCompileRunner, (), "fp32", "cpu", ("torch",), "torch.compile (inductor) FP32"),
    Backend("ort", _RT, ("onnx",), "fp32", "cpu", ("onnxruntime",), "onnxruntime FP32", "ort"),
    Backend("ort-int8", _RT, ("onnx_int8_cpu",), "int8", "cpu", ("onnxruntime",), "onnxruntime U8S8 Q/DQ", "ort-int8"),
    Backend(
        "ort-int8-trt", _RT, ("onnx_int8",), "int8", "cpu", ("onnxruntime",),
        "onnxruntime running the TensorRT contract (S8S8 Q/DQ)", "ort-int8",
    ),
    Backend("openvino", _RT, ("onnx",), "fp32", "cpu", ("openvino",), "OpenVINO FP32", "openvino"),
    Backend("openvino-bf16", _RT, ("onnx",), "bf16", "cpu", ("openvino",), "OpenVINO BF16", "openvino-bf16"),
    Backend(
        # U8S8 first: with Q/DQ after each ReLU its uint8 activations are what oneDNN's u8 x s8 (VNNI)
        # convolutions take natively; S8S8 activations cost a compensation pass (bench/results/cpu-analysis.md).
        "openvino-int8", _RT, ("onnx_int8_cpu", "onnx_int8"), "int8", "cpu", ("openvino",),
        "OpenVINO INT8 (Q/DQ ONNX)", "openvino-int8",
    ),
    Backend("torch-cuda", TorchRunner, (), "fp32", "cuda", ("torch",), "PyTorch eager FP32 on CUDA"),
    Backend(
        "torch-compile-cuda", TorchCompileRunner, (), "fp32", "cuda", ("torch",),
        "torch.compile (inductor) FP32 on CUDA",
    ),
    Backend("ort-cuda", _RT, ("onnx",), "fp32", "cuda", ("onnxruntime",), "onnxruntime CUDA EP FP32", "ort-cuda"),
    Backend(
        "ort-trt", _RT, ("onnx_int8",), "int8", "cuda", ("onnxruntime",), "onnxruntime TensorRT EP (Q/DQ INT8)",
        "ort-trt",
    ),
    Backend(
        "tensorrt", _RT, ("engine_int8", "engine_fp16", "engine_fp32"), "int8", "cuda", ("tensorrt",),
        "TensorRT engine (Python API, cuda-python)", "tensorrt",
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
    from omsf2.runtime.cpu import cpu_flags

    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _cuda_visible() -> bool:
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    from omsf2.runtime.tensorrt_engine import gpu_info

    return gpu_info() is not None


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
    runner: Runner = backend.runner(ctx, artifact, backend)
    return runner
