"""The torch-free runtime: from a bundle (or an export folder) to stage, probabilities and heat map.

Nothing here imports torch, and importing this package imports neither onnxruntime, OpenVINO nor
TensorRT: backends load when a session is created. ``export`` may use ``runtime`` (sessions,
engine manifests), never the reverse. Names resolve lazily (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Bundle": "omsf2.runtime.bundle",
    "BundleError": "omsf2.runtime.bundle",
    "load_bundle": "omsf2.runtime.bundle",
    "make_bundle": "omsf2.runtime.bundle",
    "Prediction": "omsf2.runtime.predictor",
    "Predictor": "omsf2.runtime.predictor",
    "BACKEND_NAMES": "omsf2.runtime.sessions",
    "ort_session": "omsf2.runtime.sessions",
    "run_session": "omsf2.runtime.sessions",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omsf2.runtime' has no attribute {name!r}")
