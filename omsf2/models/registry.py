"""Model registry: name -> default :class:`ModelConfig` builder (a duplicate name is an error).

Variants register a keyword-only builder returning their config; :func:`create_model` applies
overrides and builds the network, so a checkpoint can rebuild exactly what it saved from the
config alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from omsf2.config import ModelConfig

if TYPE_CHECKING:
    from omsf2.models.omsf2 import OMSF2

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Decorator: register ``fn`` (returning the variant's default config) under its name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def _ensure_registered() -> None:
    # The variants live beside the network; importing the module registers them.
    import omsf2.models.omsf2  # noqa: F401


def list_models() -> list[str]:
    """Names of the registered variants, sorted."""
    _ensure_registered()
    return sorted(_REGISTRY)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """Default config of variant ``name`` with ``overrides`` applied (validated by ModelConfig)."""
    _ensure_registered()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    cfg = _REGISTRY[name]()
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"name"}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown model option(s) {bad}; valid: {sorted(fields)}")
    return dataclasses.replace(cfg, **overrides)


def create_model(name: str, **overrides: Any) -> OMSF2:
    """Build variant ``name`` (randomly initialised; nothing is downloaded).

    Args:
        name: a registered variant, see :func:`list_models`.
        **overrides: ModelConfig fields to change, e.g. ``num_classes=3``.
    """
    from omsf2.models.omsf2 import OMSF2

    return OMSF2(model_config(name, **overrides))
