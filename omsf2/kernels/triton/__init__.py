"""Triton backend of the fused neck ops: the functions the dispatcher calls with ``backend="triton"``.

This module is light: it imports only torch. Triton and the ``@triton.jit`` kernels
(``_pool``, ``_fuse``) are imported on the first launch, so ``import omsf2.kernels`` costs nothing
on machines without Triton. ``KERNELS`` describes every kernel for the ahead-of-time compiler
(``aot``) and the TensorRT plugins (``trt_plugin``) without importing them.

Layout contract: the kernels read and write contiguous NCHW. Inputs that are not (a strided view,
or ``channels_last`` as the CPU training path produces) are copied once with ``.contiguous()``;
the output is always NCHW-contiguous. A channels_last kernel would save that copy on CUDA, but
the neck maps are small and the copy is one extra pass of the input only.

Triton runs on CUDA tensors, or on CPU tensors in Triton's interpreter when ``TRITON_INTERPRET=1``
is set before Triton is first imported (how the tests run without a GPU).

``torch.library``: the two launchers are registered (once, on first use) as ``triton_op`` ops
``omsf2::multiscale_pool_triton`` and ``omsf2::scale_fuse_triton``, whose kernels are launched
through ``wrap_triton``; ``torch.compile`` therefore traces into the Triton kernels themselves
(one user-defined kernel in the graph, no fake implementation to keep in sync) instead of
stopping at an opaque call. Under the interpreter the kernels are not JIT functions and are
launched directly (eager only: nothing compiles there).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from omsf2.kernels.reference import check_scale_fuse_args
from omsf2.op_contract import check_pool_mode

__all__ = [
    "KERNELS",
    "SUPPORTED_DTYPES",
    "KernelSpec",
    "launchable",
    "multiscale_pool_triton",
    "scale_fuse_triton",
    "triton_ops",
    "triton_unavailable_reason",
]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TRUE = ("1", "true", "on", "yes")


@dataclass(frozen=True)
class KernelSpec:
    """How to compile one ``@triton.jit`` kernel ahead of time (see ``omsf2.kernels.triton.aot``).

    Attributes:
        module: module holding the kernel, imported only when compiling.
        fn: the kernel's name in ``module``.
        tensor_args: pointer arguments, typed with the compile dtype (inputs first, then outputs).
        int_args: int32 scalar arguments (shape values).
        constexprs: default compile-time constants (a tile config and, for pooling, a window set).
        num_warps: default warps per program.
    """

    module: str
    fn: str
    tensor_args: tuple[str, ...]
    int_args: tuple[str, ...]
    constexprs: Mapping[str, int] = field(default_factory=dict)
    num_warps: int = 4


def _pool_defaults(mode: str) -> dict[str, int]:
    # (5, 9, 13) as packed by _pool.pool_plan: cascade steps 1, 1, 2, 2 (radius 1, 2, 4, 6).
    # test_triton_aot checks that these equal pool_plan((5, 9, 13), mode).constexprs().
    return {
        "NUM_WINDOWS": 3,
        "STEPS": 0x2211,
        "NUM_STEPS": 4,
        "STORE_AT": 0x432,
        "RADII": 0x642,
        "HALO": 6,
        "IS_AVG": int(mode == "avg"),
        "BLOCK_C": 1,
        "TILE_H": 32,
        "TILE_W": 32,
    }


_POOL = "omsf2.kernels.triton._pool"
_FUSE = "omsf2.kernels.triton._fuse"
KERNELS: Mapping[str, KernelSpec] = {
    "multiscale_pool_max": KernelSpec(
        _POOL, "_multiscale_pool_kernel", ("x_ptr", "out_ptr"), ("C", "H", "W"), _pool_defaults("max"), 4
    ),
    "multiscale_pool_avg": KernelSpec(
        _POOL, "_multiscale_pool_kernel", ("x_ptr", "out_ptr"), ("C", "H", "W"), _pool_defaults("avg"), 4
    ),
    "scale_fuse": KernelSpec(
        _FUSE,
        "_scale_fuse_kernel",
        ("l_ptr", "a_ptr", "l_up_ptr", "a_up_ptr", "out_ptr"),
        ("C", "H", "W", "h", "w"),
        {"BLOCK_C": 4, "BLOCK_S": 256},
        4,
    ),
}


def triton_unavailable_reason(device: torch.device | str) -> str | None:
    """Why the Triton backend cannot run on tensors of ``device``, or None when it can.

    Cheap: it does not import Triton.

    Args:
        device: a torch device or its name (``"cuda"``, ``"cuda:1"``, ``"cpu"``).

    Returns:
        None for a CUDA device with Triton installed, or a CPU device with Triton installed and
        ``TRITON_INTERPRET=1``; else a one-line reason.
    """
    dev = torch.device(device)
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'omsf2[triton]')"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available to this torch build or machine"
        return None
    if dev.type == "cpu":
        if os.environ.get("TRITON_INTERPRET", "").strip().lower() not in _TRUE:
            return "Triton runs on CUDA tensors; set TRITON_INTERPRET=1 to run it on CPU in Triton's interpreter"
        # The interpreter is chosen when the kernels are decorated: setting the variable after
        # they were imported does not switch them.
        for name in (_POOL, _FUSE):
            mod = sys.modules.get(name)
            if mod is not None and not mod._interpreting():
                return "TRITON_INTERPRET=1 was set after the Triton kernels were imported; set it before"
        return None
    return f"Triton has no backend for {dev.type} tensors here (CUDA, or CPU with TRITON_INTERPRET=1)"


def launchable(kernel: Any) -> Any:
    """``wrap_triton(kernel)`` (traceable by ``torch.compile``), or the kernel itself under the interpreter."""
    import triton

    if isinstance(kernel, triton.runtime.JITFunction | triton.runtime.Autotuner):
        return torch.library.wrap_triton(kernel)
    return kernel  # an interpreted kernel: wrap_triton accepts only JIT and autotuned functions


@functools.cache
def triton_ops() -> tuple[Any, Any]:
    """Register (once) and return the ``omsf2::multiscale_pool_triton`` and ``omsf2::scale_fuse_triton`` ops."""

    # Explicit schemas: annotations are strings under `from __future__ import annotations`.
    @torch.library.triton_op(
        "omsf2::multiscale_pool_triton", mutates_args=(), schema="(Tensor x, int[] windows, str mode) -> Tensor"
    )
    def pool_op(x: Tensor, windows: Sequence[int], mode: str) -> Tensor:
        return importlib.import_module(_POOL).multiscale_pool(x, windows, mode)

    @torch.library.triton_op(
        "omsf2::scale_fuse_triton", mutates_args=(), schema="(Tensor l, Tensor a, Tensor l_up, Tensor a_up) -> Tensor"
    )
    def fuse_op(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> Tensor:  # noqa: E741
        return importlib.import_module(_FUSE).scale_fuse(l, a, l_up, a_up)

    return torch.ops.omsf2.multiscale_pool_triton, torch.ops.omsf2.scale_fuse_triton


def _check_float(name: str, t: Tensor) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name}: the Triton kernels take float32, float16 or bfloat16, got {t.dtype}")


def _check_device(op: str, device: torch.device) -> None:
    reason = triton_unavailable_reason(device)
    if reason is None:
        return
    if reason.startswith("triton is not installed"):
        raise RuntimeError(f"{op}: {reason}")
    raise ValueError(f"{op}: cannot run on {device}: {reason}")


def multiscale_pool_triton(x: Tensor, windows: Sequence[int] = (5, 9, 13), mode: str = "max") -> Tensor:
    """Fused multi-scale pooling, as ``multiscale_pool_ref``, in one Triton kernel.

    ``x`` concatenated with its stride-1 same-size pooling at each window; ``"max"`` ignores the
    padding, ``"avg"`` averages the valid elements only (``count_include_pad=False``) in fp32.
    A non-contiguous or channels_last ``x`` is copied to contiguous NCHW first.

    Args:
        x: input, shape (N, C, H, W), float32/float16/bfloat16, on CUDA (or CPU under
            ``TRITON_INTERPRET=1``).
        windows: odd window sizes up to 15 (at most 8 of them), in output order.
        mode: ``"max"`` or ``"avg"``.

    Returns:
        Tensor of shape (N, C * (1 + len(windows)), H, W), dtype of ``x``, NCHW-contiguous.

    Raises:
        ValueError: a shape that is not 4-D, a bad window or mode, or a device Triton cannot run on.
        TypeError: a dtype other than float32/float16/bfloat16.
        RuntimeError: Triton is not installed.
    """
    if x.dim() != 4:
        raise ValueError(f"multiscale_pool expects (N, C, H, W), got shape {tuple(x.shape)}")
    _check_float("multiscale_pool", x)
    check_pool_mode(mode)
    _check_device("multiscale_pool", x.device)
    return triton_ops()[0](x.contiguous(), [int(w) for w in windows], mode)


def scale_fuse_triton(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> Tensor:  # noqa: E741
    """Fused ``(1 + a) * l + a * up(a_up) * up(l_up)``, as ``scale_fuse_ref``, in one Triton kernel.

    ``up`` is nearest resizing to (H, W) with PyTorch's ``mode="nearest"`` index rule; ``a`` and
    ``a_up`` broadcast over channels. Computed in fp32, rounded once to the input dtype.
    Non-contiguous or channels_last inputs are copied to contiguous NCHW first.

    Args:
        l: this level's features, shape (N, C, H, W).
        a: this level's attention map, shape (N, 1, H, W).
        l_up: the coarser level's features, shape (N, C, h, w), h and w >= 1.
        a_up: the coarser level's attention map, shape (N, 1, h, w).

    Returns:
        Tensor of shape (N, C, H, W), dtype of ``l``, NCHW-contiguous.

    Raises:
        ValueError: shapes that do not match the above, tensors on different devices, or a device
            Triton cannot run on.
        TypeError: dtypes that differ or are not float32/float16/bfloat16.
        RuntimeError: Triton is not installed.
    """
    check_scale_fuse_args(l, a, l_up, a_up)
    _check_float("scale_fuse", l)
    _check_device("scale_fuse", l.device)
    args = (l.contiguous(), a.contiguous(), l_up.contiguous(), a_up.contiguous())
    return triton_ops()[1](*args)
