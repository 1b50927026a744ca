"""omsf2: OMSF2 pneumoconiosis staging, from PyTorch training to deployable artifacts.

The top-level names resolve lazily (PEP 562): ``import omsf2`` imports neither torch nor any
optional stack, so ``omsf2.data.io`` and ``omsf2.runtime`` stay usable where torch is absent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omsf2._version import __version__

if TYPE_CHECKING:
    from omsf2.models import create_model, list_models

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str) -> Any:
    if name in ("create_model", "list_models"):
        from omsf2 import models

        return getattr(models, name)
    raise AttributeError(f"module 'omsf2' has no attribute {name!r}")
