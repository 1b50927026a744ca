"""The reference ops against naive loops: the spec the fused kernels will be held to."""

from __future__ import annotations

import pytest
import torch

from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref


def _naive_pool(x: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    r = k // 2
    for i in range(h):
        for j in range(w):
            win = x[:, :, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1]
            out[:, :, i, j] = win.amax(dim=(2, 3)) if mode == "max" else win.mean(dim=(2, 3))
    return out


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("shape", [(1, 3, 7, 5), (2, 5, 13, 11), (1, 1, 1, 1)])
def test_multiscale_pool_matches_naive(mode: str, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    out = multiscale_pool_ref(x, (3, 5, 9), mode)
    assert out.shape == (shape[0], shape[1] * 4, shape[2], shape[3])
    torch.testing.assert_close(out[:, : shape[1]], x)
    for i, k in enumerate((3, 5, 9), start=1):
        torch.testing.assert_close(out[:, i * shape[1] : (i + 1) * shape[1]], _naive_pool(x, k, mode))


def test_multiscale_pool_default_windows() -> None:
    x = torch.randn(2, 4, 9, 9)
    assert multiscale_pool_ref(x).shape == (2, 16, 9, 9)


@pytest.mark.parametrize(
    ("kwargs", "err"),
    [
        ({"windows": (4,)}, ValueError),
        ({"windows": (0,)}, ValueError),
        ({"mode": "min"}, ValueError),
    ],
)
def test_multiscale_pool_rejects_bad_arguments(kwargs: dict, err: type) -> None:
    with pytest.raises(err):
        multiscale_pool_ref(torch.randn(1, 2, 5, 5), **kwargs)


def test_multiscale_pool_rejects_bad_tensors() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        multiscale_pool_ref(torch.randn(2, 5, 5))
    with pytest.raises(TypeError, match="floating"):
        multiscale_pool_ref(torch.ones(1, 1, 5, 5, dtype=torch.int64))


@pytest.mark.parametrize(("hw", "up_hw"), [((8, 8), (4, 4)), ((7, 9), (4, 5)), ((5, 5), (5, 5)), ((13, 6), (3, 2))])
def test_scale_fuse_matches_index_rule(hw: tuple[int, int], up_hw: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(1)
    n, c = 2, 3
    l = torch.randn(n, c, *hw, generator=g)  # noqa: E741
    a = torch.rand(n, 1, *hw, generator=g)
    l_up = torch.randn(n, c, *up_hw, generator=g)
    a_up = torch.rand(n, 1, *up_hw, generator=g)
    out = scale_fuse_ref(l, a, l_up, a_up)
    expect = torch.empty_like(l)
    H, W = hw
    h, w = up_hw
    for i in range(H):
        for j in range(W):
            si, sj = (i * h) // H, (j * w) // W  # nearest: floor(dst * in / out)
            expect[:, :, i, j] = (1 + a[:, :, i, j]) * l[:, :, i, j] + a[:, :, i, j] * a_up[:, :, si, sj] * l_up[
                :, :, si, sj
            ]
    torch.testing.assert_close(out, expect)


def test_scale_fuse_rejects_mismatched_shapes() -> None:
    l = torch.randn(1, 3, 8, 8)  # noqa: E741
    with pytest.raises(ValueError, match="a must have shape"):
        scale_fuse_ref(l, torch.rand(1, 2, 8, 8), torch.randn(1, 3, 4, 4), torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="l_up"):
        scale_fuse_ref(l, torch.rand(1, 1, 8, 8), torch.randn(1, 4, 4, 4), torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="a_up"):
        scale_fuse_ref(l, torch.rand(1, 1, 8, 8), torch.randn(1, 3, 4, 4), torch.rand(1, 1, 3, 4))
    with pytest.raises(TypeError, match="dtype"):
        scale_fuse_ref(l, torch.rand(1, 1, 8, 8).double(), torch.randn(1, 3, 4, 4), torch.rand(1, 1, 4, 4))


@pytest.mark.parametrize("windows", [(5, 9, 13), (13, 5, 9), (3, 7), (1, 5), (9, 9, 3), (15,)])
def test_max_cascade_equals_direct_pooling(windows: tuple[int, ...]) -> None:
    x = torch.randn(2, 3, 11, 7)
    direct = torch.cat([x, *(torch.nn.functional.max_pool2d(x, k, 1, k // 2) for k in windows)], dim=1)
    assert torch.equal(multiscale_pool_ref(x, windows, "max"), direct)
