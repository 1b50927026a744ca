"""Every Triton kernel compiles ahead of time for Orin (sm_87) and H100 (sm_90), with no GPU.

This is the CI guard that a kernel still compiles for the deployment targets: on CPU the other
kernel tests only run Triton's interpreter, which never lowers to PTX.
"""

from __future__ import annotations

import pytest
import torch

from omsf2.kernels.triton import KERNELS, SUPPORTED_DTYPES, multiscale_pool_triton, scale_fuse_triton

pytest.importorskip("triton", reason="the AOT compiler is Triton's")  # the [triton] extra; CI has it

from omsf2.kernels.triton import _pool, aot


@pytest.fixture(scope="module", autouse=True)
def _interpreted_first() -> None:
    # Run each kernel once first (in the interpreter on CPU): compiling after interpreted runs in
    # one process is what a pytest session does, and Triton's interpreter patches its language.
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    multiscale_pool_triton(torch.randn(1, 2, 5, 5, device=dev), (5, 9, 13), "avg")
    multiscale_pool_triton(torch.randn(1, 2, 5, 5, device=dev), (5, 9, 13), "max")
    scale_fuse_triton(*(torch.rand(1, c, s, s, device=dev) for c, s in ((2, 5), (1, 5), (2, 3), (1, 3))))


@pytest.mark.parametrize("arch", aot.ARCHS)
@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_compiles_ahead_of_time(name: str, dtype: torch.dtype, arch: int) -> None:
    ck = aot.compile_kernel(name, arch, dtype)
    assert len(ck.cubin) > 0
    assert f".target sm_{arch}" in ck.ptx
    assert f".entry {ck.symbol}(" in ck.ptx
    assert ck.block_x == 32 * KERNELS[name].num_warps
    # Scalars are i32 and the pointers carry the dtype: the argument list a plugin launches with.
    sig = aot.signature(name, dtype)
    spec = KERNELS[name]
    assert [k for k, v in sig.items() if v != "constexpr"] == [
        *spec.tensor_args[:-1],
        *spec.int_args,
        spec.tensor_args[-1],
    ]


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_default_constexprs_are_the_default_window_plan(mode: str) -> None:
    defaults = dict(KERNELS[f"multiscale_pool_{mode}"].constexprs)
    assert {k: defaults[k] for k in _pool.pool_plan((5, 9, 13), mode).constexprs()} == _pool.pool_plan(
        (5, 9, 13), mode
    ).constexprs()


def test_compiles_other_window_sets_and_tiles() -> None:
    plan = _pool.pool_plan((3, 7, 15), "max")
    ck = aot.compile_kernel("multiscale_pool_max", 90, torch.float16, constexprs={**plan.constexprs(), "TILE_W": 64})
    assert ck.constexprs["HALO"] == 7 and ck.constexprs["TILE_W"] == 64 and ck.cubin


def test_rejects_unknown() -> None:
    with pytest.raises(KeyError, match="unknown Triton kernel"):
        aot.compile_kernel("nope", 90, torch.float32)
    with pytest.raises(KeyError, match="no constexpr"):
        aot.compile_kernel("scale_fuse", 90, torch.float32, constexprs={"BLOCK_X": 1})
    with pytest.raises(TypeError, match="float32"):
        aot.compile_kernel("scale_fuse", 90, torch.float64)
