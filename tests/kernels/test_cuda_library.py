"""torch.library registration of omsf2::multiscale_pool / omsf2::scale_fuse, and the CUDA module's API, on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from omsf2.kernels import cuda as kcuda
from omsf2.kernels.cuda.library import multiscale_pool_op, scale_fuse_op
from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref


def _fuse_inputs(n: int = 2, c: int = 3, hw: tuple[int, int] = (13, 11), up: tuple[int, int] = (7, 6)):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(n, c, *hw, generator=g),
        torch.rand(n, 1, *hw, generator=g),
        torch.randn(n, c, *up, generator=g),
        torch.rand(n, 1, *up, generator=g),
    )


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("windows", [(5, 9, 13), (13, 5), (1, 3)])
def test_multiscale_pool_opcheck(windows: tuple[int, ...], mode: str) -> None:
    x = torch.randn(2, 3, 13, 11)
    torch.library.opcheck(torch.ops.omsf2.multiscale_pool.default, (x, list(windows), mode))
    torch.testing.assert_close(multiscale_pool_op(x, windows, mode), multiscale_pool_ref(x, windows, mode))


@pytest.mark.parametrize("shapes", [((13, 11), (7, 6)), ((8, 8), (4, 4)), ((5, 9), (5, 9))])
def test_scale_fuse_opcheck(shapes: tuple[tuple[int, int], tuple[int, int]]) -> None:
    args = _fuse_inputs(hw=shapes[0], up=shapes[1])
    torch.library.opcheck(torch.ops.omsf2.scale_fuse.default, args)
    torch.testing.assert_close(scale_fuse_op(*args), scale_fuse_ref(*args))


def test_fake_shapes_and_validation() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 4, 9, 7)
        assert tuple(torch.ops.omsf2.multiscale_pool(x, [5, 9], "avg").shape) == (2, 12, 9, 7)
        lf, a, lu, au = (
            torch.empty(1, 4, 9, 7),
            torch.empty(1, 1, 9, 7),
            torch.empty(1, 4, 5, 4),
            torch.empty(1, 1, 5, 4),
        )
        assert tuple(torch.ops.omsf2.scale_fuse(lf, a, lu, au).shape) == (1, 4, 9, 7)
        with pytest.raises(ValueError, match="odd positive"):
            torch.ops.omsf2.multiscale_pool(x, [4], "max")
        with pytest.raises(ValueError, match="choose one of"):
            torch.ops.omsf2.multiscale_pool(x, [5], "min")


class _Neck(nn.Module):
    def forward(self, x: torch.Tensor, a: torch.Tensor, lu: torch.Tensor, au: torch.Tensor) -> torch.Tensor:
        pooled = multiscale_pool_op(x, (5, 9, 13), "max")
        return scale_fuse_op(pooled, a, lu, au)


def test_export_sees_one_node_per_op() -> None:
    x = torch.randn(1, 2, 13, 11)
    a, lu, au = torch.rand(1, 1, 13, 11), torch.randn(1, 8, 7, 6), torch.rand(1, 1, 7, 6)
    ep = torch.export.export(_Neck(), (x, a, lu, au))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.omsf2.multiscale_pool.default) == 1
    assert targets.count(torch.ops.omsf2.scale_fuse.default) == 1
    # Opaque: no pooling, resize or concat leaks into the graph.
    assert not any("pool" in str(t) and "omsf2" not in str(t) for t in targets)
    torch.testing.assert_close(ep.module()(x, a, lu, au), _Neck()(x, a, lu, au))


def test_compile_aot_eager_matches_reference() -> None:
    x = torch.randn(2, 3, 13, 11)
    fn = torch.compile(lambda t: multiscale_pool_op(t, (5, 9, 13), "avg"), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(x), multiscale_pool_ref(x, (5, 9, 13), "avg"))
    args = _fuse_inputs()
    fuse = torch.compile(scale_fuse_op, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fuse(*args), scale_fuse_ref(*args))


def test_unavailable_reason_on_cpu() -> None:
    assert "cuda" in str(kcuda.cuda_unavailable_reason("cpu")).lower()
    if not torch.cuda.is_available():
        reason = kcuda.cuda_unavailable_reason("cuda")
        assert reason is not None and "\n" not in reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where no CUDA device exists")
def test_load_extension_raises_typed_one_line_error() -> None:
    with pytest.raises(kcuda.CudaExtensionError) as info:
        kcuda.load_extension()
    assert isinstance(info.value, RuntimeError)
    assert "\n" not in str(info.value) and "CUDA" in str(info.value)


def test_python_validation_errors() -> None:
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(TypeError, match="float32"):
        kcuda.multiscale_pool_cuda(x.double())
    with pytest.raises(ValueError, match="CUDA tensors"):
        kcuda.multiscale_pool_cuda(x)
    with pytest.raises(ValueError, match="4-D"):
        kcuda.multiscale_pool_cuda(x[0])
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        kcuda.multiscale_pool_cuda([1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="odd positive"):
        kcuda.check_pool_args((5, 2.0), "max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 1 and"):
        kcuda.check_pool_args(tuple(range(1, 20, 2)), "max")
    with pytest.raises(ValueError, match="choose one of"):
        kcuda.check_pool_args((5,), "sum")
    lf, a, lu, au = _fuse_inputs()
    with pytest.raises(ValueError, match="a must have shape"):
        kcuda.check_scale_fuse_shapes(lf, a[:, :, :5], lu, au)
    with pytest.raises(TypeError, match="one floating dtype"):
        kcuda.check_scale_fuse_shapes(lf, a.half(), lu, au)
