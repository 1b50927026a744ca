"""This machine: vector ISA, environment fingerprint, and the GEMM ceilings efficiency is measured against.

The ceilings are matrix multiplies through every library a CPU backend uses (torch, onnxruntime's
MLAS, OpenVINO's oneDNN), FP32 and INT8, each at the shape where it is fastest (:data:`CEILINGS`).
They are returned as calls, not numbers, so that :func:`omsf2.bench.timing.interleaved_rounds`
times them in the same rounds as the backends: a burst of load slows ceiling and model alike and
the efficiency ratio holds. :func:`summarize_ceilings` takes each precision's best library and its
spread over the rounds, beside the silicon's estimated peak (:mod:`omsf2.bench.peak`). The
trade-off: a ceiling is what a library reaches, not what the silicon can; a model whose kernels
beat every library's GEMM gets an efficiency over 1, which the tables print as a low ceiling.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import platform
import re
import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from omsf2._version import __version__
from omsf2.bench.peak import Peak
from omsf2.runtime.cpu import cpu_flags

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


def cpu_isa(flags: Collection[str]) -> list[str]:
    """Vector ISA names present in ``flags``, e.g. ``["AVX2", "AVX-512", "AVX512-VNNI"]``."""
    return [name for flag, name in ISA_FLAGS if flag in flags]


def has_int8_dot(flags: Collection[str]) -> bool:
    """Whether the CPU has an INT8 dot-product instruction (VNNI or AMX): INT8 should then win by far."""
    return bool(set(flags) & {"avx_vnni", "avx512_vnni", "amx_int8"})


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


# --------------------------------------------------------------------------- GEMM ceilings


@dataclasses.dataclass(frozen=True)
class GemmShape:
    """An M x K x N multiply-add (M*K*N MACs).

    With ``conv`` it runs as what it is the implicit GEMM of: a 3x3 convolution, stride 1, same
    padding, batch 1, over a square image of M pixels, K / 9 input and N output channels.
    """

    m: int
    k: int
    n: int
    conv: bool = False

    def __post_init__(self) -> None:
        if min(self.m, self.k, self.n) < 1:
            raise ValueError(f"GEMM dimensions must be >= 1, got {self.m}x{self.k}x{self.n}")
        if self.conv and (self.k % 9 or math.isqrt(self.m) ** 2 != self.m):
            raise ValueError(f"a 3x3 conv needs K a multiple of 9 and M a square, got {self.m}x{self.k}x{self.n}")

    @property
    def macs(self) -> int:
        """Multiply-adds of one call."""
        return self.m * self.k * self.n

    @property
    def label(self) -> str:
        """``MxKxN``, or the convolution it stands for."""
        if self.conv:
            side = math.isqrt(self.m)
            return f"3x3 conv {self.k // 9}->{self.n} ch at {side}x{side} ({self.m}x{self.k}x{self.n})"
        return f"{self.m}x{self.k}x{self.n}"


# The shape every ceiling runs at: ResNet-18's stage-3 3x3 convolution (256 -> 256 channels at
# 28 x 28) as an M x K x N GEMM. 462 M MACs (2-12 ms a call: the length of one of the model's
# layers, so load slows ceiling and model alike), K = 2304 a multiple of 64, and a working set
# (INT8: 590 KB of weights, 200 KB of activations) that stays in a core's L2, so the kernels run at
# their compute limit instead of streaming a 16 MB INT32 output through L3 as a square 2048^3 does.
# Measured on this bench's AMD EPYC (Zen 4, 2 threads, 2026-12-06; the machine shared, so the
# fastest of ~100 interleaved calls, GMAC/s): INT8 torch _int_mm 436, onnxruntime MatMulInteger
# 444, OpenVINO conv 412, against 366 / 361 for onnxruntime / OpenVINO at 2048^3 on a quiet
# machine (bench/results/bench-r18-448-*.json); FP32 OpenVINO conv 108, against 84 for its MatMul
# at 2048^3 there, torch 50 and onnxruntime 49 (42-47 at 1024^3). OpenVINO runs it as the convolution
# itself (oneDNN's brgemm conv, u8 activations for INT8): the kind of kernel the models' own
# convolutions run, so they cannot beat the ceiling by being a faster kind of kernel.
CONV_SHAPE = GemmShape(28 * 28, 9 * 256, 256)
OPENVINO_CONV = dataclasses.replace(CONV_SHAPE, conv=True)


@dataclasses.dataclass(frozen=True)
class CeilingCall:
    """One GEMM to time: ``call`` runs it once, ``macs`` multiply-adds, ``library`` names what ran it."""

    name: str
    call: Callable[[], object]
    macs: int
    library: str
    precision: str = "fp32"


def _ceiling_name(precision: str, library: str) -> str:
    return f"gemm-{precision}-{library}"


def ceiling_precision(name: str) -> str:
    """``gemm-int8-openvino`` -> ``int8``: the precision a ceiling call's name carries."""
    parts = name.split("-")
    if len(parts) < 3 or parts[0] != "gemm":
        raise ValueError(f"not a ceiling call name: {name!r} (expected gemm-<precision>-<library>)")
    return parts[1]


def _torch_mm(threads: int, shape: GemmShape, int8: bool) -> CeilingCall:
    """FP32 ``torch.mm`` (its BLAS, what eager convolutions use) or S8S8 -> S32 ``torch._int_mm``."""
    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    m, k, n = shape.m, shape.k, shape.n
    if int8:
        if not hasattr(torch, "_int_mm"):
            raise ImportError(f"torch {torch.__version__} has no _int_mm")
        a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
        b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int8)
        fn: Callable[[], object] = lambda: torch._int_mm(a, b)  # noqa: E731
        lib = f"torch {torch.__version__} _int_mm s8s8 {shape.label}"
    else:
        a, b, out = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen), torch.empty(m, n)
        fn = lambda: torch.mm(a, b, out=out)  # noqa: E731
        lib = f"torch {torch.__version__} mm f32 {shape.label}"
    fn()  # a dtype or shape this build refuses fails here, as a note, not in the timed rounds
    precision = "int8" if int8 else "fp32"
    return CeilingCall(_ceiling_name(precision, "torch"), fn, shape.macs, lib, precision)


def _onnx(nodes: list[Any], inputs: list[Any], output: Any, inits: list[Any]) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "ceiling", inputs, [output], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]).SerializeToString()


def _ort_model(shape: GemmShape, int8: bool) -> bytes:
    """``MatMulInteger`` u8 x s8 -> s32 (MLAS's INT8 GEMM), or a float ``MatMul`` (MLAS's SGEMM)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).integers(-128, 128, (shape.k, shape.n), dtype=np.int8)
    a_type, y_type = (TensorProto.UINT8, TensorProto.INT32) if int8 else (TensorProto.FLOAT, TensorProto.FLOAT)
    return _onnx(
        [helper.make_node("MatMulInteger" if int8 else "MatMul", ["A", "W"], ["Y"])],
        [helper.make_tensor_value_info("A", a_type, [shape.m, shape.k])],
        helper.make_tensor_value_info("Y", y_type, [shape.m, shape.n]),
        [numpy_helper.from_array(w if int8 else w.astype(np.float32), "W")],
    )


def _ort_matmul(threads: int, shape: GemmShape, int8: bool) -> CeilingCall:
    """The CPU provider of onnxruntime (MLAS): u8s8 ``MatMulInteger`` or FP32 ``MatMul``.

    Raises:
        ImportError: onnx or onnxruntime is not installed.
    """
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(_ort_model(shape, int8), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (shape.m, shape.k), dtype=np.uint8) if int8 else rng.standard_normal(
        (shape.m, shape.k), dtype=np.float32)  # fmt: skip
    feed = {"A": a}
    what = "MatMulInteger u8s8" if int8 else "MatMul f32"
    lib = f"onnxruntime {ort.__version__} {what} {shape.label}"
    precision = "int8" if int8 else "fp32"
    name = _ceiling_name(precision, "onnxruntime")
    return CeilingCall(name, lambda: sess.run(None, feed), shape.macs, lib, precision)


def _openvino_model(shape: GemmShape, int8: bool) -> tuple[bytes, tuple[int, ...]]:
    """A float input times constant weights (MatMul, or a 3x3 Conv with ``shape.conv``) and its input shape.

    With ``int8`` the input goes through QuantizeLinear / DequantizeLinear with a uint8 zero point
    and the weights through a per-output-channel int8 DequantizeLinear: the U8S8 Q/DQ pattern of
    ``model.int8-cpu.onnx``, which OpenVINO folds into one INT8 oneDNN primitive.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    cin = shape.k // 9 if shape.conv else shape.k
    side = math.isqrt(shape.m)
    w_shape = (shape.n, cin, 3, 3) if shape.conv else (shape.k, shape.n)
    x_shape = (1, cin, side, side) if shape.conv else (shape.m, shape.k)
    y_shape = (1, shape.n, side, side) if shape.conv else (shape.m, shape.n)
    w = np.random.default_rng(0).integers(-127, 128, w_shape, dtype=np.int8)
    op = helper.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1]) if shape.conv else (
        helper.make_node("MatMul", ["X", "W"], ["Y"]))  # fmt: skip
    if int8:
        axis = 0 if shape.conv else 1
        inits = [
            numpy_helper.from_array(np.array(0.02, np.float32), "sx"),
            numpy_helper.from_array(np.array(128, np.uint8), "zx"),
            numpy_helper.from_array(np.full(shape.n, 0.01, np.float32), "sw"),
            numpy_helper.from_array(np.zeros(shape.n, np.int8), "zw"),
            numpy_helper.from_array(w, "Wq"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["Xf", "sx", "zx"], ["Xq"]),
            helper.make_node("DequantizeLinear", ["Xq", "sx", "zx"], ["X"]),
            helper.make_node("DequantizeLinear", ["Wq", "sw", "zw"], ["W"], axis=axis),
            op,
        ]
    else:
        inits = [numpy_helper.from_array(w.astype(np.float32), "W")]
        nodes = [helper.make_node("Identity", ["Xf"], ["X"]), op]
    model = _onnx(
        nodes,
        [helper.make_tensor_value_info("Xf", TensorProto.FLOAT, list(x_shape))],
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, list(y_shape)),
        inits,
    )
    return model, x_shape


def _openvino(threads: int, shape: GemmShape, int8: bool) -> CeilingCall:
    """OpenVINO's CPU plugin (oneDNN): FP32, or U8S8 from the Q/DQ pattern; a MatMul or a 3x3 Conv.

    Raises:
        ImportError: openvino or onnx is not installed.
    """
    import numpy as np
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    from omsf2.runtime.openvino_core import openvino_core

    core = openvino_core()  # never a Core of its own: see omsf2.runtime.openvino_core
    onnx_bytes, x_shape = _openvino_model(shape, int8)
    cfg = {props.inference_num_threads: threads, hints.performance_mode: hints.PerformanceMode.LATENCY,
           props.num_streams: 1, hints.inference_precision: ov.Type.f32}  # fmt: skip
    req = core.compile_model(core.read_model(onnx_bytes, b""), "CPU", cfg).create_infer_request()
    req.set_input_tensor(ov.Tensor(np.random.default_rng(1).standard_normal(x_shape, dtype=np.float32)))
    precision = "int8" if int8 else "fp32"
    what = ("Conv" if shape.conv else "MatMul") + (" Q/DQ u8s8" if int8 else " f32")
    lib = f"OpenVINO {ov.__version__.split('-')[0]} {what} {shape.label}"
    return CeilingCall(_ceiling_name(precision, "openvino"), req.infer, shape.macs, lib, precision)


@dataclasses.dataclass(frozen=True)
class Ceiling:
    """One row of :data:`CEILINGS`: a library's GEMM at one precision and shape.

    Attributes:
        library: what runs it (the call's name ends with it).
        precision: ``fp32`` or ``int8``.
        shape: the GEMM.
        build: ``build(threads, shape, int8)`` -> the call.
        extra: the pip extra that installs the library (for the note when it is missing).
    """

    library: str
    precision: str
    shape: GemmShape
    build: Callable[[int, GemmShape, bool], CeilingCall]
    extra: str


# Every library a CPU backend runs on, at both precisions, at the shape where each measured its
# highest rate (CONV_SHAPE; OpenVINO as the convolution itself).
CEILINGS: tuple[Ceiling, ...] = (
    Ceiling("torch", "fp32", CONV_SHAPE, _torch_mm, "train"),
    Ceiling("onnxruntime", "fp32", CONV_SHAPE, _ort_matmul, "onnx"),
    Ceiling("openvino", "fp32", OPENVINO_CONV, _openvino, "openvino"),
    Ceiling("onnxruntime", "int8", CONV_SHAPE, _ort_matmul, "onnx"),
    Ceiling("openvino", "int8", OPENVINO_CONV, _openvino, "openvino"),
    Ceiling("torch", "int8", CONV_SHAPE, _torch_mm, "train"),
)


def ceiling_calls(threads: int) -> tuple[list[CeilingCall], list[str]]:
    """The FP32 and INT8 GEMMs of :data:`CEILINGS` that this machine can run, and notes for the others.

    A precision's ceiling is the fastest of its libraries (:func:`summarize_ceilings`): the INT8
    rates of onnxruntime's MLAS, OpenVINO's oneDNN and torch differ by a large factor on the same
    CPU, and the machine's limit is the highest.
    """
    calls, notes = [], []
    for row in CEILINGS:
        try:
            calls.append(row.build(threads, row.shape, row.precision == "int8"))
        except (ImportError, RuntimeError) as e:
            why = " ".join(str(e).split())[:200]
            notes.append(f"no {row.library} {row.precision.upper()} ceiling: {why} (pip install 'omsf2[{row.extra}]')")
    return calls, notes


def _spread(rates: Sequence[float]) -> dict[str, float | int]:
    """Per-round rates (MAC/s) -> GMAC/s min / median / max and the relative spread (max - min) / median."""
    g = sorted(r / 1e9 for r in rates)
    med = statistics.median(g)
    return {"n": len(g), "min": g[0], "median": med, "max": g[-1], "spread": (g[-1] - g[0]) / med if med else math.inf}


def summarize_ceilings(
    rates: Mapping[str, Sequence[float]], libraries: Mapping[str, str], peaks: Mapping[str, Peak]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The record's ``ceilings`` and the notes they call for.

    Args:
        rates: ceiling call name -> its rate (MAC/s) in each interleaved round it ran.
        libraries: call name -> the library (and shape) that ran it.
        peaks: precision -> the estimated peak (:func:`omsf2.bench.peak.estimate_peak`).

    Returns:
        ``gemm-<precision>`` -> the library with the highest median over rounds (``gmacs``, ``library``),
        its per-round ``rounds`` (n, min, median, max, spread), every library's, and ``peak_gmacs`` with
        the ``peak``'s assumptions; notes where no peak is known or a measured rate exceeds it.
    """
    out: dict[str, dict[str, Any]] = {}
    for call, rs in sorted(rates.items()):
        if not rs:
            continue
        lib, s = libraries.get(call, call), _spread(rs)
        entry = out.setdefault(f"gemm-{ceiling_precision(call)}", {"gmacs": 0.0, "library": "", "libraries": {}})
        entry["libraries"][lib] = s
        if s["median"] > entry["gmacs"]:
            entry.update(gmacs=s["median"], library=lib, rounds=s)
    notes = []
    for key, entry in out.items():
        precision = key.removeprefix("gemm-")
        peak = peaks.get(precision)
        entry["peak_gmacs"] = None if peak is None else peak.gmacs
        entry["peak"] = None if peak is None else peak.to_dict()
        if peak is None:
            notes.append(f"{key}: no peak estimate (no table row for this CPU's ISA, or no clock to read)")
            continue
        entry["of_peak"] = entry["gmacs"] / peak.gmacs
        best = max(s["max"] for s in entry["libraries"].values())
        if best > peak.gmacs:
            notes.append(
                f"{key}: a measured round ({best:.0f} GMAC/s) exceeds the estimated peak ({peak.gmacs:.0f} GMAC/s = "
                f"{peak.rate.mac_per_cycle:g} MAC/cycle x {peak.cores} cores x {peak.mhz:.0f} MHz), so the estimate "
                f"is low: at {peak.rate.isa}'s {peak.rate.mac_per_cycle:g} MAC/cycle the cores ran at >= "
                f"{peak.mhz_needed(best):.0f} MHz, above the nominal clock ({peak.mhz_from})"
            )
    return out, notes
