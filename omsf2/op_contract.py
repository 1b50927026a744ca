"""The fused ops' contract, in one place: ONNX custom-op identity and the pooling-mode table.

Four parties must agree on it: the kernels (the ``mode`` argument of ``multiscale_pool``), the
export (which writes ``omsf2``-domain ONNX nodes), the runtime (which expands those nodes for
onnxruntime and loads the TensorRT plugins) and the TensorRT plugins themselves (C++ and Triton,
registered under the same namespace, names and version). The module is stdlib-only so that every
layer, the torch-free runtime included, can import it.
"""

from __future__ import annotations

#: ONNX domain of the custom ops, and the TensorRT plugin namespace.
DOMAIN = "omsf2"
#: ONNX domain version of the custom ops, and the TensorRT plugin version.
VERSION = 1
MULTISCALE_POOL = "MultiscalePool"
SCALE_FUSE = "ScaleFuse"
CUSTOM_OPS = frozenset({MULTISCALE_POOL, SCALE_FUSE})
#: Pooling modes by their integer code (the ONNX ``mode`` attribute, the CUDA ``PoolMode`` enum).
POOL_MODES = ("max", "avg")
#: String attributes TensorRT's ONNX parser reads to find the plugin creator of an unknown node
#: (it defaults to namespace "", where ours would not be found).
TRT_PLUGIN_ATTRS = {"plugin_namespace": DOMAIN, "plugin_version": str(VERSION)}


def pool_mode_code(mode: str) -> int:
    """The integer code of a pooling mode (``"max"`` -> 0, ``"avg"`` -> 1).

    Raises:
        ValueError: an unknown mode, naming the valid ones.
    """
    if mode not in POOL_MODES:
        raise ValueError(f"invalid pooling mode {mode!r}; choose one of {POOL_MODES}")
    return POOL_MODES.index(mode)


def check_pool_mode(mode: str) -> str:
    """Return ``mode`` if it is a valid pooling mode.

    Raises:
        ValueError: an unknown mode, naming the valid ones.
    """
    pool_mode_code(mode)
    return mode
