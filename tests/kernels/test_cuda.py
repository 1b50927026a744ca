"""CUDA kernels against the reference, on a CUDA device (skipped elsewhere by the needs_cuda marker).

Tolerance in the flash-attention style: a low-precision result must be within
2 x |ref_lowp - ref_fp32| + atol of the fp32 reference, i.e. no worse than computing the spec in that dtype.
"""

from __future__ import annotations

import pytest
import torch

from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref

pytestmark = pytest.mark.needs_cuda

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def _assert_within_ref(out: torch.Tensor, ref_lowp: torch.Tensor, ref_fp32: torch.Tensor) -> None:
    assert out.dtype == ref_lowp.dtype and out.shape == ref_fp32.shape
    bound = 2 * (ref_lowp.float() - ref_fp32).abs() + ATOL[out.dtype]
    err = (out.float() - ref_fp32).abs()
    assert bool((err <= bound).all()), f"max excess {(err - bound).max().item():.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("windows", [(5, 9, 13), (13, 9, 5), (3,), (1, 5), (31, 3)])
@pytest.mark.parametrize("shape", [(2, 3, 13, 11), (1, 5, 37, 70), (1, 2, 1, 1), (3, 1, 16, 33)])
def test_multiscale_pool(shape: tuple[int, ...], windows: tuple[int, ...], mode: str, dtype: torch.dtype) -> None:
    from omsf2.kernels.cuda import multiscale_pool_cuda

    x32 = torch.randn(shape, device="cuda")
    x = x32.to(dtype)
    out = multiscale_pool_cuda(x, windows, mode)
    if mode == "max":  # max and the copy are exact in every dtype
        torch.testing.assert_close(out, multiscale_pool_ref(x, windows, mode), rtol=0, atol=0)
    else:
        _assert_within_ref(out, multiscale_pool_ref(x, windows, mode), multiscale_pool_ref(x.float(), windows, mode))


def test_multiscale_pool_large_window_direct_path() -> None:
    # Windows whose tile + halo exceeds the shared-memory budget take the direct kernel.
    from omsf2.kernels.cuda import multiscale_pool_cuda

    x = torch.randn(1, 2, 40, 50, device="cuda")
    for mode in ("max", "avg"):
        torch.testing.assert_close(
            multiscale_pool_cuda(x, (65, 5, 41), mode), multiscale_pool_ref(x, (65, 5, 41), mode), rtol=1e-5, atol=1e-5
        )


def test_multiscale_pool_nan_propagates_like_torch() -> None:
    from omsf2.kernels.cuda import multiscale_pool_cuda

    x = torch.randn(1, 1, 20, 20, device="cuda")
    x[0, 0, 7, 9] = float("nan")
    torch.testing.assert_close(multiscale_pool_cuda(x), multiscale_pool_ref(x), equal_nan=True)


def test_multiscale_pool_noncontiguous_and_empty() -> None:
    from omsf2.kernels.cuda import multiscale_pool_cuda

    x = torch.randn(2, 11, 9, 4, device="cuda").permute(0, 3, 1, 2)  # (2, 4, 11, 9), not contiguous
    torch.testing.assert_close(multiscale_pool_cuda(x, (5, 9), "avg"), multiscale_pool_ref(x, (5, 9), "avg"))
    for shape in [(0, 3, 8, 8), (2, 0, 8, 8), (2, 3, 0, 8)]:
        empty = torch.empty(shape, device="cuda")
        assert multiscale_pool_cuda(empty).shape == multiscale_pool_ref(empty).shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("hw", "up"),
    [
        ((13, 13), (7, 7)),
        ((13, 11), (7, 6)),
        ((64, 64), (32, 32)),
        ((25, 19), (13, 10)),
        ((9, 9), (9, 9)),
        ((5, 7), (8, 9)),
    ],
)
def test_scale_fuse(hw: tuple[int, int], up: tuple[int, int], dtype: torch.dtype) -> None:
    from omsf2.kernels.cuda import scale_fuse_cuda

    args32 = (
        torch.randn(2, 3, *hw, device="cuda"),
        torch.rand(2, 1, *hw, device="cuda"),
        torch.randn(2, 3, *up, device="cuda"),
        torch.rand(2, 1, *up, device="cuda"),
    )
    args = tuple(t.to(dtype) for t in args32)
    out = scale_fuse_cuda(*args)
    _assert_within_ref(out, scale_fuse_ref(*args), scale_fuse_ref(*(t.float() for t in args)))


def test_scale_fuse_nearest_index_is_torchs() -> None:
    # With l = 0 and a = 1 the output is exactly up(a_up) * up(l_up): any index mismatch shows as a wrong value.
    from omsf2.kernels.cuda import scale_fuse_cuda

    for h, w, hu, wu in [(13, 13, 7, 7), (37, 29, 19, 15), (100, 3, 33, 2)]:
        lf, a = torch.zeros(1, 2, h, w, device="cuda"), torch.ones(1, 1, h, w, device="cuda")
        lu = torch.arange(2 * hu * wu, device="cuda", dtype=torch.float32).view(1, 2, hu, wu)
        au = torch.ones(1, 1, hu, wu, device="cuda")
        torch.testing.assert_close(scale_fuse_cuda(lf, a, lu, au), scale_fuse_ref(lf, a, lu, au), rtol=0, atol=0)


def test_scale_fuse_empty() -> None:
    from omsf2.kernels.cuda import scale_fuse_cuda

    lf, a = torch.empty(0, 3, 8, 8, device="cuda"), torch.empty(0, 1, 8, 8, device="cuda")
    lu, au = torch.empty(0, 3, 4, 4, device="cuda"), torch.empty(0, 1, 4, 4, device="cuda")
    assert scale_fuse_cuda(lf, a, lu, au).shape == (0, 3, 8, 8)


def test_ops_on_cuda_and_inductor() -> None:
    from omsf2.kernels.cuda.library import multiscale_pool_op, scale_fuse_op

    x = torch.randn(2, 4, 13, 11, device="cuda", dtype=torch.float16)
    a, lu, au = (
        torch.rand(2, 1, 13, 11, device="cuda", dtype=torch.float16),
        torch.randn(2, 16, 7, 6, device="cuda", dtype=torch.float16),
        torch.rand(2, 1, 7, 6, device="cuda", dtype=torch.float16),
    )

    def neck(x: torch.Tensor) -> torch.Tensor:
        return scale_fuse_op(multiscale_pool_op(x, (5, 9, 13), "max"), a, lu, au)

    eager = neck(x)
    compiled = torch.compile(neck, fullgraph=True)(x)  # inductor: the ops stay opaque extern kernels
    torch.testing.assert_close(compiled, eager)
    ref = scale_fuse_ref(multiscale_pool_ref(x), a, lu, au)
    _assert_within_ref(eager, ref, scale_fuse_ref(multiscale_pool_ref(x.float()), a.float(), lu.float(), au.float()))
