"""TensorRT (>= 10.6) Python plugins whose kernels are the AOT-compiled Triton kernels.

``register_trt_plugins()`` registers ``omsf2::MultiscalePool`` and ``omsf2::ScaleFuse`` (version
"1") with TensorRT's quickly deployable plugin API (``tensorrt.plugin``): a shape/type descriptor,
an autotune declaration whose tactics are the GPU tile configs, and an ``aot_impl`` that returns
the kernel's PTX, launch grid and int32 shape arguments as symbolic expressions. TensorRT embeds
them in the engine, so the engine runs without Python or Triton. The ops, attributes and inputs
are the ones of the C++ IPluginV3 plugins, so an ONNX graph with these custom nodes builds with
either; load only one of the two for a given build, as both register the same name and version.

* MultiscalePool: input ``x`` (N, C, H, W); attributes ``windows`` (int32 array) and ``mode``
  (int32: 0 = max, 1 = avg; declared as a one-element int32 array, see ``pool_mode``);
  output (N, C * (1 + len(windows)), H, W).
* ScaleFuse: inputs ``l, a, l_up, a_up``; no attributes; output like ``l``.

All of the Python that does not need TensorRT (constexprs, grids, compilation) lives in plain
functions (``pool_kernel``, ``pool_launch_grid``, ``fuse_kernel``, ``fuse_launch_grid``) that the
tests run without TensorRT; ``tensorrt`` is imported only inside ``register_trt_plugins``.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from omsf2 import op_contract
from omsf2.kernels.triton import aot

NAMESPACE = op_contract.DOMAIN
POOL_OP = f"{NAMESPACE}::{op_contract.MULTISCALE_POOL}"
FUSE_OP = f"{NAMESPACE}::{op_contract.SCALE_FUSE}"
PLUGIN_VERSION = str(op_contract.VERSION)  # the version tensorrt.plugin gives every QDP; the C++ plugins use it too
_TYPES = "FP32|FP16|BF16"


def _pool_tactics() -> dict[int, tuple[dict[str, int], int]]:
    from omsf2.kernels.triton import _pool

    # TensorRT tactics are positive ints; tactic i is the i-th GPU autotune config.
    return {i + 1: cfg for i, cfg in enumerate(_pool.GPU_CONFIGS)}


def _fuse_tactics() -> dict[int, tuple[dict[str, int], int]]:
    from omsf2.kernels.triton import _fuse

    return {i + 1: cfg for i, cfg in enumerate(_fuse.GPU_CONFIGS)}


def _tactic(tactics: dict[int, tuple[dict[str, int], int]], tactic: int) -> tuple[dict[str, int], int]:
    # Tactic 0 is TensorRT's "default" when it has not chosen one: the first config.
    if tactic == 0:
        return tactics[1]
    if tactic not in tactics:
        raise ValueError(f"unknown tactic {tactic}; valid: 0 (default) or {sorted(tactics)}")
    return tactics[tactic]


def pool_mode(mode: Any) -> int:
    """The int32 ``mode`` attribute as an int, from an int or a one-element array.

    TensorRT serializes a Python ``int`` attribute as INT64, so the plugin declares ``mode`` as a
    one-element int32 array: the same INT32 field that the ONNX parser and the C++ plugin use.

    Raises:
        ValueError: anything but 0 (max) or 1 (avg).
    """
    flat = np.asarray(mode).reshape(-1)
    if flat.size != 1 or not 0 <= int(flat[0]) < len(op_contract.POOL_MODES):
        raise ValueError(f"MultiscalePool mode must be 0 (max) or 1 (avg), got {mode!r}")
    return int(flat[0])


def pool_kernel(
    windows: Sequence[int], mode: int, dtype: torch.dtype, arch: int, tactic: int = 0
) -> tuple[aot.CompiledKernel, dict[str, int]]:
    """Compile the MultiscalePool kernel for one attribute set, dtype, architecture and tactic.

    Args:
        windows: the ``windows`` attribute (odd, <= 15).
        mode: the ``mode`` attribute (0 = max, 1 = avg).
        dtype: the tensor dtype.
        arch: compute capability as an int (87, 90).
        tactic: 0 (default) or one of the plugin's tactics.

    Returns:
        The compiled kernel and its constexprs (window plan and tile config).
    """
    from omsf2.kernels.triton import _pool

    name = op_contract.POOL_MODES[pool_mode(mode)]
    plan = _pool.pool_plan([int(w) for w in windows], name)
    tile, warps = _tactic(_pool_tactics(), tactic)
    consts = {**plan.constexprs(), **tile}
    return aot.compile_kernel(f"multiscale_pool_{name}", arch, dtype, constexprs=consts, num_warps=warps), consts


def pool_launch_grid(shape: Sequence[Any], consts: dict[str, int], cdiv: Callable | None = None) -> tuple[Any, Any]:
    """Grid (x, y) of MultiscalePool for an input shape of ints or symbolic expressions."""
    from omsf2.kernels.triton import _pool

    n, c, h, w = shape
    kw = {"cdiv": cdiv} if cdiv is not None else {}
    return _pool.pool_grid(
        n,
        c,
        h,
        w,
        halo=consts["HALO"],
        block_c=consts["BLOCK_C"],
        tile_h=consts["TILE_H"],
        tile_w=consts["TILE_W"],
        **kw,
    )


def fuse_kernel(dtype: torch.dtype, arch: int, tactic: int = 0) -> tuple[aot.CompiledKernel, dict[str, int]]:
    """Compile the ScaleFuse kernel for one dtype, architecture and tactic."""
    tile, warps = _tactic(_fuse_tactics(), tactic)
    return aot.compile_kernel("scale_fuse", arch, dtype, constexprs=tile, num_warps=warps), dict(tile)


def fuse_launch_grid(shape: Sequence[Any], consts: dict[str, int], cdiv: Callable | None = None) -> tuple[Any, Any]:
    """Grid (x, y) of ScaleFuse for the output shape (N, C, H, W), ints or symbolic."""
    from omsf2.kernels.triton import _fuse

    n, c, h, w = shape
    kw = {"cdiv": cdiv} if cdiv is not None else {}
    return _fuse.fuse_grid(n, c, h, w, block_c=consts["BLOCK_C"], block_s=consts["BLOCK_S"], **kw)


def _current_arch() -> int:
    if not torch.cuda.is_available():
        raise RuntimeError("pass arch= to register_trt_plugins: no CUDA device to read the compute capability from")
    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


_registered = False


def register_trt_plugins(arch: int | None = None) -> None:
    """Register the two plugins with ``tensorrt.plugin`` (idempotent).

    Call before parsing an ONNX graph that holds ``omsf2`` custom nodes.

    Args:
        arch: compute capability to compile for (e.g. 87, 90); default: the current CUDA device's,
            read when TensorRT asks for the kernel (engines are built on their target GPU).

    Raises:
        ImportError: TensorRT >= 10.6 with ``tensorrt.plugin`` is not installed.
    """
    global _registered
    if _registered:
        return
    try:
        import numpy.typing as npt
        import tensorrt as trt
        import tensorrt.plugin as trtp
    except ImportError as err:
        raise ImportError("register_trt_plugins needs TensorRT >= 10.6 (tensorrt.plugin)") from err

    to_torch = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16}

    def dtype_of(desc: Any) -> torch.dtype:
        if desc.dtype not in to_torch:
            raise TypeError(f"omsf2 plugins take FP32, FP16 or BF16 tensors, got {desc.dtype}")
        return to_torch[desc.dtype]

    def target() -> int:
        return arch if arch is not None else _current_arch()

    _register_pool(trtp, npt, dtype_of, target)
    _register_fuse(trtp, dtype_of, target)
    _registered = True


def _register_pool(trtp: Any, npt: Any, dtype_of: Callable[[Any], torch.dtype], target: Callable[[], int]) -> None:
    """MultiscalePool's descriptor, autotune and AOT implementation (``tensorrt.plugin`` decorators)."""

    @trtp.register(POOL_OP)
    def _pool_desc(x: trtp.TensorDesc, windows: npt.NDArray[np.int32], mode: npt.NDArray[np.int32]) -> trtp.TensorDesc:
        out = x.like()
        out.shape_expr[1] = x.shape_expr[1] * (1 + len(windows))
        return out

    @trtp.autotune(POOL_OP)
    def _pool_autotune(
        x: trtp.TensorDesc,
        windows: npt.NDArray[np.int32],
        mode: npt.NDArray[np.int32],
        outputs: tuple[trtp.TensorDesc],
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(f"{_TYPES}, {_TYPES}", "LINEAR", list(_pool_tactics()))]

    @trtp.aot_impl(POOL_OP)
    def _pool_aot(
        x: trtp.TensorDesc,
        windows: npt.NDArray[np.int32],
        mode: npt.NDArray[np.int32],
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        ck, consts = pool_kernel(windows.tolist(), pool_mode(mode), dtype_of(x), target(), tactic)
        dims = x.shape_expr
        params = trtp.KernelLaunchParams()
        params.grid_x, params.grid_y = pool_launch_grid([dims[i] for i in range(4)], consts, trtp.cdiv)
        params.block_x = ck.block_x
        params.shared_mem = ck.shared
        # The kernel's int32 arguments (C, H, W), resolved from the runtime shapes.
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(dims[i]) for i in (1, 2, 3)])
        return ck.symbol.encode(), ck.ptx.encode(), params, extra


def _register_fuse(trtp: Any, dtype_of: Callable[[Any], torch.dtype], target: Callable[[], int]) -> None:
    """ScaleFuse's descriptor, autotune and AOT implementation (``tensorrt.plugin`` decorators)."""

    @trtp.register(FUSE_OP)
    def _fuse_desc(
        l: trtp.TensorDesc,  # noqa: E741
        a: trtp.TensorDesc,
        l_up: trtp.TensorDesc,
        a_up: trtp.TensorDesc,
    ) -> trtp.TensorDesc:
        return l.like()

    @trtp.autotune(FUSE_OP)
    def _fuse_autotune(
        l: trtp.TensorDesc,  # noqa: E741
        a: trtp.TensorDesc,
        l_up: trtp.TensorDesc,
        a_up: trtp.TensorDesc,
        outputs: tuple[trtp.TensorDesc],
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(", ".join([_TYPES] * 5), "LINEAR", list(_fuse_tactics()))]

    @trtp.aot_impl(FUSE_OP)
    def _fuse_aot(
        l: trtp.TensorDesc,  # noqa: E741
        a: trtp.TensorDesc,
        l_up: trtp.TensorDesc,
        a_up: trtp.TensorDesc,
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        ck, consts = fuse_kernel(dtype_of(l), target(), tactic)
        dims, up = l.shape_expr, l_up.shape_expr
        params = trtp.KernelLaunchParams()
        params.grid_x, params.grid_y = fuse_launch_grid([dims[i] for i in range(4)], consts, trtp.cdiv)
        params.block_x = ck.block_x
        params.shared_mem = ck.shared
        # The kernel's int32 arguments (C, H, W, h, w).
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (dims[1], dims[2], dims[3], up[2], up[3])])
        return ck.symbol.encode(), ck.ptx.encode(), params, extra
