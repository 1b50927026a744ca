"""``torch.library`` registration of the fused neck ops: ``omsf2::multiscale_pool`` and ``omsf2::scale_fuse``.

Importing this module registers the two ops (``import omsf2`` does not), so that ``torch.compile`` and
``torch.export`` see ONE opaque node per op instead of tracing into pools, resizes and concats:

* ``omsf2::multiscale_pool(Tensor x, int[] windows, str mode) -> Tensor``
* ``omsf2::scale_fuse(Tensor l, Tensor a, Tensor l_up, Tensor a_up) -> Tensor``

Implementations: CUDA runs the fused kernels of :mod:`omsf2.kernels.cuda`; every other device runs the
pure-torch reference (:mod:`omsf2.kernels.reference`), so the ops work and are testable everywhere; a fake
(meta) implementation gives shapes to the tracers. The trade-off: the ops are inference-only (no autograd
formula is registered; training uses the reference functions, which autograd differentiates).

On a CUDA tensor whose dtype the kernels lack (float64) or on a machine without an nvcc toolchain, the CUDA
implementation computes the reference instead and logs a warning once: an op must give an answer on any
device, and the dispatcher (``omsf2.kernels``) is the place that chooses backends explicitly.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from omsf2.kernels import cuda as _cuda
from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref

__all__ = ["multiscale_pool_op", "scale_fuse_op"]

_log = logging.getLogger(__name__)


@functools.cache
def _warn_fallback(op: str, reason: str) -> None:
    # functools.cache makes this once per (op, reason) per process.
    _log.warning("omsf2::%s on CUDA runs the pure-torch reference: %s", op, reason)


def _fallback_reason(*tensors: Tensor) -> str | None:
    if tensors[0].dtype not in _cuda.SUPPORTED_DTYPES:
        return f"the CUDA kernels do not support {tensors[0].dtype}"
    return _cuda.cuda_unavailable_reason(tensors[0].device)


@torch.library.custom_op(
    "omsf2::multiscale_pool", mutates_args=(), schema="(Tensor x, int[] windows, str mode) -> Tensor"
)
def _multiscale_pool(x: Tensor, windows: Sequence[int], mode: str) -> Tensor:
    # Default (every device but CUDA): the reference, which is the spec.
    return multiscale_pool_ref(x, windows, mode)


@_multiscale_pool.register_kernel("cuda")
def _multiscale_pool_cuda(x: Tensor, windows: Sequence[int], mode: str) -> Tensor:
    reason = _fallback_reason(x)
    if reason is not None:
        _warn_fallback("multiscale_pool", reason)
        return multiscale_pool_ref(x, windows, mode)
    return _cuda.multiscale_pool_cuda(x, windows, mode)


@_multiscale_pool.register_fake
def _multiscale_pool_fake(x: Tensor, windows: Sequence[int], mode: str) -> Tensor:
    if x.dim() != 4:
        raise ValueError(f"multiscale_pool expects (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"multiscale_pool expects a floating-point tensor, got {x.dtype}")
    ks, _ = _cuda.check_pool_args(windows, mode)
    n, c, h, w = x.shape
    return x.new_empty((n, c * (1 + len(ks)), h, w))


@torch.library.custom_op(
    "omsf2::scale_fuse", mutates_args=(), schema="(Tensor l, Tensor a, Tensor l_up, Tensor a_up) -> Tensor"
)
def _scale_fuse(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> Tensor:  # noqa: E741
    return scale_fuse_ref(l, a, l_up, a_up)


@_scale_fuse.register_kernel("cuda")
def _scale_fuse_cuda(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> Tensor:  # noqa: E741
    reason = _fallback_reason(l, a, l_up, a_up)
    if reason is not None:
        _warn_fallback("scale_fuse", reason)
        return scale_fuse_ref(l, a, l_up, a_up)
    return _cuda.scale_fuse_cuda(l, a, l_up, a_up)


@_scale_fuse.register_fake
def _scale_fuse_fake(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> Tensor:  # noqa: E741
    _cuda.check_scale_fuse_shapes(l, a, l_up, a_up)
    return torch.empty_like(l, memory_format=torch.contiguous_format)


def multiscale_pool_op(x: Tensor, windows: Sequence[int] = (5, 9, 13), mode: str = "max") -> Tensor:
    """Call ``torch.ops.omsf2.multiscale_pool``: one graph node for compile/export, fused kernel on CUDA.

    Args:
        x: input features, shape (N, C, H, W), floating point.
        windows: odd window sizes, in output order.
        mode: ``"max"`` or ``"avg"``.

    Returns:
        Tensor of shape (N, C * (1 + len(windows)), H, W): ``[x, pool_k1(x), pool_k2(x), ...]``.
    """
    return torch.ops.omsf2.multiscale_pool(x, list(windows), mode)


def scale_fuse_op(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> Tensor:  # noqa: E741
    """Call ``torch.ops.omsf2.scale_fuse``: ``(1 + a) * l + a * up(a_up) * up(l_up)`` as one graph node.

    Args:
        l: this level's features, shape (N, C, H, W).
        a: this level's attention map, shape (N, 1, H, W).
        l_up: the coarser level's features, shape (N, C, h, w).
        a_up: the coarser level's attention map, shape (N, 1, h, w).

    Returns:
        Tensor of shape (N, C, H, W).
    """
    return torch.ops.omsf2.scale_fuse(l, a, l_up, a_up)
