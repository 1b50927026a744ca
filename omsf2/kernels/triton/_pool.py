"""Triton kernel and launcher of ``multiscale_pool``: one read of a tile, every window, one write each.

A program owns ``BLOCK_C`` channel planes of one image and a ``TILE_H x TILE_W`` input tile of
them, which includes a halo of ``HALO = max(windows) // 2`` on every side; it writes the
``(TILE_H - 2*HALO) x (TILE_W - 2*HALO)`` centre to every channel block of the concatenated
output (the identity copy of ``x`` included). Each input element is therefore read from DRAM
once by its owner; only the halo is read again by the neighbouring tiles (an L2 hit).

The windows are computed from the tile held in registers, shifting it with ``tl.gather``:

* ``max``: a doubling cascade of separable maxima. From a square window of radius ``r`` the
  radius ``r + d`` (``d <= r``) is ``max(shift(P, -d), shift(P, +d))`` per axis, exact because max
  is idempotent and the padding is ``-inf``. (5, 9, 13) costs 4 steps (radius 1, 2, 4, 6) of
  4 gathers, the SPPF cascade generalised to any odd windows.
* ``avg``: separable box sums from in-tile prefix sums (``hi - lo`` of an fp32 inclusive scan),
  divided by the number of valid elements, which is known in closed form
  (``count_include_pad=False``).

The trade-off: tiles are powers of two, so a tile wastes ``2*HALO`` rows and columns on its halo;
windows above ``MAX_WINDOW`` are rejected rather than served by huge tiles.

Only builtins of ``triton.language`` are used inside the kernel (no ``tl.cumsum``, ``tl.max``, ``tl.zeros``,
helper ``@triton.jit`` functions): device functions leave Triton's interpreter patched over the
language, which would break an ahead-of-time compile later in the same process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from omsf2.kernels.triton import launchable
from omsf2.op_contract import check_pool_mode

MAX_WINDOW = 15  # HALO <= 7 keeps >= 18 outputs per 32-wide tile, the smallest tile of the configs
MAX_WINDOWS = 8  # 4-bit fields of the packed constexprs
MAX_TILE = 128  # largest tile edge; also bounds the prefix-scan steps in the kernel
_FIELD = 4  # bits per packed constexpr field


@dataclass(frozen=True)
class PoolPlan:
    """Compile-time description of one window set: the constexprs of the kernel.

    Attributes:
        windows: the odd window sizes, in output order.
        is_avg: average pooling (else max).
        halo: the largest radius, the tile's halo.
        steps: packed 4-bit step sizes ``d`` of the max cascade.
        num_steps: number of cascade steps.
        store_at: packed 4-bit, per window: cascade steps done when that window is ready.
        radii: packed 4-bit radius per window (used by ``avg``).
    """

    windows: tuple[int, ...]
    is_avg: bool
    halo: int
    steps: int
    num_steps: int
    store_at: int
    radii: int

    def constexprs(self) -> dict[str, int]:
        """The kernel's window constexprs (tile constexprs come from the config)."""
        return {
            "NUM_WINDOWS": len(self.windows),
            "STEPS": self.steps,
            "NUM_STEPS": self.num_steps,
            "STORE_AT": self.store_at,
            "RADII": self.radii,
            "HALO": self.halo,
            "IS_AVG": int(self.is_avg),
        }


def check_windows(windows: Sequence[int]) -> tuple[int, ...]:
    """Validate a window tuple for the Triton kernel.

    Raises:
        ValueError: a window that is not an odd integer in [1, MAX_WINDOW], or more than
            MAX_WINDOWS windows.
    """
    out = []
    for w in windows:
        if isinstance(w, bool) or int(w) != w or w < 1 or w % 2 == 0:
            raise ValueError(f"pooling windows must be odd positive integers, got {tuple(windows)!r}")
        if w > MAX_WINDOW:
            raise ValueError(
                f"the Triton multiscale_pool supports windows up to {MAX_WINDOW}, got {tuple(windows)!r}; "
                "use the reference backend for larger windows"
            )
        out.append(int(w))
    if len(out) > MAX_WINDOWS:
        raise ValueError(f"the Triton multiscale_pool supports at most {MAX_WINDOWS} windows, got {len(out)}")
    return tuple(out)


def pool_plan(windows: Sequence[int], mode: str) -> PoolPlan:
    """Plan the cascade of a window set (pure Python, shared by the launcher, AOT and TensorRT).

    Args:
        windows: odd window sizes <= MAX_WINDOW, in output order.
        mode: ``"max"`` or ``"avg"``.

    Raises:
        ValueError: an invalid mode or window set.
    """
    check_pool_mode(mode)
    ws = check_windows(windows)
    radii_sorted = sorted({w // 2 for w in ws})
    # Doubling cascade: radius 0 -> 1 (centre and both neighbours), then steps d <= r, so the
    # two shifted windows [-r-d, r-d] and [d-r, d+r] overlap and their max is radius r + d.
    reached = {0: 0}  # radius -> steps done when it is held
    steps: list[int] = []
    r = 0
    for target in radii_sorted:
        while r < target:
            d = 1 if r == 0 else min(target - r, r)
            steps.append(d)
            r += d
            reached[r] = len(steps)
    steps_packed = sum(d << (_FIELD * i) for i, d in enumerate(steps))
    store_at = sum(reached[w // 2] << (_FIELD * k) for k, w in enumerate(ws))
    radii = sum((w // 2) << (_FIELD * k) for k, w in enumerate(ws))
    halo = max(radii_sorted, default=0)
    return PoolPlan(ws, mode == "avg", halo, steps_packed, len(steps), store_at, radii)


def _cdiv(a: Any, b: Any) -> Any:
    return (a + b - 1) // b


def pool_grid(
    n: Any, c: Any, h: Any, w: Any, *, halo: int, block_c: int, tile_h: int, tile_w: int, cdiv: Callable = _cdiv
) -> tuple[Any, Any]:
    """Launch grid ``(N * ceil(C / BLOCK_C), tiles_h * tiles_w)``.

    Works on ints and on symbolic shape expressions (TensorRT's ``trtp`` passes its ``cdiv``):
    the batch-channel axis goes on grid x (2**31 - 1 programs), the tiles on grid y (65535).
    """
    return n * cdiv(c, block_c), cdiv(h, tile_h - 2 * halo) * cdiv(w, tile_w - 2 * halo)


def _pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def interpreter_config(c: int, h: int, w: int, halo: int) -> dict[str, int]:
    """One large tile for Triton's interpreter, where each program costs ~0.1 s of Python."""
    tile_h = min(MAX_TILE, max(_pow2(h + 2 * halo), 2 * _pow2(2 * halo + 1)))
    tile_w = min(MAX_TILE, max(_pow2(w + 2 * halo), 2 * _pow2(2 * halo + 1)))
    block_c = min(_pow2(c), max(1, (1 << 15) // (tile_h * tile_w)))
    return {"BLOCK_C": block_c, "TILE_H": tile_h, "TILE_W": tile_w}


# GPU tiles (H100 and Orin): the neck's maps are small (16-64 px) with many channels, so 32x32 tiles
# that hold the whole halo'd plane of 1-4 channels, and 64-wide tiles that waste less on the halo of
# larger maps. The autotuner picks per (C, H, W, window set).
GPU_CONFIGS: tuple[tuple[dict[str, int], int], ...] = (
    ({"BLOCK_C": 1, "TILE_H": 32, "TILE_W": 32}, 4),
    ({"BLOCK_C": 2, "TILE_H": 32, "TILE_W": 32}, 4),
    ({"BLOCK_C": 4, "TILE_H": 32, "TILE_W": 32}, 8),
    ({"BLOCK_C": 1, "TILE_H": 32, "TILE_W": 64}, 4),
    ({"BLOCK_C": 1, "TILE_H": 64, "TILE_W": 64}, 8),
)


@triton.jit
def _multiscale_pool_kernel(
    x_ptr,  # (N, C, H, W) contiguous
    C,
    H,
    W,
    out_ptr,  # (N, C * (1 + NUM_WINDOWS), H, W) contiguous
    NUM_WINDOWS: tl.constexpr,
    STEPS: tl.constexpr,
    NUM_STEPS: tl.constexpr,
    STORE_AT: tl.constexpr,
    RADII: tl.constexpr,
    HALO: tl.constexpr,
    IS_AVG: tl.constexpr,
    BLOCK_C: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    # Argument order (inputs, int32 scalars, outputs) is the one TensorRT's AOT plugins launch with.
    OUT_H: tl.constexpr = TILE_H - 2 * HALO
    OUT_W: tl.constexpr = TILE_W - 2 * HALO
    pid_nc = tl.program_id(0)
    pid_t = tl.program_id(1)
    n_cb = (C + BLOCK_C - 1) // BLOCK_C
    n = pid_nc // n_cb
    cb = pid_nc % n_cb
    n_tw = (W + OUT_W - 1) // OUT_W
    th = pid_t // n_tw
    tw = pid_t % n_tw

    ci = tl.arange(0, BLOCK_C)
    i = tl.arange(0, TILE_H)
    j = tl.arange(0, TILE_W)
    rows = th * OUT_H - HALO + i  # image row of each tile row
    cols = tw * OUT_W - HALO + j
    c3 = (cb * BLOCK_C + ci)[:, None, None]
    r3 = rows[None, :, None]
    q3 = cols[None, None, :]
    cmask = c3 < C
    in_img = (r3 >= 0) & (r3 < H) & (q3 >= 0) & (q3 < W)
    i3 = i[None, :, None]
    j3 = j[None, None, :]
    centre = (i3 >= HALO) & (i3 < TILE_H - HALO) & (j3 >= HALO) & (j3 < TILE_W - HALO)
    store_mask = cmask & in_img & centre

    # Offsets inside one image are int32 (the launcher bounds an image's output below 2**31
    # elements); only the batch offset is int64.
    plane = H * W
    block = C * plane  # one channel block of the output
    offs = c3 * plane + r3 * W + q3
    x_base = x_ptr + n.to(tl.int64) * block
    out_base = out_ptr + n.to(tl.int64) * (NUM_WINDOWS + 1) * block

    if IS_AVG:
        t = tl.load(x_base + offs, mask=cmask & in_img, other=0.0).to(tl.float32)
    else:
        t = tl.load(x_base + offs, mask=cmask & in_img, other=float("-inf")).to(tl.float32)
    out_ty = out_ptr.dtype.element_ty
    tl.store(out_base + offs, t.to(out_ty), mask=store_mask)  # channel block 0: the identity

    shape: tl.constexpr = (BLOCK_C, TILE_H, TILE_W)
    if IS_AVG:
        # Inclusive prefix sums along W (Hillis-Steele: log2(TILE_W) gather + add steps).
        cw = t
        for s in tl.static_range(7):
            if (1 << s) < TILE_W:
                g = tl.gather(cw, tl.broadcast_to(tl.maximum(j3 - (1 << s), 0), shape), 2)
                cw = cw + tl.where(j3 >= (1 << s), g, 0.0)
        for k in tl.static_range(NUM_WINDOWS):
            r = (RADII >> (4 * k)) & 15
            if r == 0:  # window 1: the identity, exactly
                tl.store(out_base + (k + 1) * block + offs, t.to(out_ty), mask=store_mask)
            else:
                hi = tl.gather(cw, tl.broadcast_to(tl.minimum(j3 + r, TILE_W - 1), shape), 2)
                lo = tl.gather(cw, tl.broadcast_to(tl.maximum(j3 - r - 1, 0), shape), 2)
                hs = hi - tl.where(j3 - r - 1 >= 0, lo, 0.0)  # box sums along W
                ch = hs
                for s in tl.static_range(7):
                    if (1 << s) < TILE_H:
                        g = tl.gather(ch, tl.broadcast_to(tl.maximum(i3 - (1 << s), 0), shape), 1)
                        ch = ch + tl.where(i3 >= (1 << s), g, 0.0)
                hi = tl.gather(ch, tl.broadcast_to(tl.minimum(i3 + r, TILE_H - 1), shape), 1)
                lo = tl.gather(ch, tl.broadcast_to(tl.maximum(i3 - r - 1, 0), shape), 1)
                box = hi - tl.where(i3 - r - 1 >= 0, lo, 0.0)
                # count_include_pad=False: valid rows x valid columns, in closed form (>= 1 in the image).
                n_r = tl.minimum(r3 + r, H - 1) - tl.maximum(r3 - r, 0) + 1
                n_q = tl.minimum(q3 + r, W - 1) - tl.maximum(q3 - r, 0) + 1
                cnt = tl.maximum(n_r * n_q, 1).to(tl.float32)
                tl.store(out_base + (k + 1) * block + offs, (box / cnt).to(out_ty), mask=store_mask)
    else:
        p = t
        for k in tl.static_range(NUM_WINDOWS):
            if ((STORE_AT >> (4 * k)) & 15) == 0:  # window 1: the identity
                tl.store(out_base + (k + 1) * block + offs, p.to(out_ty), mask=store_mask)
        for s in tl.static_range(NUM_STEPS):
            d = (STEPS >> (4 * s)) & 15
            lo = tl.gather(p, tl.broadcast_to(tl.maximum(j3 - d, 0), shape), 2)
            hi = tl.gather(p, tl.broadcast_to(tl.minimum(j3 + d, TILE_W - 1), shape), 2)
            if s == 0:  # noqa: SIM108 - a constexpr branch, resolved at compile time
                p = tl.maximum(p, tl.maximum(lo, hi))
            else:
                p = tl.maximum(lo, hi)
            lo = tl.gather(p, tl.broadcast_to(tl.maximum(i3 - d, 0), shape), 1)
            hi = tl.gather(p, tl.broadcast_to(tl.minimum(i3 + d, TILE_H - 1), shape), 1)
            if s == 0:  # noqa: SIM108 - a constexpr branch, resolved at compile time
                p = tl.maximum(p, tl.maximum(lo, hi))
            else:
                p = tl.maximum(lo, hi)
            for k in tl.static_range(NUM_WINDOWS):
                if ((STORE_AT >> (4 * k)) & 15) == s + 1:
                    tl.store(out_base + (k + 1) * block + offs, p.to(out_ty), mask=store_mask)


def _interpreting() -> bool:
    # Decided when the kernel was decorated (module import), not by today's environment.
    return not isinstance(_multiscale_pool_kernel, triton.runtime.JITFunction)


_autotuned: Any = None


def _autotuned_kernel() -> Any:
    """The kernel wrapped in ``triton.autotune`` over GPU_CONFIGS, built on first GPU use."""
    global _autotuned
    if _autotuned is None:
        configs = [triton.Config(dict(meta), num_warps=nw) for meta, nw in GPU_CONFIGS]
        _autotuned = triton.autotune(configs=configs, key=["C", "H", "W", "HALO", "NUM_STEPS", "IS_AVG"])(
            _multiscale_pool_kernel
        )
    return _autotuned


def multiscale_pool(x: Tensor, windows: Sequence[int], mode: str, *, config: dict[str, int] | None = None) -> Tensor:
    """Launch the fused multi-scale pooling on a validated contiguous (N, C, H, W) tensor.

    Args:
        x: input, shape (N, C, H, W), contiguous, fp32/fp16/bf16, on a device Triton can run on.
        windows: odd window sizes <= MAX_WINDOW, in output order.
        mode: ``"max"`` or ``"avg"``.
        config: a fixed ``{"BLOCK_C", "TILE_H", "TILE_W"}`` instead of autotuning (tests use it to
            run the GPU tiles in the interpreter).

    Returns:
        Tensor of shape (N, C * (1 + len(windows)), H, W), dtype of ``x``, contiguous.

    Raises:
        ValueError: invalid windows or mode, or an image too large for int32 offsets.
    """
    plan = pool_plan(windows, mode)
    n, c, h, w = x.shape
    nw = len(plan.windows)
    out = torch.empty((n, c * (1 + nw), h, w), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    if (1 + nw) * c * h * w >= 2**31:
        raise ValueError(f"multiscale_pool: one image's output ({(1 + nw) * c * h * w} elements) must stay below 2**31")
    meta = plan.constexprs()
    halo = plan.halo
    smallest = GPU_CONFIGS[0][0]["TILE_H"] - 2 * halo
    if _cdiv(h, smallest) * _cdiv(w, smallest) > 65535:
        raise ValueError(f"multiscale_pool: a {h}x{w} map needs more than 65535 tiles (CUDA's grid-y limit)")
    if config is not None or _interpreting():
        cfg = dict(config) if config is not None else interpreter_config(c, h, w, halo)
        if cfg["TILE_H"] <= 2 * halo or cfg["TILE_W"] <= 2 * halo:
            raise ValueError(f"multiscale_pool: tile {cfg} leaves no outputs with a halo of {halo}")
        grid = pool_grid(n, c, h, w, halo=halo, block_c=cfg["BLOCK_C"], tile_h=cfg["TILE_H"], tile_w=cfg["TILE_W"])
        launchable(_multiscale_pool_kernel)[grid](x, c, h, w, out, **meta, **cfg, num_warps=4)
        return out

    def meta_grid(m: dict[str, Any]) -> tuple[Any, Any]:
        return pool_grid(n, c, h, w, halo=halo, block_c=m["BLOCK_C"], tile_h=m["TILE_H"], tile_w=m["TILE_W"])

    launchable(_autotuned_kernel())[meta_grid](x, c, h, w, out, **meta)
    return out
