"""Kernels: the fused neck ops (dense multi-scale pooling, scale fusion) and their dispatch.

``reference`` holds the pure-torch specification of each op; ``triton`` and ``cuda`` hold the
fused kernels, held to the reference by the tests. The model calls :func:`multiscale_pool` and
:func:`scale_fuse`, which pick an implementation per call (see ``omsf2.kernels.ops``). Importing
this package imports torch only: Triton and the CUDA extension load on first use.
"""

from omsf2.kernels.ops import (
    Backend,
    MultiscalePool,
    ScaleFuse,
    available_backends,
    multiscale_pool,
    parse_backend,
    resolve_backend,
    scale_fuse,
    unavailable_reason,
    use_backend,
    use_implementation,
)
from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref

__all__ = [
    "Backend",
    "MultiscalePool",
    "ScaleFuse",
    "available_backends",
    "multiscale_pool",
    "multiscale_pool_ref",
    "parse_backend",
    "resolve_backend",
    "scale_fuse",
    "scale_fuse_ref",
    "unavailable_reason",
    "use_backend",
    "use_implementation",
]
