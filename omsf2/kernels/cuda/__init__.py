"""CUDA backend of the fused neck ops: a lazily built torch extension over plain CUDA C++ kernels.

The kernels in ``csrc/*.cu`` know nothing of torch or TensorRT; ``csrc/torch_binding.cpp`` wraps them for
PyTorch and ``plugin/omsf2_plugins.cpp`` for TensorRT, so both runtimes execute the same code.

Importing this module is cheap and never compiles anything: the extension is built on the first call that
needs it (:func:`load_extension`, memoized per process, cached on disk per torch/CUDA version). The trade-off
is a one-off build of tens of seconds on first use instead of a platform-specific wheel.
:func:`cuda_unavailable_reason` answers "can this backend run here?" without building, for the dispatcher.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from omsf2.kernels.reference import check_scale_fuse_args
from omsf2.op_contract import pool_mode_code

__all__ = [
    "SUPPORTED_DTYPES",
    "CudaExtensionError",
    "cuda_unavailable_reason",
    "load_extension",
    "multiscale_pool_cuda",
    "scale_fuse_cuda",
    "source_files",
]

_log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
_CSRC = _HERE / "csrc"
_EXT_NAME = "omsf2_cuda_ext"

#: Storage dtypes the kernels are instantiated for (avg pooling and scale_fuse compute in fp32).
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Most windows per call: the kernel keeps one shared-memory row buffer per window (kMaxWindows in the .cuh).
MAX_WINDOWS = 8


class CudaExtensionError(RuntimeError):
    """The CUDA extension cannot be built or loaded here (no CUDA device, no toolchain, or a failed build)."""


def source_files() -> list[Path]:
    """Every C++/CUDA source of the extension and plugin kernels, for the build, the tests and CMake.

    Returns:
        Paths of the ``.cuh`` header, the ``.cu`` kernel files and the ``torch_binding.cpp`` glue, sorted.
    """
    return sorted(p for p in _CSRC.iterdir() if p.suffix in {".cu", ".cuh", ".cpp"})


def _cuda_home() -> str | None:
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME or os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return home
    nvcc = shutil.which("nvcc")
    return str(Path(nvcc).resolve().parent.parent) if nvcc else None


def cuda_unavailable_reason(device: torch.device | str | None = None) -> str | None:
    """Say why the CUDA backend cannot run for tensors on ``device``, without building anything.

    Args:
        device: where the op's tensors live; ``None`` asks about the default CUDA device.

    Returns:
        ``None`` when torch sees a CUDA device, ``device`` is a CUDA device and an nvcc toolchain is found
        (``torch.utils.cpp_extension.CUDA_HOME``, ``CUDA_HOME``/``CUDA_PATH`` or ``nvcc`` on PATH);
        otherwise a one-line reason.
    """
    dev = torch.device(device) if device is not None else torch.device("cuda")
    if dev.type != "cuda":
        return f"tensors are on {dev.type!r}, the CUDA backend needs CUDA tensors"
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False: no CUDA device or driver on this machine"
    if _cuda_home() is None:
        return "no CUDA toolchain: set CUDA_HOME or put nvcc on PATH to build the omsf2 CUDA extension"
    return None


def _arch_flags() -> list[str]:
    # Build for the devices present (an extension is per machine); TORCH_CUDA_ARCH_LIST, if set, wins.
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return []
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return [f"-gencode=arch=compute_{ma}{mi},code=sm_{ma}{mi}" for ma, mi in caps]


def _build_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "omsf2"
    # One directory per torch/CUDA pair: an extension built against another ABI must never be loaded.
    path = base / "torch_extensions" / f"{torch.__version__}-cu{torch.version.cuda}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def load_extension() -> ModuleType:
    """Build (first call only) and import the torch extension; memoized for the process.

    Returns:
        The extension module with ``multiscale_pool(x, windows, mode)`` and ``scale_fuse(l, a, l_up, a_up)``.

    Raises:
        CudaExtensionError: no CUDA device, no CUDA toolchain, or the build failed (one-line message; the
            compiler output is logged at ERROR level and chained as the cause).
    """
    reason = cuda_unavailable_reason("cuda")
    if reason is not None:
        raise CudaExtensionError(f"cannot build the omsf2 CUDA extension: {reason}")
    from torch.utils import cpp_extension

    sources = [str(p) for p in source_files() if p.suffix in {".cu", ".cpp"}]
    try:
        return cpp_extension.load(
            name=_EXT_NAME,
            sources=sources,
            extra_include_paths=[str(_CSRC)],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", "-lineinfo", *_arch_flags()],
            build_directory=str(_build_dir()),
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as exc:
        _log.error("omsf2 CUDA extension build failed:\n%s", exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CudaExtensionError(f"building the omsf2 CUDA extension failed: {first}") from exc


def _check_tensor(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; the CUDA kernels support {', '.join(map(str, SUPPORTED_DTYPES))}")
    if t.device.type != "cuda":
        raise ValueError(f"{name} is on {t.device}; the CUDA backend needs CUDA tensors")
    return t


def check_pool_args(windows: Sequence[int], mode: str) -> tuple[tuple[int, ...], int]:
    """Validate pooling arguments once for the extension, the torch.library op and its fake.

    Args:
        windows: odd positive window sizes, in output order (1 to ``MAX_WINDOWS`` of them).
        mode: ``"max"`` or ``"avg"``.

    Returns:
        The windows as a tuple of ints and the kernel's mode code (0 = max, 1 = avg).

    Raises:
        ValueError: bad windows or mode, naming what is valid.
    """
    if isinstance(windows, int | str) or not isinstance(windows, Sequence):
        raise ValueError(f"windows must be a sequence of odd positive ints, got {windows!r}")
    try:
        # operator.index accepts int-likes (numpy ints) and rejects floats; bools are not windows.
        ks = tuple(operator.index(k) for k in windows if not isinstance(k, bool))
    except TypeError:
        ks = ()
    if len(ks) != len(windows) or any(k < 1 or k % 2 == 0 for k in ks):
        raise ValueError(f"pooling windows must be odd positive integers, got {tuple(windows)!r}")
    if not 1 <= len(ks) <= MAX_WINDOWS:
        raise ValueError(f"between 1 and {MAX_WINDOWS} pooling windows are supported, got {len(ks)}")
    return ks, pool_mode_code(mode)  # the kernel's PoolMode enum follows the contract's table


def multiscale_pool_cuda(x: Tensor, windows: Sequence[int] = (5, 9, 13), mode: str = "max") -> Tensor:
    """Fused multi-scale pooling on CUDA: ``x`` concatenated with its stride-1, same-size poolings.

    Same contract as :func:`omsf2.kernels.reference.multiscale_pool_ref`, in one kernel that reads ``x``
    once. Non-contiguous inputs are made contiguous first.

    Args:
        x: input features, shape (N, C, H, W), float32/float16/bfloat16, on a CUDA device.
        windows: odd window sizes, in output order (at most ``MAX_WINDOWS``).
        mode: ``"max"`` (padding ignored) or ``"avg"`` (``count_include_pad=False``, fp32 accumulation).

    Returns:
        Tensor of shape (N, C * (1 + len(windows)), H, W) and ``x``'s dtype:
        ``[x, pool_k1(x), pool_k2(x), ...]``.

    Raises:
        TypeError: ``x`` is not a tensor or has an unsupported dtype.
        ValueError: bad shape, device, windows or mode.
        CudaExtensionError: the extension cannot be built here.
    """
    _check_tensor("x", x)
    ks, code = check_pool_args(windows, mode)
    return load_extension().multiscale_pool(x.contiguous(), list(ks), code)


def scale_fuse_cuda(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> Tensor:  # noqa: E741
    """Fused top-down scale fusion on CUDA: ``(1 + a) * l + a * up(a_up) * up(l_up)``, one pass.

    Same contract as :func:`omsf2.kernels.reference.scale_fuse_ref`; ``up`` is nearest upsampling to
    (H, W) with PyTorch's index rule, odd sizes included. Computed in fp32, rounded once.

    Args:
        l: this level's features, shape (N, C, H, W).
        a: this level's attention map, shape (N, 1, H, W).
        l_up: the coarser level's features, shape (N, C, h, w).
        a_up: the coarser level's attention map, shape (N, 1, h, w).

    Returns:
        Tensor of shape (N, C, H, W), same dtype as the inputs.

    Raises:
        TypeError: a non-tensor, an unsupported dtype or mixed dtypes.
        ValueError: bad shapes or devices.
        CudaExtensionError: the extension cannot be built here.
    """
    for name, t in (("l", l), ("a", a), ("l_up", l_up), ("a_up", a_up)):
        _check_tensor(name, t)
    check_scale_fuse_shapes(l, a, l_up, a_up)
    return load_extension().scale_fuse(l.contiguous(), a.contiguous(), l_up.contiguous(), a_up.contiguous())


def check_scale_fuse_shapes(l: Tensor, a: Tensor, l_up: Tensor, a_up: Tensor) -> None:  # noqa: E741
    """Validate scale_fuse shapes, dtypes and devices (shared by the extension path and the op's fake).

    Args:
        l: (N, C, H, W).
        a: (N, 1, H, W).
        l_up: (N, C, h, w).
        a_up: (N, 1, h, w).

    Raises:
        TypeError: the four dtypes differ or are not floating point.
        ValueError: shapes or devices disagree, or the coarse level is empty while the output is not.
    """
    check_scale_fuse_args(l, a, l_up, a_up)
