"""Pure-torch references of the two neck ops that the kernels fuse: the specification.

Each function is written the way the fused kernel computes it, op for op, so that a kernel can be
held to it element-wise, and only with standard ops so that ONNX export of the reference yields
standard ONNX nodes (MaxPool/AveragePool, Concat, Resize(nearest), Mul, Add).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from omsf2.op_contract import check_pool_mode


def _check_windows(windows: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(w) for w in windows)
    if any(w < 1 or w % 2 == 0 for w in out) or any(int(w) != w for w in windows):
        raise ValueError(f"pooling windows must be odd positive integers, got {tuple(windows)!r}")
    return out


def multiscale_pool_ref(x: Tensor, windows: Sequence[int] = (5, 9, 13), mode: str = "max") -> Tensor:
    """Dense multi-scale pooling: ``x`` concatenated with its same-size poolings.

    Each window ``k`` pools with stride 1 and padding ``k // 2``, so every output keeps (H, W). Max
    pools are computed as a cascade of smaller ones, which gives identical values.
    ``"max"`` ignores the padding (it is -inf); ``"avg"`` averages over the valid elements only
    (``count_include_pad=False``), so borders are not darkened.

    Args:
        x: input features, shape (N, C, H, W), floating point.
        windows: odd window sizes, in output order.
        mode: ``"max"`` or ``"avg"``.

    Returns:
        Tensor of shape (N, C * (1 + len(windows)), H, W): ``[x, pool_k1(x), pool_k2(x), ...]``.
    """
    if x.dim() != 4:
        raise ValueError(f"multiscale_pool expects (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"multiscale_pool expects a floating-point tensor, got {x.dtype}")
    check_pool_mode(mode)
    ks = _check_windows(windows)
    if mode == "avg":
        pools = [F.avg_pool2d(x, kernel_size=k, stride=1, padding=k // 2, count_include_pad=False) for k in ks]
        return torch.cat([x, *pools], dim=1)
    # Max pools cascade exactly (SPPF): with -inf padding, pool_a(pool_b(x)) == pool_{a+b-1}(x), so
    # each window is the previous one pooled by the difference + 1 (9 = 5 then 5, 13 = 9 then 5).
    # Same values as pooling x at each size, 2.6-3x faster on CPU (bench/results), and the same
    # chain of small MaxPools in the ONNX graph.
    by_size: dict[int, Tensor] = {1: x}
    prev = 1
    for k in sorted(set(ks)):
        step = k - prev + 1
        by_size[k] = by_size[prev] if step == 1 else F.max_pool2d(by_size[prev], step, stride=1, padding=step // 2)
        prev = k
    return torch.cat([x, *(by_size[k] for k in ks)], dim=1)


def check_scale_fuse_args(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> None:  # noqa: E741
    """The argument rules every ``scale_fuse`` implementation shares (shapes as in :func:`scale_fuse_ref`).

    Raises:
        ValueError: a tensor is not 4-D, the shapes disagree, the tensors are on different devices,
            or the coarse level is empty while the output is not (nothing to upsample from).
        TypeError: the four dtypes differ or are not floating point.
    """
    if any(t.dim() != 4 for t in (l, a, l_up, a_up)):
        raise ValueError(
            "scale_fuse expects four 4-D tensors (N, C, H, W), got shapes "
            f"{[tuple(t.shape) for t in (l, a, l_up, a_up)]}"
        )
    n, c, h, w = l.shape
    if tuple(a.shape) != (n, 1, h, w):
        raise ValueError(f"scale_fuse: a must have shape {(n, 1, h, w)}, got {tuple(a.shape)}")
    if l_up.shape[0] != n or l_up.shape[1] != c:
        raise ValueError(f"scale_fuse: l_up must have shape ({n}, {c}, h, w), got {tuple(l_up.shape)}")
    if tuple(a_up.shape) != (n, 1, *l_up.shape[2:]):
        raise ValueError(f"scale_fuse: a_up must have shape {(n, 1, *l_up.shape[2:])}, got {tuple(a_up.shape)}")
    dtypes = {t.dtype for t in (l, a, l_up, a_up)}
    if len(dtypes) != 1 or not l.is_floating_point():
        raise TypeError(f"scale_fuse expects four tensors of one floating dtype, got {sorted(map(str, dtypes))}")
    devices = {t.device for t in (l, a, l_up, a_up)}
    if len(devices) != 1:
        raise ValueError(f"scale_fuse expects four tensors on one device, got {sorted(map(str, devices))}")
    if h * w > 0 and l_up.shape[2] * l_up.shape[3] == 0:
        raise ValueError(f"scale_fuse: cannot upsample an empty map {tuple(l_up.shape[2:])} to {(h, w)}")


def scale_fuse_ref(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> Tensor:  # noqa: E741
    """Scale enhancement plus top-down scale selection of the neck, one level.

    ``out = (1 + a) * l + a * up(a_up) * up(l_up)`` where ``up`` is nearest upsampling to (H, W)
    with PyTorch's ``mode="nearest"`` index rule ``src = floor(dst * h / H)`` (odd sizes included).

    Args:
        l: this level's features, shape (N, C, H, W).
        a: this level's attention (heat) map, shape (N, 1, H, W).
        l_up: the coarser level's features, shape (N, C, h, w).
        a_up: the coarser level's attention map, shape (N, 1, h, w).

    Returns:
        Tensor of shape (N, C, H, W).
    """
    check_scale_fuse_args(l, a, l_up, a_up)
    h, w = l.shape[-2:]
    up_l = F.interpolate(l_up, size=(h, w), mode="nearest")
    up_a = F.interpolate(a_up, size=(h, w), mode="nearest")
    return (1 + a) * l + a * up_a * up_l
