"""The public fused ops and the one place that decides which implementation runs.

``multiscale_pool`` and ``scale_fuse`` each have three implementations: the pure-torch reference
(``reference.py``, the specification), a Triton kernel (``triton/``) and a CUDA C++ kernel
(``cuda/``, the same code as the TensorRT plugin). The model calls the functions here and never
names an implementation, so a backend can change without touching model code.

Choice, first match wins:

1. the ``backend=`` argument;
2. an enclosing :func:`use_backend` block (export forces ``"ref"`` this way, so an ONNX graph
   holds standard ops whatever the environment says);
3. the ``OMSF2_KERNELS`` environment variable (``ref``, ``triton`` or ``cuda``);
4. the default: the reference on CPU; on CUDA the first usable of Triton, CUDA, reference.

The fused kernels are forward-only: they have no backward. So when autograd would record the op
(grad mode on and an input requires grad) the default is the reference, and an explicit fused
backend is an error rather than a silently wrong gradient. Under ``torch.jit`` tracing, ONNX
export and ``torch.compile`` the default is also the reference; the compiled path can opt into
the registered custom op (one graph node) with ``backend="cuda"``.

An explicit or environment-chosen backend that cannot run for the tensor's device raises a
``ValueError`` naming the backends that can.

Export with ``--plugins`` needs the ops to trace to custom ONNX nodes instead of being computed:
:func:`use_implementation` substitutes both functions for the enclosed block, ahead of every rule
above, without touching model code.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from omsf2.config import KernelBackend
from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref

ENV_VAR = "OMSF2_KERNELS"


Backend = KernelBackend  # kernel implementations, default preference first (defined with the other choices)


_CHOICES = ", ".join(b.value for b in Backend)
_forced: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("omsf2_kernel_backend", default=None)
_Impl = tuple[Callable[..., Tensor], Callable[..., Tensor]]
_override: contextvars.ContextVar[_Impl | None] = contextvars.ContextVar("omsf2_kernel_impl", default=None)


def parse_backend(value: str | Backend, what: str = "kernel backend") -> Backend:
    """``"triton"`` -> ``Backend.TRITON``; anything else is a ``ValueError`` naming the choices."""
    if isinstance(value, Backend):
        return value
    try:
        return Backend(str(value).strip().lower())
    except ValueError:
        raise ValueError(f"invalid {what} {value!r}; choose one of: {_CHOICES}") from None


def env_backend() -> Backend | None:
    """The backend ``OMSF2_KERNELS`` names, or None when it is unset or empty.

    Raises:
        ValueError: the variable names no backend (naming the choices).
    """
    env = os.environ.get(ENV_VAR, "").strip()
    return parse_backend(env, f"{ENV_VAR} value") if env else None


def unavailable_reason(backend: str | Backend, device: torch.device | str) -> str | None:
    """Why ``backend`` cannot run on tensors of ``device``, or None when it can.

    Cheap: it imports nothing heavy and builds nothing (the CUDA extension is built on first use).
    """
    b = parse_backend(backend)
    if b is Backend.REF:
        return None
    if b is Backend.TRITON:
        from omsf2.kernels.triton import triton_unavailable_reason

        return triton_unavailable_reason(device)
    from omsf2.kernels.cuda import cuda_unavailable_reason

    return cuda_unavailable_reason(device)


def available_backends(device: torch.device | str) -> list[Backend]:
    """Backends that can run on tensors of ``device``, default preference first."""
    return [b for b in Backend if unavailable_reason(b, device) is None]


@contextlib.contextmanager
def use_backend(backend: str | Backend | None) -> Iterator[None]:
    """Run the enclosed code with ``backend`` as the default (``None`` restores automatic choice).

    Example: ``with use_backend("ref"): torch.onnx.export(model, ...)``. Thread- and
    task-local (a ``ContextVar``); it beats ``OMSF2_KERNELS`` but not an explicit ``backend=``.
    """
    token = _forced.set(None if backend is None else parse_backend(backend))
    try:
        yield
    finally:
        _forced.reset(token)


@contextlib.contextmanager
def use_implementation(multiscale_pool: Callable[..., Tensor], scale_fuse: Callable[..., Tensor]) -> Iterator[None]:
    """Within the block, :func:`multiscale_pool` and :func:`scale_fuse` call these instead.

    They receive the same arguments (``backend`` excluded). Export uses this to make the ops
    trace to the ``omsf2`` custom ONNX nodes (the TensorRT plugins' contract).
    """
    token = _override.set((multiscale_pool, scale_fuse))
    try:
        yield
    finally:
        _override.reset(token)


def _tracing() -> bool:
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )


def _needs_grad(tensors: Sequence[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def resolve_backend(backend: str | Backend | None, tensors: Sequence[Tensor]) -> Backend:
    """The backend that runs an op on ``tensors`` (see the module docstring for the rules).

    Raises:
        ValueError: the requested backend cannot run here (naming those that can), or a fused
            backend was requested where autograd needs a backward.
    """
    device = tensors[0].device
    requested = backend if backend is not None else _forced.get()
    source = "backend"
    if requested is None and (env := env_backend()) is not None:
        requested, source = env, f"{ENV_VAR} value"
    if requested is None:
        if device.type != "cuda" or _needs_grad(tensors) or _tracing():
            return Backend.REF
        return next(b for b in Backend if unavailable_reason(b, device) is None)
    chosen = parse_backend(requested, "kernel backend" if source == "backend" else source)
    if chosen is not Backend.REF:
        if (reason := unavailable_reason(chosen, device)) is not None:
            names = ", ".join(b.value for b in available_backends(device))
            raise ValueError(
                f"kernel backend {chosen.value!r} is unavailable for {device.type} tensors: {reason} "
                f"(available here: {names})"
            )
        if _needs_grad(tensors):
            raise ValueError(
                f"kernel backend {chosen.value!r} is forward-only and an input requires grad; use backend 'ref' "
                "for training or run under torch.no_grad()"
            )
    return chosen


def multiscale_pool(
    x: Tensor, windows: Sequence[int] = (5, 9, 13), mode: str = "max", *, backend: str | Backend | None = None
) -> Tensor:
    """Dense multi-scale pooling: ``x`` and its stride-1, same-size poolings, concatenated.

    Args:
        x: features, shape (N, C, H, W), floating point.
        windows: odd window sizes, in output order.
        mode: ``"max"``, or ``"avg"`` over valid elements only (``count_include_pad=False``).
        backend: ``"ref"``, ``"triton"``, ``"cuda"`` or None (automatic, see module docstring).

    Returns:
        Tensor of shape (N, C * (1 + len(windows)), H, W): ``[x, pool_k1(x), pool_k2(x), ...]``.
    """
    if (impl := _override.get()) is not None:
        return impl[0](x, windows, mode)
    b = resolve_backend(backend, (x,))
    if b is Backend.TRITON:
        from omsf2.kernels.triton import multiscale_pool_triton

        return multiscale_pool_triton(x, windows, mode)
    if b is Backend.CUDA:
        from omsf2.kernels.cuda.library import multiscale_pool_op

        return multiscale_pool_op(x, windows, mode)
    return multiscale_pool_ref(x, windows, mode)


def scale_fuse(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor, *, backend: str | Backend | None = None) -> Tensor:  # noqa: E741
    """Scale enhancement plus top-down scale selection: ``(1 + a) * l + a * up(a_up) * up(l_up)``.

    Args:
        l: this level's features, shape (N, C, H, W).
        a: this level's attention map, shape (N, 1, H, W).
        l_up: the coarser level's features, shape (N, C, h, w).
        a_up: the coarser level's attention map, shape (N, 1, h, w).
        backend: ``"ref"``, ``"triton"``, ``"cuda"`` or None (automatic, see module docstring).

    Returns:
        Tensor of shape (N, C, H, W); ``up`` is PyTorch's nearest rule ``src = floor(dst * h / H)``.
    """
    if (impl := _override.get()) is not None:
        return impl[1](l, a, l_up, a_up)
    b = resolve_backend(backend, (l, a, l_up, a_up))
    if b is Backend.TRITON:
        from omsf2.kernels.triton import scale_fuse_triton

        return scale_fuse_triton(l, a, l_up, a_up)
    if b is Backend.CUDA:
        from omsf2.kernels.cuda.library import scale_fuse_op

        return scale_fuse_op(l, a, l_up, a_up)
    return scale_fuse_ref(l, a, l_up, a_up)


class MultiscalePool(nn.Module):
    """Module form of :func:`multiscale_pool` (no parameters).

    (N, C, H, W) -> (N, C * (1 + len(windows)), H, W).
    """

    def __init__(
        self, windows: Sequence[int] = (5, 9, 13), mode: str = "max", *, backend: str | Backend | None = None
    ) -> None:
        super().__init__()
        self.windows = tuple(int(w) for w in windows)
        self.mode = mode
        self.backend = None if backend is None else parse_backend(backend)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C * (1 + len(windows)), H, W)."""
        return multiscale_pool(x, self.windows, self.mode, backend=self.backend)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"windows={self.windows}, mode={self.mode!r}, backend={self.backend and self.backend.value}"


class ScaleFuse(nn.Module):
    """Module form of :func:`scale_fuse` (no parameters): (l, a, l_up, a_up) -> (N, C, H, W)."""

    def __init__(self, *, backend: str | Backend | None = None) -> None:
        super().__init__()
        self.backend = None if backend is None else parse_backend(backend)

    def forward(self, l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> Tensor:  # noqa: E741
        """Fuse: l (N, C, H, W), a (N, 1, H, W), l_up (N, C, h, w), a_up (N, 1, h, w) -> (N, C, H, W)."""
        return scale_fuse(l, a, l_up, a_up, backend=self.backend)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"backend={self.backend and self.backend.value}"
