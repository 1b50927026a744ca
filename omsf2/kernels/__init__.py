"""Kernels: the fused neck ops. ``reference`` holds the pure-torch specification of each op.

The reference functions are what the model calls today and what ONNX export traces; the
Triton and CUDA implementations are held to them by the tests.
"""

from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref

__all__ = ["multiscale_pool_ref", "scale_fuse_ref"]
