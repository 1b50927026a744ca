"""This machine: vector ISA, environment fingerprint, and the GEMM ceilings efficiency is measured against.

The ceilings are large matrix multiplies through the libraries the backends use (FP32 through
PyTorch's BLAS, INT8 u8s8 through onnxruntime's ``MatMulInteger``). They are returned as calls,
not numbers, so that :func:`omsf2.bench.timing.interleaved_rounds` times them in the same rounds as
the backends: a burst of load slows ceiling and model alike and the efficiency ratio holds.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omsf2._version import __version__

# /proc/cpuinfo flag -> the ISA name the table prints, in the order printed.
ISA_FLAGS: tuple[tuple[str, str], ...] = (
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512_vnni", "AVX512-VNNI"),
    ("avx512_bf16", "AVX512-BF16"),
    ("amx_int8", "AMX-INT8"),
    ("amx_bf16", "AMX-BF16"),
)
GEMM_N = 2048
FP32_CEILING = "gemm-fp32"
INT8_CEILING = "gemm-int8"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The ``flags`` of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_isa(flags: set[str]) -> list[str]:
    """Vector ISA names present in ``flags``, e.g. ``["AVX2", "AVX-512", "AVX512-VNNI"]``."""
    return [name for flag, name in ISA_FLAGS if flag in flags]


def has_int8_dot(flags: set[str]) -> bool:
    """Whether the CPU has an INT8 dot-product instruction (VNNI or AMX): INT8 should then win by far."""
    return bool(flags & {"avx_vnni", "avx512_vnni", "amx_int8"})


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``platform.processor()`` where /proc/cpuinfo has none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(0)
    gpu: dict[str, Any] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda}
    gpu["memory_gib"] = round(p.total_memory / 2**30, 1)
    clock = getattr(p, "clock_rate", None)  # kHz where torch exposes it
    if clock:
        gpu["sm_clock_mhz"] = round(clock / 1000)
    return gpu


def fingerprint(threads: int, cpuinfo: str | None = None) -> dict[str, Any]:
    """CPU model, cores, ISA, threads, GPU and the versions of every stack the bench may use."""
    flags = cpu_flags(cpuinfo)
    versions = {
        dist: _dist_version(dist)
        for dist in ("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "cuda-python", "numpy")
    }
    return {
        "cpu": cpu_model(cpuinfo),
        "cores": os.cpu_count() or 0,
        "isa": cpu_isa(flags),
        "int8_dot_product": has_int8_dot(flags),
        "threads": threads,
        "gpu": _gpu(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "omsf2": __version__,
        "versions": {k: v for k, v in versions.items() if v is not None},
    }


def machine_slug(fp: dict[str, Any]) -> str:
    """A file-name-safe machine name: CPU model, cores, and GPU or ``cpu``."""
    gpu = fp.get("gpu")
    tail = re.sub(r"^nvidia\s+", "", str(gpu["name"]), flags=re.I) if gpu else "cpu"
    text = f"{fp['cpu']}-{fp['cores']}c-{tail}".lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


@dataclasses.dataclass(frozen=True)
class CeilingCall:
    """One GEMM to time: ``call`` runs it once, ``macs`` multiply-adds, ``library`` names what ran it."""

    name: str
    call: Callable[[], object]
    macs: int
    library: str
    precision: str = "fp32"


def fp32_gemm(threads: int, n: int = GEMM_N) -> CeilingCall:
    """An n x n x n FP32 matrix multiply through PyTorch (its BLAS: what eager convolutions use)."""
    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    return CeilingCall(f"{FP32_CEILING}-torch", lambda: torch.mm(a, b, out=out), n**3, f"torch {torch.__version__} mm")


def int8_gemm(threads: int, n: int = GEMM_N) -> CeilingCall:
    """An n x n x n u8s8 -> s32 ``MatMulInteger`` through onnxruntime (MLAS: what INT8 convolutions use).

    Raises:
        ImportError: onnx or onnxruntime is not installed.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "W"], ["Y"])],
        "int8_gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
        initializer=[onnx.numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {"A": rng.integers(0, 256, (n, n), dtype=np.uint8)}
    lib = f"onnxruntime {ort.__version__} MatMulInteger u8s8"
    return CeilingCall(f"{INT8_CEILING}-onnxruntime", lambda: sess.run(None, feed), n**3, lib, "int8")


def _gemm_onnx(n: int, int8: bool) -> bytes:
    """A float [n, n] input times a constant [n, n] weight; with ``int8`` both sides go through Q/DQ (S8S8)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).integers(-127, 128, (n, n), dtype=np.int8)
    if int8:
        inits = [numpy_helper.from_array(np.array(v, t), name) for v, t, name in (
            (0.02, np.float32, "sa"), (0, np.int8, "za"), (0.01, np.float32, "sw"), (0, np.int8, "zw"))]  # fmt: skip
        inits.append(numpy_helper.from_array(w, "Wq"))
        nodes = [
            helper.make_node("QuantizeLinear", ["A", "sa", "za"], ["Aq"]),
            helper.make_node("DequantizeLinear", ["Aq", "sa", "za"], ["Ad"]),
            helper.make_node("DequantizeLinear", ["Wq", "sw", "zw"], ["Wd"]),
            helper.make_node("MatMul", ["Ad", "Wd"], ["Y"]),
        ]
    else:
        inits = [numpy_helper.from_array(w.astype(np.float32), "W")]
        nodes = [helper.make_node("MatMul", ["A", "W"], ["Y"])]
    io = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in ("A", "Y")]
    graph = helper.make_graph(nodes, "gemm", [io[0]], [io[1]], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]).SerializeToString()


def openvino_gemm(threads: int, n: int, int8: bool) -> CeilingCall:
    """An n x n x n GEMM through OpenVINO's CPU plugin (oneDNN brgemm; INT8 from a Q/DQ MatMul).

    Raises:
        ImportError: openvino or onnx is not installed.
    """
    import numpy as np
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    model = core.read_model(_gemm_onnx(n, int8), b"")
    cfg = {props.inference_num_threads: threads, hints.performance_mode: hints.PerformanceMode.LATENCY,
           props.num_streams: 1, hints.inference_precision: ov.Type.f32}  # fmt: skip
    req = core.compile_model(model, "CPU", cfg).create_infer_request()
    req.set_input_tensor(ov.Tensor(np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)))
    name = f"{INT8_CEILING if int8 else FP32_CEILING}-openvino"
    lib = f"OpenVINO {ov.__version__.split('-')[0]} MatMul {'Q/DQ s8s8' if int8 else 'f32'}"
    return CeilingCall(name, req.infer, n**3, lib, "int8" if int8 else "fp32")


def ceiling_calls(threads: int, n: int = GEMM_N) -> tuple[list[CeilingCall], list[str]]:
    """The FP32 and INT8 GEMMs this machine can run (each library the backends use), and notes.

    A precision's ceiling is the fastest of its libraries: the INT8 rate of onnxruntime's MLAS and of
    OpenVINO's oneDNN differ by a large factor on the same CPU, and the machine's limit is the higher.
    """
    calls, notes = [fp32_gemm(threads, n)], []
    try:
        calls.append(int8_gemm(threads, n))
    except ImportError as e:
        notes.append(f"no onnxruntime INT8 ceiling: {e} (pip install 'omsf2[onnx]')")
    for int8 in (False, True):
        try:
            calls.append(openvino_gemm(threads, n, int8))
        except ImportError as e:
            notes.append(f"no OpenVINO {'INT8' if int8 else 'FP32'} ceiling: {e} (pip install 'omsf2[openvino]')")
    return calls, notes
