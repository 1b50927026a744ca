"""The Triton kernels as ``torch.library`` triton_ops: registered once, equal to the reference, compiled into graphs."""

from __future__ import annotations

import pytest
import torch

from omsf2.kernels import multiscale_pool
from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref
from omsf2.kernels.triton import triton_ops, triton_unavailable_reason


def _skip_without_triton(device: str) -> None:
    reason = triton_unavailable_reason(device)
    if reason is not None:
        pytest.skip(reason)


def _schemas(name: str) -> list[object]:
    return list(torch._C._jit_get_schemas_for_operator(name))


def test_each_op_is_registered_once_under_one_namespace() -> None:
    pytest.importorskip("onnxscript")
    from omsf2.export.custom_ops import translation_table

    assert triton_ops() is triton_ops()
    table = translation_table()
    assert {str(k) for k in table} == {"omsf2.multiscale_pool.default", "omsf2.scale_fuse.default"}
    for op in ("multiscale_pool", "scale_fuse"):
        assert len(_schemas(f"omsf2::{op}")) == 1 and len(_schemas(f"omsf2::{op}_triton")) == 1
        assert _schemas(f"omsf2_export::{op}") == []


def test_triton_ops_match_the_reference(device: str) -> None:
    _skip_without_triton(device)
    pool, fuse = triton_ops()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 11, 13, generator=g).to(device)
    torch.testing.assert_close(pool(x, [5, 9], "max"), multiscale_pool_ref(x, (5, 9), "max"))
    lv, a = torch.randn(2, 3, 10, 12, generator=g).to(device), torch.rand(2, 1, 10, 12, generator=g).to(device)
    lu, au = torch.randn(2, 3, 5, 6, generator=g).to(device), torch.rand(2, 1, 5, 6, generator=g).to(device)
    torch.testing.assert_close(fuse(lv, a, lu, au), scale_fuse_ref(lv, a, lu, au))


@pytest.mark.needs_cuda
def test_compile_traces_into_the_triton_kernels() -> None:
    from torch._inductor.utils import run_and_get_code

    _skip_without_triton("cuda")
    pool, _ = triton_ops()
    x = torch.randn(2, 16, 28, 28, device="cuda")
    fn = torch.compile(lambda t: pool(t, [5, 9, 13], "max") * 2, fullgraph=True)
    out, code = run_and_get_code(fn, x)
    torch.testing.assert_close(out, multiscale_pool_ref(x, (5, 9, 13), "max") * 2)
    assert "_multiscale_pool_kernel" in "\n".join(code)  # the user kernel sits in the compiled graph
    via_dispatch = torch.compile(lambda t: multiscale_pool(t, backend="triton"))
    torch.testing.assert_close(via_dispatch(x), multiscale_pool_ref(x, (5, 9, 13), "max"))
