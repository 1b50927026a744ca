"""Model registry: name -> builder (a duplicate name is an error), in the manner of timm.

Each variant is a keyword-only builder ``omsf2_tiny(**kwargs) -> nn.Module`` registered with
:func:`register_model`; :func:`create_model` looks the name up and calls it. The registry knows
nothing of the networks themselves: importing :mod:`omsf2.models` imports the network modules,
whose decorators fill the table, so neither side imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
B = TypeVar("B", bound=Callable[..., nn.Module])


def register_model(fn: B) -> B:
    """Decorator: register builder ``fn`` under its function name.

    Raises:
        ValueError: a variant of that name is already registered.
    """
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered variants, sorted."""
    return sorted(_REGISTRY)


def model_description(name: str) -> str:
    """First line of variant ``name``'s builder docstring."""
    doc = (_builder(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build variant ``name`` (randomly initialised; nothing is downloaded).

    Args:
        name: a registered variant, see :func:`list_models`.
        **kwargs: configuration fields to change, e.g. ``num_classes=3``.

    Raises:
        ValueError: an unknown variant, or an option the variant does not have.
    """
    return _builder(name)(**kwargs)
