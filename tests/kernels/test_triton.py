"""The Triton kernels against the reference ops; on CPU they run in Triton's interpreter (no skips)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref
from omsf2.kernels.triton import multiscale_pool_triton, scale_fuse_triton, triton_unavailable_reason

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
WINDOW_SETS = [(5, 9, 13), (3,), (5, 9), (3, 7), (1, 5), ()]
ATOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype=dtype, device=DEVICE)


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g).to(dtype=dtype, device=DEVICE)


def _assert_lowp_close(out: torch.Tensor, ref32: torch.Tensor) -> None:
    # STYLE.md: hold the kernel to 2 * |ref_lowp - ref_fp32| + atol, the reference rounded to the dtype.
    assert out.dtype != torch.float32
    ref_lp = ref32.to(out.dtype).float()
    if DEVICE == "cpu" and out.dtype == torch.bfloat16:
        # Triton's interpreter casts fp32 -> bf16 by truncation (GPUs round to nearest even), so the
        # rounded reference is the truncated one there.
        ref_lp = (ref32.contiguous().view(torch.int32) & -65536).view(torch.float32)
    tol = 2 * (ref_lp - ref32).abs() + ATOL[out.dtype]
    err = (out.float() - ref32).abs()
    assert bool((err <= tol).all()), f"max excess {(err - tol).max().item()}"


# --- multiscale_pool -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("windows", WINDOW_SETS)
@pytest.mark.parametrize("shape", [(1, 3, 7, 9), (2, 5, 13, 11), (1, 1, 1, 1)])
def test_multiscale_pool_matches_reference(mode: str, windows: tuple[int, ...], shape: tuple[int, ...]) -> None:
    x = _randn(*shape)
    out = multiscale_pool_triton(x, windows, mode)
    ref = multiscale_pool_ref(x, windows, mode)
    assert out.shape == ref.shape == (shape[0], shape[1] * (1 + len(windows)), *shape[2:])
    assert out.dtype == x.dtype
    if mode == "max":
        torch.testing.assert_close(out, ref, rtol=0, atol=0)  # max selects, it never rounds
    else:
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_multiscale_pool_low_precision(mode: str, dtype: torch.dtype) -> None:
    x = _randn(2, 5, 13, 11, dtype=dtype)
    out = multiscale_pool_triton(x, (5, 9, 13), mode)
    assert out.dtype == dtype
    ref32 = multiscale_pool_ref(x.float(), (5, 9, 13), mode)  # CPU half pooling may be unsupported
    if mode == "max":
        torch.testing.assert_close(out, ref32.to(dtype), rtol=0, atol=0)
    else:
        _assert_lowp_close(out, ref32)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize(
    ("windows", "config"),
    [
        ((5, 9, 13), {"BLOCK_C": 2, "TILE_H": 32, "TILE_W": 32}),  # 20x20 outputs a tile: 3x2 tiles
        ((3, 7), {"BLOCK_C": 4, "TILE_H": 16, "TILE_W": 32}),  # 10x26 outputs a tile, channel tail
    ],
)
def test_multiscale_pool_several_tiles(mode: str, windows: tuple[int, ...], config: dict[str, int]) -> None:
    # The GPU path: tiles whose halos overlap their neighbours', run here with a fixed config.
    from omsf2.kernels.triton import _pool

    x = _randn(2, 3, 45, 40, seed=1)
    out = _pool.multiscale_pool(x, windows, mode, config=config)
    torch.testing.assert_close(out, multiscale_pool_ref(x, windows, mode), rtol=1e-5, atol=1e-5)


def test_multiscale_pool_layouts() -> None:
    base = _randn(2, 6, 9, 7, seed=2)
    strided = base[:, ::2]  # not contiguous: copied
    assert not strided.is_contiguous()
    torch.testing.assert_close(multiscale_pool_triton(strided, (3, 5)), multiscale_pool_ref(strided, (3, 5)))
    cl = base.to(memory_format=torch.channels_last)  # the CPU training layout: copied to NCHW
    out = multiscale_pool_triton(cl, (5,), "avg")
    assert out.is_contiguous()
    torch.testing.assert_close(out, multiscale_pool_ref(base, (5,), "avg"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(0, 3, 5, 5), (2, 0, 5, 5), (1, 2, 0, 4)])
def test_multiscale_pool_empty(shape: tuple[int, ...]) -> None:
    out = multiscale_pool_triton(torch.empty(shape, device=DEVICE), (5, 9))
    assert out.shape == (shape[0], shape[1] * 3, *shape[2:])


@pytest.mark.parametrize(
    ("x", "kwargs", "err", "match"),
    [
        (torch.randn(2, 5, 5), {}, ValueError, r"\(N, C, H, W\)"),
        (torch.ones(1, 1, 5, 5, dtype=torch.int64), {}, TypeError, "float32, float16 or bfloat16"),
        (torch.ones(1, 1, 5, 5, dtype=torch.float64), {}, TypeError, "float32, float16 or bfloat16"),
        (torch.randn(1, 1, 5, 5), {"mode": "min"}, ValueError, "max"),
        (torch.randn(1, 1, 5, 5), {"windows": (4,)}, ValueError, "odd"),
        (torch.randn(1, 1, 5, 5), {"windows": (0,)}, ValueError, "odd"),
        (torch.randn(1, 1, 5, 5), {"windows": (17,)}, ValueError, "up to 15"),
        (torch.randn(1, 1, 5, 5), {"windows": (3,) * 9}, ValueError, "at most 8"),
    ],
)
def test_multiscale_pool_rejects(x: torch.Tensor, kwargs: dict, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        multiscale_pool_triton(x.to(DEVICE), **kwargs)


# --- scale_fuse ------------------------------------------------------------------------------------


def _fuse_inputs(n: int, c: int, hw: tuple[int, int], up: tuple[int, int], dtype: torch.dtype = torch.float32):
    return (
        _randn(n, c, *hw, seed=3, dtype=dtype),
        _rand(n, 1, *hw, seed=4, dtype=dtype),
        _randn(n, c, *up, seed=5, dtype=dtype),
        _rand(n, 1, *up, seed=6, dtype=dtype),
    )


@pytest.mark.parametrize(
    ("n", "c", "hw", "up"),
    [
        (2, 3, (13, 11), (7, 6)),  # odd upsampling
        (1, 5, (25, 13), (13, 7)),
        (2, 3, (8, 8), (8, 8)),  # equal sizes: the identity index
        (1, 3, (16, 8), (8, 4)),  # exactly 2x
        (1, 2, (46, 44), (14, 26)),  # float32 scale rule != integer dst*h//H for some rows/columns
        (1, 3, (5, 7), (9, 3)),  # down in H, up in W
        (1, 1, (1, 1), (1, 1)),
    ],
)
def test_scale_fuse_matches_reference(n: int, c: int, hw: tuple[int, int], up: tuple[int, int]) -> None:
    args = _fuse_inputs(n, c, hw, up)
    out = scale_fuse_triton(*args)
    assert out.shape == (n, c, *hw) and out.dtype == torch.float32
    torch.testing.assert_close(out, scale_fuse_ref(*args))


@pytest.mark.parametrize(("hw", "up"), [((13, 11), (7, 6)), ((25, 13), (13, 7)), ((46, 44), (14, 26))])
def test_scale_fuse_nearest_index_is_pytorchs(hw: tuple[int, int], up: tuple[int, int]) -> None:
    # l = 0 and a = a_up = 1 make the output up(l_up) itself; l_up holds its own flat index, so the
    # output is the source index each pixel picked, compared exactly with F.interpolate's.
    h, w = up
    l_up = torch.arange(h * w, dtype=torch.float32, device=DEVICE).reshape(1, 1, h, w)
    out = scale_fuse_triton(
        torch.zeros(1, 1, *hw, device=DEVICE), torch.ones(1, 1, *hw, device=DEVICE), l_up, torch.ones_like(l_up)
    )
    assert torch.equal(out, F.interpolate(l_up, size=hw, mode="nearest"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_scale_fuse_low_precision(dtype: torch.dtype) -> None:
    args = _fuse_inputs(2, 3, (13, 11), (7, 6), dtype)
    out = scale_fuse_triton(*args)
    assert out.dtype == dtype
    _assert_lowp_close(out, scale_fuse_ref(*(t.float() for t in args)))


def test_scale_fuse_several_blocks() -> None:
    from omsf2.kernels.triton import _fuse

    args = _fuse_inputs(2, 5, (13, 11), (7, 6))
    out = _fuse.scale_fuse(*args, config={"BLOCK_C": 4, "BLOCK_S": 64})  # channel and pixel tails
    torch.testing.assert_close(out, scale_fuse_ref(*args))


def test_scale_fuse_layouts() -> None:
    l, a, l_up, a_up = _fuse_inputs(2, 6, (13, 11), (7, 6))  # noqa: E741
    ref = scale_fuse_ref(l[:, ::2], a, l_up[:, ::2], a_up)
    torch.testing.assert_close(scale_fuse_triton(l[:, ::2], a, l_up[:, ::2], a_up), ref)  # strided: copied
    cl = [t.to(memory_format=torch.channels_last) for t in (l, a, l_up, a_up)]
    out = scale_fuse_triton(*cl)
    assert out.is_contiguous()
    torch.testing.assert_close(out, scale_fuse_ref(l, a, l_up, a_up))


@pytest.mark.parametrize(("n", "c"), [(0, 3), (2, 0)])
def test_scale_fuse_empty(n: int, c: int) -> None:
    out = scale_fuse_triton(*_fuse_inputs(n, c, (5, 5), (3, 3)))
    assert out.shape == (n, c, 5, 5)


def test_scale_fuse_rejects() -> None:
    l, a, l_up, a_up = _fuse_inputs(2, 3, (8, 8), (4, 4))  # noqa: E741
    with pytest.raises(ValueError, match="4-D"):
        scale_fuse_triton(l[0], a, l_up, a_up)
    with pytest.raises(ValueError, match="a must have shape"):
        scale_fuse_triton(l, a.expand(2, 3, 8, 8), l_up, a_up)
    with pytest.raises(ValueError, match="l_up must have shape"):
        scale_fuse_triton(l, a, l_up[:, :2], a_up)
    with pytest.raises(ValueError, match="a_up must have shape"):
        scale_fuse_triton(l, a, l_up, a_up[:, :, :3])
    with pytest.raises(ValueError, match="empty map"):
        scale_fuse_triton(l, a, l_up[:, :, :0], a_up[:, :, :0])
    with pytest.raises(TypeError, match="one floating dtype"):
        scale_fuse_triton(l, a.half(), l_up, a_up)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        scale_fuse_triton(*(t.double() for t in (l, a, l_up, a_up)))
    with pytest.raises(ValueError, match="one device"):
        scale_fuse_triton(l, a, l_up, a_up.to("meta"))


# --- availability ----------------------------------------------------------------------------------


def test_unavailable_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    assert triton_unavailable_reason(DEVICE) is None
    assert "no backend for meta" in (triton_unavailable_reason("meta") or "")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in (triton_unavailable_reason(torch.device("cpu")) or "")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        multiscale_pool_triton(torch.randn(1, 1, 3, 3))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    assert triton_unavailable_reason("cpu") == "triton is not installed (pip install 'omsf2[triton]')"
    with pytest.raises(RuntimeError, match="not installed"):
        scale_fuse_triton(*(torch.ones(1, 1, 2, 2) for _ in range(4)))


def test_package_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, omsf2.kernels.triton, omsf2.kernels; assert 'triton' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- CUDA: the autotuned path on real sizes --------------------------------------------------------


@pytest.mark.needs_cuda
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_multiscale_pool_cuda_autotuned(mode: str, dtype: torch.dtype) -> None:
    x = torch.randn(4, 96, 40, 33, device="cuda", dtype=dtype)
    out = multiscale_pool_triton(x, (5, 9, 13), mode)
    ref32 = multiscale_pool_ref(x.float(), (5, 9, 13), mode)
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref32, rtol=1e-5, atol=1e-5)
    elif mode == "max":
        torch.testing.assert_close(out, ref32.to(dtype), rtol=0, atol=0)
    else:
        _assert_lowp_close(out, ref32)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_scale_fuse_cuda_autotuned(dtype: torch.dtype) -> None:
    args = [t.cuda() for t in _fuse_inputs(4, 96, (46, 44), (23, 22), dtype)]
    out = scale_fuse_triton(*args)
    ref32 = scale_fuse_ref(*(t.float() for t in args))
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref32)
    else:
        _assert_lowp_close(out, ref32)
