"""The runtime's own error for a backend that failed while running a model.

Backends raise their own exception types: onnxruntime's ``Fail``, ``RuntimeException`` and
``InvalidArgument`` derive from ``Exception`` only, OpenVINO raises ``RuntimeError``, TensorRT and
CUDA their own. :meth:`omsf2.runtime.predictor.Predictor.run_batch` turns every one of them into
:class:`InferenceError`, so a caller (the DICOM node's per-image fallback, ``omsf2 predict``, the
Triton callable) catches one type and never a backend's. It derives from ``RuntimeError`` so that
the command line's one-line error rule already covers it.
"""

from __future__ import annotations

__all__ = ["InferenceError"]


class InferenceError(RuntimeError):
    """A backend failed on a batch (the message is one line naming the backend and its error)."""
