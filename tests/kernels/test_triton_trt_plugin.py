"""The TensorRT plugin glue without TensorRT: kernels, grids and the registered functions on a stub."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="the plugins embed AOT-compiled Triton kernels")

from omsf2.kernels.triton import trt_plugin


def test_pool_mode_attribute() -> None:
    assert trt_plugin.pool_mode(0) == 0
    assert trt_plugin.pool_mode(np.array([1], dtype=np.int32)) == 1
    for bad in (2, -1, np.array([0, 1], dtype=np.int32)):
        with pytest.raises(ValueError, match="0 \\(max\\) or 1 \\(avg\\)"):
            trt_plugin.pool_mode(bad)


@pytest.mark.parametrize("tactic", [0, 3, 5])
def test_pool_kernel_and_grid(tactic: int) -> None:
    ck, consts = trt_plugin.pool_kernel([5, 9, 13], 1, torch.float16, 87, tactic)
    assert ck.cubin and consts["IS_AVG"] == 1 and consts["HALO"] == 6
    cfg, warps = trt_plugin._pool_tactics()[tactic or 1]
    assert ck.num_warps == warps and {k: consts[k] for k in cfg} == cfg
    out_h, out_w = consts["TILE_H"] - 12, consts["TILE_W"] - 12
    gx, gy = trt_plugin.pool_launch_grid((2, 5, 40, 33), consts)
    assert gx == 2 * -(-5 // consts["BLOCK_C"])
    assert gy == -(-40 // out_h) * -(-33 // out_w)


def test_pool_kernel_rejects() -> None:
    with pytest.raises(ValueError, match="unknown tactic"):
        trt_plugin.pool_kernel([5], 0, torch.float32, 90, 99)
    with pytest.raises(ValueError, match="up to 15"):
        trt_plugin.pool_kernel([17], 0, torch.float32, 90)


def test_fuse_kernel_and_grid() -> None:
    ck, consts = trt_plugin.fuse_kernel(torch.bfloat16, 90, 2)
    assert ck.cubin and consts == trt_plugin._fuse_tactics()[2][0]
    gx, gy = trt_plugin.fuse_launch_grid((2, 6, 13, 11), consts)
    assert (gx, gy) == (2 * -(-6 // consts["BLOCK_C"]), -(-143 // consts["BLOCK_S"]))


def test_register_needs_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as when it is not installed
    monkeypatch.setattr(trt_plugin, "_registered", False)
    with pytest.raises(ImportError, match=r"TensorRT >= 10\.6"):
        trt_plugin.register_trt_plugins(arch=90)


class _Desc:
    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape_expr = list(shape)
        self.dtype = dtype

    def like(self) -> _Desc:
        return _Desc(tuple(self.shape_expr), self.dtype)


class _Params:
    grid_x = grid_y = block_x = shared_mem = None


def _stub_tensorrt(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], Any]:
    # Just enough of tensorrt.plugin to call what register_trt_plugins registers, on int shapes.
    registry: dict[tuple[str, str], Any] = {}
    trt = types.ModuleType("tensorrt")
    trt.float32, trt.float16, trt.bfloat16 = "FP32", "FP16", "BF16"
    trtp = types.ModuleType("tensorrt.plugin")

    def deco(kind: str):
        return lambda op: lambda fn: registry.setdefault((kind, op), fn)

    trtp.register, trtp.autotune, trtp.aot_impl = deco("register"), deco("autotune"), deco("aot_impl")
    trtp.TensorDesc, trtp.KernelLaunchParams, trtp.SymExprs = _Desc, _Params, object
    trtp.AutoTuneCombination = lambda types_, layouts, tactics: (types_, layouts, tactics)
    trtp.cdiv = lambda a, b: -(-a // b)
    trtp.SymInt32 = int
    trtp.SymIntExprs = types.SimpleNamespace(from_tuple=tuple)
    trt.plugin = trtp
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.setattr(trt_plugin, "_registered", False)
    return registry


def test_registered_plugins_on_a_stub(monkeypatch: pytest.MonkeyPatch) -> None:
    reg = _stub_tensorrt(monkeypatch)
    trt_plugin.register_trt_plugins(arch=87)
    assert set(reg) == {
        (k, op) for k in ("register", "autotune", "aot_impl") for op in ("omsf2::MultiscalePool", "omsf2::ScaleFuse")
    }
    windows, mode = np.array([5, 9, 13], dtype=np.int32), np.array([0], dtype=np.int32)

    x = _Desc((2, 5, 40, 33), "FP16")
    out = reg["register", "omsf2::MultiscalePool"](x, windows, mode)
    assert out.shape_expr == [2, 20, 40, 33] and out.dtype == "FP16"
    types_, _, tactics = reg["autotune", "omsf2::MultiscalePool"](x, windows, mode, (out,))[0]
    assert types_ == "FP32|FP16|BF16, FP32|FP16|BF16" and tactics == [1, 2, 3, 4, 5]
    name, ptx, params, extra = reg["aot_impl", "omsf2::MultiscalePool"](x, windows, mode, (out,), 2)
    assert name == b"_multiscale_pool_kernel" and b".target sm_87" in ptx
    assert extra == (5, 40, 33)  # the kernel's (C, H, W)
    assert (params.grid_x, params.grid_y) == (2 * 3, 2 * 2)  # BLOCK_C 2; 32x32 tiles hold 20x20 outputs
    assert params.block_x == 128 and params.shared_mem > 0

    feat, a, l_up, a_up = (_Desc(s, "FP32") for s in ((1, 6, 13, 11), (1, 1, 13, 11), (1, 6, 7, 6), (1, 1, 7, 6)))
    out = reg["register", "omsf2::ScaleFuse"](feat, a, l_up, a_up)
    assert out.shape_expr == [1, 6, 13, 11]
    assert reg["autotune", "omsf2::ScaleFuse"](feat, a, l_up, a_up, (out,))[0][0].count("FP32|FP16|BF16") == 5
    name, ptx, params, extra = reg["aot_impl", "omsf2::ScaleFuse"](feat, a, l_up, a_up, (out,), 0)
    assert name == b"_scale_fuse_kernel" and extra == (6, 13, 11, 7, 6)
    assert (params.grid_x, params.grid_y) == (6, 1)  # default tactic: BLOCK_C 1, BLOCK_S 1024
