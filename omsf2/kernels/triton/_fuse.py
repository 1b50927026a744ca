"""Triton kernel and launcher of ``scale_fuse``: ``(1 + a) * l + a * up(a_up) * up(l_up)`` in one pass.

A program owns ``BLOCK_C`` channels of one image over ``BLOCK_S`` flattened output pixels. The
attention maps ``a`` and ``a_up`` have one channel, so each program reads them once per pixel and
reuses them for all its channels; ``l`` is read once, ``l_up`` through the nearest-neighbour
index (each coarse pixel is re-read by the fine pixels that map to it, an L1/L2 hit). The sum is
formed in fp32 and rounded once to the output dtype.

Nearest upsampling follows PyTorch's ``mode="nearest"`` bit for bit: ``scale = float32(h) / H``
(correctly rounded, hence ``div_rn``) and ``src = min(floor(float32(dst) * scale), h - 1)``, which
for odd sizes (e.g. 7 -> 13) is not the same as the integer ``dst * h // H``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from omsf2.kernels.triton import launchable

# GPU configs (H100 and Orin): an elementwise op bound by DRAM; wide pixel blocks for coalescing,
# several channels per program to reuse the attention maps and the nearest indices.
GPU_CONFIGS: tuple[tuple[dict[str, int], int], ...] = (
    ({"BLOCK_C": 1, "BLOCK_S": 1024}, 4),
    ({"BLOCK_C": 4, "BLOCK_S": 256}, 4),
    ({"BLOCK_C": 8, "BLOCK_S": 256}, 8),
    ({"BLOCK_C": 16, "BLOCK_S": 128}, 8),
    ({"BLOCK_C": 4, "BLOCK_S": 1024}, 8),
)
MAX_INTERPRETER_BLOCK = 1 << 15  # elements per program in the interpreter


def _cdiv(a: Any, b: Any) -> Any:
    return (a + b - 1) // b


def fuse_grid(n: Any, c: Any, h: Any, w: Any, *, block_c: int, block_s: int, cdiv: Callable = _cdiv) -> tuple[Any, Any]:
    """Launch grid ``(N * ceil(C / BLOCK_C), ceil(H * W / BLOCK_S))`` on ints or symbolic shapes."""
    return n * cdiv(c, block_c), cdiv(h * w, block_s)


def _pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def interpreter_config(c: int, h: int, w: int) -> dict[str, int]:
    """One large block for Triton's interpreter, where each program costs ~0.1 s of Python."""
    block_s = min(_pow2(h * w), MAX_INTERPRETER_BLOCK)
    return {"BLOCK_C": min(_pow2(c), max(1, MAX_INTERPRETER_BLOCK // block_s)), "BLOCK_S": block_s}


@triton.jit
def _scale_fuse_kernel(
    l_ptr,  # (N, C, H, W)
    a_ptr,  # (N, 1, H, W)
    l_up_ptr,  # (N, C, h, w)
    a_up_ptr,  # (N, 1, h, w)
    C,
    H,
    W,
    h,
    w,
    out_ptr,  # (N, C, H, W)
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    # Argument order (inputs, int32 scalars, outputs) is the one TensorRT's AOT plugins launch with.
    pid_nc = tl.program_id(0)
    pid_s = tl.program_id(1)
    n_cb = (C + BLOCK_C - 1) // BLOCK_C
    n = pid_nc // n_cb
    cb = pid_nc % n_cb

    s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    smask = s < H * W
    y = s // W
    x = s % W
    # PyTorch's nearest index: float32 scale = in / out, correctly rounded, then floor(dst * scale).
    # Vectors (not scalars) so that it also compiles when Triton specializes a size of 1 to a constant.
    zero = tl.full([BLOCK_S], 0, tl.int32)
    scale_y = tl.math.div_rn((zero + h).to(tl.float32), (zero + H).to(tl.float32))
    scale_x = tl.math.div_rn((zero + w).to(tl.float32), (zero + W).to(tl.float32))
    sy = tl.minimum(tl.math.floor(y.to(tl.float32) * scale_y).to(tl.int32), h - 1)
    sx = tl.minimum(tl.math.floor(x.to(tl.float32) * scale_x).to(tl.int32), w - 1)
    src = sy * w + sx

    n64 = n.to(tl.int64)
    a = tl.load(a_ptr + n64 * H * W + s, mask=smask, other=0.0).to(tl.float32)
    a_up = tl.load(a_up_ptr + n64 * h * w + src, mask=smask, other=0.0).to(tl.float32)

    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (c < C)[:, None] & smask[None, :]
    # Offsets inside one image are int32 (the launcher bounds C*H*W and C*h*w below 2**31).
    l_offs = c[:, None] * (H * W) + s[None, :]
    lv = tl.load(l_ptr + n64 * C * H * W + l_offs, mask=mask, other=0.0).to(tl.float32)
    l_up = tl.load(l_up_ptr + n64 * C * h * w + c[:, None] * (h * w) + src[None, :], mask=mask, other=0.0)
    # Same association as the reference: ((1 + a) * l) + ((a * a_up) * l_up).
    out = (1.0 + a)[None, :] * lv + (a * a_up)[None, :] * l_up.to(tl.float32)
    tl.store(out_ptr + n64 * C * H * W + l_offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _interpreting() -> bool:
    return not isinstance(_scale_fuse_kernel, triton.runtime.JITFunction)


_autotuned: Any = None


def _autotuned_kernel() -> Any:
    """The kernel wrapped in ``triton.autotune`` over GPU_CONFIGS, built on first GPU use."""
    global _autotuned
    if _autotuned is None:
        configs = [triton.Config(dict(meta), num_warps=nw) for meta, nw in GPU_CONFIGS]
        _autotuned = triton.autotune(configs=configs, key=["C", "H", "W", "h", "w"])(_scale_fuse_kernel)
    return _autotuned


def scale_fuse(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor, *, config: dict[str, int] | None = None) -> Tensor:  # noqa: E741
    """Launch the fused scale step on validated contiguous tensors of one dtype and device.

    Args:
        l: (N, C, H, W).
        a: (N, 1, H, W).
        l_up: (N, C, h, w).
        a_up: (N, 1, h, w).
        config: a fixed ``{"BLOCK_C", "BLOCK_S"}`` instead of autotuning (tests use it to run the
            GPU blocks in the interpreter).

    Returns:
        Tensor of shape (N, C, H, W), dtype of ``l``, contiguous.

    Raises:
        ValueError: an image too large for int32 offsets.
    """
    n, c, hh, ww = l.shape
    h, w = l_up.shape[2:]
    out = torch.empty_like(l, memory_format=torch.contiguous_format)
    if out.numel() == 0:
        return out
    if max(c * hh * ww, c * h * w) >= 2**31:
        raise ValueError("scale_fuse: one image of l or l_up must hold fewer than 2**31 elements")
    if config is not None or _interpreting():
        cfg = dict(config) if config is not None else interpreter_config(c, hh, ww)
        grid = fuse_grid(n, c, hh, ww, block_c=cfg["BLOCK_C"], block_s=cfg["BLOCK_S"])
        launchable(_scale_fuse_kernel)[grid](l, a, l_up, a_up, c, hh, ww, h, w, out, **cfg, num_warps=4)
        return out

    def meta_grid(m: dict[str, Any]) -> tuple[Any, Any]:
        return fuse_grid(n, c, hh, ww, block_c=m["BLOCK_C"], block_s=m["BLOCK_S"])

    launchable(_autotuned_kernel())[meta_grid](l, a, l_up, a_up, c, hh, ww, h, w, out)
    return out
