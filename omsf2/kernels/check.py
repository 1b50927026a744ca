"""Check every kernel backend on this machine against the reference, and time it where that means something.

``omsf2 kernels check`` and the kernel micro-benchmark (``bench/kernel_bench.py``) share this
module. Correctness is the max absolute error against the fp32 reference on the same inputs,
judged by a tolerance per dtype. Timing uses CUDA events after a warm-up on a GPU; on a CPU the
reference is timed with ``perf_counter`` and Triton's interpreter is never timed, because its
speed (a Python loop per program instance) says nothing about the kernel.

Achieved bandwidth counts the bytes a fused kernel must move at minimum (each input read once,
the output written once), so the unfused reference, which moves more, shows a lower figure for
the same work. Peak bandwidth comes from the device's memory clock and bus width where torch
reports them.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from omsf2.kernels.ops import Backend, env_backend, multiscale_pool, parse_backend, scale_fuse, unavailable_reason
from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref

OPS = ("multiscale_pool", "scale_fuse")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Max abs error allowed per unit of output magnitude: fp32 rounding of an average of up to 169
# terms, one rounding step in fp16 / bf16 (the kernels accumulate in fp32 either way).
_REL_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@dataclasses.dataclass(frozen=True)
class Case:
    """One op invocation: which op, its mode, and the shapes of its inputs.

    Attributes:
        op: ``"multiscale_pool"`` or ``"scale_fuse"``.
        name: a label (where in the model such a shape occurs).
        shape: (N, C, H, W) of ``x`` (multiscale_pool) or ``l`` (scale_fuse).
        up_hw: (h, w) of the coarser level (scale_fuse only).
        windows: pooling windows (multiscale_pool only).
        mode: ``"max"`` or ``"avg"`` (multiscale_pool only).
    """

    op: str
    name: str
    shape: tuple[int, int, int, int]
    up_hw: tuple[int, int] = (0, 0)
    windows: tuple[int, ...] = (5, 9, 13)
    mode: str = "max"

    def inputs(self, dtype: torch.dtype, device: torch.device, seed: int = 0) -> tuple[Tensor, ...]:
        """Random inputs (attention maps in [0, 1], as the CAM's sigmoid gives)."""
        g = torch.Generator().manual_seed(seed)
        n, c, h, w = self.shape
        if self.op == "multiscale_pool":
            return (torch.randn(self.shape, generator=g).to(device, dtype),)
        uh, uw = self.up_hw
        return (
            torch.randn(self.shape, generator=g).to(device, dtype),
            torch.rand((n, 1, h, w), generator=g).to(device, dtype),
            torch.randn((n, c, uh, uw), generator=g).to(device, dtype),
            torch.rand((n, 1, uh, uw), generator=g).to(device, dtype),
        )

    def run(self, inputs: Sequence[Tensor], backend: Backend) -> Tensor:
        """The op through the dispatcher with an explicit backend."""
        if self.op == "multiscale_pool":
            return multiscale_pool(inputs[0], self.windows, self.mode, backend=backend)
        return scale_fuse(*inputs, backend=backend)

    def reference(self, inputs: Sequence[Tensor]) -> Tensor:
        """The fp32 reference on the same values (on their device)."""
        f32 = [t.float() for t in inputs]
        if self.op == "multiscale_pool":
            return multiscale_pool_ref(f32[0], self.windows, self.mode)
        return scale_fuse_ref(*f32)

    def min_bytes(self, dtype: torch.dtype) -> int:
        """Bytes a fused kernel must move: every input read once, the output written once."""
        n, c, h, w = self.shape
        size = torch.empty((), dtype=dtype).element_size()
        if self.op == "multiscale_pool":
            return size * n * c * h * w * (2 + len(self.windows))
        uh, uw = self.up_hw
        return size * (2 * n * c * h * w + n * h * w + n * c * uh * uw + n * uh * uw)

    def label(self) -> str:
        """Human-readable shape description."""
        n, c, h, w = self.shape
        if self.op == "multiscale_pool":
            return f"{self.name} {n}x{c}x{h}x{w} {self.mode} {','.join(map(str, self.windows))}"
        return f"{self.name} {n}x{c}x{h}x{w} <- {self.up_hw[0]}x{self.up_hw[1]}"


# Where the ops sit in omsf2_r50 at 448 px, batch 8: C5 is 2048 x 14 x 14; the neck has 128
# channels at strides 4..32 (112, 56, 28, 14).
GPU_CASES = (
    Case("multiscale_pool", "r50 C5", (8, 2048, 14, 14)),
    Case("multiscale_pool", "r18 C5", (8, 512, 14, 14)),
    Case("multiscale_pool", "stride-8 map", (8, 128, 56, 56)),
    Case("multiscale_pool", "stride-8 map", (8, 128, 56, 56), mode="avg"),
    Case("scale_fuse", "P2 <- P3", (8, 128, 112, 112), (56, 56)),
    Case("scale_fuse", "P3 <- P4", (8, 128, 56, 56), (28, 28)),
    Case("scale_fuse", "odd sizes", (8, 128, 75, 75), (38, 38)),
)
# Triton's CPU interpreter runs a Python loop per program instance: small shapes only.
CPU_CASES = (
    Case("multiscale_pool", "odd", (2, 5, 9, 11)),
    Case("multiscale_pool", "odd", (1, 3, 7, 13), windows=(3, 7), mode="avg"),
    Case("scale_fuse", "odd", (2, 5, 13, 11), (7, 6)),
)


@dataclasses.dataclass(frozen=True)
class CheckRow:
    """One (case, backend, dtype) result.

    ``status`` is ``"ok"``, ``"MISMATCH"``, ``"error"`` or ``"unavailable"``; ``detail`` says why
    for the last two. Times are None where not measured (see the module docstring).
    """

    op: str
    case: str
    backend: str
    dtype: str
    status: str
    max_abs_err: float | None = None
    tolerance: float | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    gb_per_s: float | None = None
    peak_gb_per_s: float | None = None
    detail: str = ""


def peak_bandwidth_gbs(device: torch.device) -> float | None:
    """Theoretical DRAM bandwidth in GB/s (DDR: two transfers per clock), None if unknown."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 10, iters: int = 100) -> list[float]:
    """Per-call times in ms: CUDA events on a GPU (device time), ``perf_counter`` on a CPU."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return times
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``xs`` by the nearest-rank rule."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _timeable(backend: Backend, device: torch.device) -> bool:
    # The interpreter's wall time measures Python, not the kernel: never report it as a speed.
    return device.type == "cuda" or backend is Backend.REF


def check_case(
    case: Case, backend: Backend, dtype: torch.dtype, device: torch.device, *, timing: bool, iters: int = 100
) -> CheckRow:
    """Run one case on one backend and compare it with the fp32 reference."""
    dname = next(k for k, v in DTYPES.items() if v == dtype)
    base = CheckRow(op=case.op, case=case.label(), backend=backend.value, dtype=dname, status="")
    if (reason := unavailable_reason(backend, device)) is not None:
        return dataclasses.replace(base, status="unavailable", detail=reason)
    inputs = case.inputs(dtype, device)
    try:
        with torch.no_grad():
            out = case.run(inputs, backend)
            ref = case.reference(inputs)
    except (ValueError, TypeError, RuntimeError) as e:
        return dataclasses.replace(base, status="error", detail=str(e).splitlines()[0] if str(e) else type(e).__name__)
    err = (out.float() - ref).abs().max().item() if ref.numel() else 0.0
    tol = _REL_TOL[dtype] * max(1.0, ref.abs().max().item() if ref.numel() else 1.0)
    row = dataclasses.replace(base, status="ok" if err <= tol else "MISMATCH", max_abs_err=err, tolerance=tol)
    if not (timing and _timeable(backend, device)):
        return row
    with torch.no_grad():
        times = time_fn(lambda: case.run(inputs, backend), device, iters=iters)
    med = statistics.median(times)
    peak = peak_bandwidth_gbs(device)
    gbs = case.min_bytes(dtype) / (med * 1e-3) / 1e9 if device.type == "cuda" else None
    return dataclasses.replace(row, median_ms=med, p90_ms=percentile(times, 0.9), gb_per_s=gbs, peak_gb_per_s=peak)


def check_kernels(
    device: str | torch.device = "cpu",
    *,
    backends: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    timing: bool = True,
    iters: int = 100,
    cases: Sequence[Case] | None = None,
    on_row: Callable[[CheckRow], None] | None = None,
) -> list[CheckRow]:
    """Check each op x backend x dtype on ``device`` (``omsf2 kernels check``).

    Args:
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda[:i]"``.
        backends: which backends (default all; an unavailable one yields an ``unavailable`` row).
        dtypes: names from ``fp32``, ``fp16``, ``bf16`` (default fp32 on CPU, all three on CUDA).
        timing: time the backends where timing is meaningful (see module docstring).
        iters: timed iterations per row.
        cases: shapes to run (default: the model's shapes on CUDA, small odd shapes on CPU).
        on_row: called with each row as it completes (progress output).

    Returns:
        One :class:`CheckRow` per case, backend and dtype.
    """
    env_backend()  # a bad OMSF2_KERNELS is an error here too, before any work
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(device)):
        raise ValueError(f"invalid device {str(device)!r}; choose auto, cpu or cuda[:index]")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but no CUDA device is available; use the cpu device")
    chosen = [parse_backend(b) for b in backends] if backends else list(Backend)
    names = list(dtypes) if dtypes else (list(DTYPES) if dev.type == "cuda" else ["fp32"])
    bad = [d for d in names if d not in DTYPES]
    if bad:
        raise ValueError(f"invalid dtype(s) {bad}; choose from {', '.join(DTYPES)}")
    rows: list[CheckRow] = []
    order = [Backend.REF] + [b for b in chosen if b is not Backend.REF] if Backend.REF in chosen else chosen
    for case in cases if cases is not None else (GPU_CASES if dev.type == "cuda" else CPU_CASES):
        for dname in names:
            for b in order:
                row = check_case(case, b, DTYPES[dname], dev, timing=timing, iters=iters)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows
