"""Export: checkpoint -> ONNX -> INT8 Q/DQ ONNX (calibrated, accuracy-gated) -> TensorRT engines.

Importing this package is light: torch, onnx and onnxruntime load when a function is called.
The public entries each take a frozen spec: :func:`export_onnx` (``onnx``), :func:`quantize_int8`
(``quantize``) and :func:`run_export` (``targets``, the table that drives ``omsf2 export``). The
gates: ``gate`` (bounds, intervals, caveats), ``gate_data`` (the search part and the gate part,
split by patient), ``subgroups`` (per-group figures), ``int8_search`` (mixed precision on the
search part, one verdict on the gate part) and ``engine_gate`` (each engine on its GPU).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "OnnxExportSpec": "omsf2.export.onnx",
    "export_onnx": "omsf2.export.onnx",
    "QuantizeSpec": "omsf2.export.quantize",
    "quantize_int8": "omsf2.export.quantize",
    "lint_qdq": "omsf2.export.quantize",
    "CalibrationSpec": "omsf2.export.calibration",
    "load_calibration": "omsf2.export.calibration",
    "ExportSpec": "omsf2.export.targets",
    "TARGETS": "omsf2.export.targets",
    "run_export": "omsf2.export.targets",
    "GateData": "omsf2.export.gate_data",
    "gate_engine": "omsf2.export.engine_gate",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omsf2.export' has no attribute {name!r}")
