"""Ahead-of-time compilation of the Triton kernels to PTX and cubin, without a GPU.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` runs Triton's whole
pipeline (TTIR -> TTGIR -> LLVM IR -> PTX -> ptxas cubin) for any NVIDIA architecture on a machine
with no GPU: CI uses it to fail when a kernel stops compiling for Orin (sm_87) or H100 (sm_90),
and the TensorRT plugins (``trt_plugin``) embed its PTX in the engine.

Every argument is compiled as a plain ``i32``/pointer with no divisibility hints, so one binary
serves every shape. Triton (>= 3.3) appends two pointer parameters (global and profile scratch) to
every kernel; a launcher that does not pass them is only safe when the kernel needs no scratch,
which ``compile_kernel`` checks.

Works whether or not ``TRITON_INTERPRET`` is set: under the interpreter ``@triton.jit`` yields an
interpreted function, so the kernel's Python function is re-wrapped in a ``JITFunction`` here.
The compiled artifacts go to Triton's cache (``TRITON_CACHE_DIR``, default ``~/.triton/cache``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from omsf2.kernels.triton import KERNELS, SUPPORTED_DTYPES, KernelSpec

ARCHS = (87, 90)  # Jetson Orin, H100
_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class CompiledKernel:
    """One kernel compiled for one architecture and dtype.

    Attributes:
        name: the ``KERNELS`` entry.
        arch: compute capability as an int (87, 90).
        dtype: the tensor dtype it was compiled for.
        symbol: the kernel's entry name in the PTX/cubin.
        ptx: PTX text (what TensorRT's AOT plugins take; the driver JITs it for newer GPUs).
        cubin: the SASS binary for ``arch``.
        num_warps: warps per program; the launch block is ``num_warps * 32`` threads.
        shared: dynamic shared memory in bytes to launch with.
        constexprs: the compile-time constants it was built with.
        seconds: compile time (zero when served from Triton's cache).
    """

    name: str
    arch: int
    dtype: torch.dtype
    symbol: str
    ptx: str
    cubin: bytes
    num_warps: int
    shared: int
    constexprs: Mapping[str, int]
    seconds: float

    @property
    def block_x(self) -> int:
        """Threads per block to launch with."""
        return self.num_warps * 32


def signature(name: str, dtype: torch.dtype) -> dict[str, str]:
    """The ``ASTSource`` signature of a ``KERNELS`` entry for ``dtype`` (constexprs included).

    Raises:
        KeyError: an unknown kernel name.
        TypeError: an unsupported dtype.
    """
    spec = _spec(name)
    if dtype not in _TRITON_DTYPE:
        raise TypeError(f"AOT compiles for {[str(d) for d in SUPPORTED_DTYPES]}, got {dtype}")
    ty = _TRITON_DTYPE[dtype]
    fn = _python_fn(name)
    names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
    sig: dict[str, str] = {}
    for arg in names:
        if arg in spec.tensor_args:
            sig[arg] = f"*{ty}"
        elif arg in spec.int_args:
            sig[arg] = "i32"
        else:
            sig[arg] = "constexpr"
    return sig


def _spec(name: str) -> KernelSpec:
    if name not in KERNELS:
        raise KeyError(f"unknown Triton kernel {name!r}; known: {sorted(KERNELS)}")
    return KERNELS[name]


def _python_fn(name: str) -> Callable[..., Any]:
    spec = _spec(name)
    kernel = getattr(importlib.import_module(spec.module), spec.fn)
    return getattr(kernel, "fn", kernel)  # JITFunction and InterpretedFunction both keep .fn


def compile_kernel(
    name: str,
    arch: int,
    dtype: torch.dtype,
    *,
    constexprs: Mapping[str, int] | None = None,
    num_warps: int | None = None,
) -> CompiledKernel:
    """Compile one ``KERNELS`` entry for an NVIDIA architecture, with no GPU needed.

    Args:
        name: a key of ``KERNELS`` (``"multiscale_pool_max"``, ``"multiscale_pool_avg"``,
            ``"scale_fuse"``).
        arch: compute capability as an int, e.g. 87 (Orin) or 90 (H100).
        dtype: float32, float16 or bfloat16.
        constexprs: overrides of the entry's default constexprs (a window plan, a tile config).
        num_warps: overrides the entry's default.

    Returns:
        The compiled kernel with its PTX, cubin and launch parameters.

    Raises:
        KeyError: an unknown kernel name or constexpr.
        TypeError: an unsupported dtype.
        RuntimeError: the kernel needs global or profile scratch memory, which the plugin
            launchers do not provide.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    spec = _spec(name)
    consts = dict(spec.constexprs)
    for k, v in (constexprs or {}).items():
        if k not in consts:
            raise KeyError(f"{name} has no constexpr {k!r}; it has {sorted(consts)}")
        consts[k] = int(v)
    sig = signature(name, dtype)
    # A fresh JITFunction: under TRITON_INTERPRET=1 the module's kernel is an interpreted function.
    fn = JITFunction(_python_fn(name))
    warps = num_warps or spec.num_warps
    start = time.perf_counter()
    compiled = triton.compile(
        ASTSource(fn=fn, signature=sig, constexprs=consts),
        target=GPUTarget("cuda", int(arch), 32),
        # No FMA contraction: the binary rounds like the reference, op for op (and Triton 3.9 warns
        # when this is left to its changing default).
        options={"num_warps": warps, "enable_fp_fusion": False},
    )
    seconds = time.perf_counter() - start
    md = compiled.metadata
    scratch = (getattr(md, "global_scratch_size", 0), getattr(md, "profile_scratch_size", 0))
    if any(scratch):
        raise RuntimeError(f"{name} needs scratch memory {scratch}; the AOT/TensorRT launchers pass none")
    return CompiledKernel(
        name=name,
        arch=int(arch),
        dtype=dtype,
        symbol=md.name,
        ptx=compiled.asm["ptx"],
        cubin=compiled.asm["cubin"],
        num_warps=md.num_warps,
        shared=md.shared,
        constexprs=consts,
        seconds=seconds,
    )


def compile_all(arch: int, dtypes: Iterable[torch.dtype] = SUPPORTED_DTYPES) -> list[CompiledKernel]:
    """Compile every ``KERNELS`` entry with its default constexprs for ``arch`` and each dtype."""
    return [compile_kernel(name, arch, dt) for name in KERNELS for dt in dtypes]
