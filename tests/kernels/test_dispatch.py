"""The dispatcher's rules: argument > use_backend > OMSF2_KERNELS > default, and clear errors."""

from __future__ import annotations

import pytest
import torch

from omsf2.kernels import (
    Backend,
    MultiscalePool,
    ScaleFuse,
    available_backends,
    multiscale_pool,
    multiscale_pool_ref,
    resolve_backend,
    scale_fuse,
    scale_fuse_ref,
    use_backend,
)
from omsf2.kernels.ops import ENV_VAR


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def _x() -> torch.Tensor:
    return torch.randn(1, 2, 5, 7)


def test_cpu_default_is_the_reference() -> None:
    assert resolve_backend(None, [_x()]) is Backend.REF


def test_cpu_backends_here_include_triton_under_the_interpreter() -> None:
    # tests/conftest.py sets TRITON_INTERPRET=1 on machines without CUDA, so Triton runs here.
    got = available_backends("cpu")
    assert got[-1] is Backend.REF
    if not torch.cuda.is_available():
        assert Backend.TRITON in got and Backend.CUDA not in got


def test_env_var_selects_and_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "triton")
    assert resolve_backend(None, [_x()]) is Backend.TRITON
    monkeypatch.setenv(ENV_VAR, "Ref")
    assert resolve_backend(None, [_x()]) is Backend.REF
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"invalid OMSF2_KERNELS value 'fast'; choose one of: triton, cuda, ref"):
        resolve_backend(None, [_x()])


def test_use_backend_beats_env_and_argument_beats_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "triton")
    with use_backend("ref"):
        assert resolve_backend(None, [_x()]) is Backend.REF
        assert resolve_backend("triton", [_x()]) is Backend.TRITON
        with use_backend(None):
            assert resolve_backend(None, [_x()]) is Backend.TRITON
    assert resolve_backend(None, [_x()]) is Backend.TRITON


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_backend_names_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"'cuda' is unavailable for cpu tensors: .*available here: triton, ref"):
        multiscale_pool(_x(), backend="cuda")


def test_invalid_backend_name() -> None:
    with pytest.raises(ValueError, match="choose one of: triton, cuda, ref"):
        scale_fuse(_x(), _x()[:, :1], _x(), _x()[:, :1], backend="tensorrt")


def test_fused_backends_refuse_autograd_and_default_falls_back() -> None:
    x = _x().requires_grad_()
    with pytest.raises(ValueError, match="forward-only"):
        multiscale_pool(x, backend="triton")
    assert resolve_backend(None, [x]) is Backend.REF
    with torch.no_grad():
        assert resolve_backend("triton", [x]) is Backend.TRITON


def test_tracing_defaults_to_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Backend] = []

    def spy(backend, tensors):  # type: ignore[no-untyped-def]

        b = real(backend, tensors)
        seen.append(b)
        return b

    from omsf2.kernels import ops

    real = ops.resolve_backend
    monkeypatch.setattr(ops, "resolve_backend", spy)
    torch.jit.trace(MultiscalePool((3,)), _x())
    assert seen and all(b is Backend.REF for b in seen)


def test_modules_match_functions() -> None:
    x = _x()
    torch.testing.assert_close(MultiscalePool((3, 5), "avg")(x), multiscale_pool_ref(x, (3, 5), "avg"))
    lo, a, lu, au = torch.randn(2, 3, 5, 5), torch.rand(2, 1, 5, 5), torch.randn(2, 3, 3, 3), torch.rand(2, 1, 3, 3)
    torch.testing.assert_close(ScaleFuse(backend="ref")(lo, a, lu, au), scale_fuse_ref(lo, a, lu, au))
    assert "backend=ref" in repr(ScaleFuse(backend="ref"))
