"""The Python-backend models of an omsf2 Triton repository: file bytes in, model input out, and back.

A Triton model repository written by :mod:`omsf2.export.triton_repo` chains three models in an
ensemble: ``omsf2_preprocess`` (this module's :class:`PreprocessModel`) turns encoded PNG, JPEG or
DICOM bytes into the network input with :func:`omsf2.data.io.read_image` and
:func:`omsf2.data.preprocess.preprocess` — the code training and ``omsf2 predict`` run, not a copy —
then the ONNX or TensorRT model runs, then ``omsf2_postprocess`` (:class:`PostprocessModel`) checks
the model's logits and heat map and turns the logits into probabilities and a label, with the
runtime's own output check and activation (:func:`omsf2.runtime.predictor.check_outputs`,
:func:`omsf2.runtime.rules.activate`): a non-finite output fails its request, as ``omsf2 predict``
refuses it. Both read the preprocessing
spec, task and class names from their ``config.pbtxt`` parameters, filled from the bundle manifest.

The trade-off: :func:`read_image` takes a path (it sniffs DICOM by the preamble and lets Pillow
and pydicom open files lazily), so bytes are written to a private temporary file first; a copy of
a few MB per image, in exchange for one decoder everywhere. ``triton_python_backend_utils`` exists
only inside Triton's Python-backend stub and is imported there, never at import time.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from omsf2.config import PreprocessSpec
from omsf2.data.io import read_image
from omsf2.data.preprocess import preprocess

#: Tensor names of the Python-backend models and the ensemble.
BYTES_INPUT = "IMAGE_BYTES"
ORIGINAL_HW = "original_hw"


def read_image_bytes(data: bytes, name: str = "request") -> np.ndarray:
    """Decode one encoded PNG, JPEG or DICOM with :func:`omsf2.data.io.read_image`.

    Args:
        data: the file's bytes.
        name: what to call the input in error messages.

    Raises:
        ImageReadError: not a readable image (a ``ValueError`` naming the reason).
        TypeError: ``data`` is not bytes.
    """
    if not isinstance(data, bytes | bytearray | np.bytes_):
        raise TypeError(f"{name}: expected encoded image bytes, got {type(data).__name__}")
    fd, path = tempfile.mkstemp(prefix="omsf2-", suffix=".img")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(data))
        return read_image(path)
    finally:
        os.unlink(path)


def preprocess_bytes(blobs: Sequence[bytes], spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """(model input (N, C, H, W) float32, original (h, w) per image as int32 (N, 2)) of encoded files."""
    images = [read_image_bytes(b, f"input {i}") for i, b in enumerate(blobs)]
    x = np.stack([preprocess(img, spec) for img in images]).astype(np.float32)
    return x, np.asarray([img.shape[:2] for img in images], dtype=np.int32)


def _parameters(args: dict[str, Any]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


class PreprocessModel:
    """``omsf2_preprocess``: ``IMAGE_BYTES`` (BYTES, [1]) -> ``image`` (FP32, [C, H, W]) and ``original_hw``."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Read the preprocessing spec from the model's parameters (Triton calls this once)."""
        self.spec = PreprocessSpec.from_dict(json.loads(_parameters(args)["preprocess"]))

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request; an unreadable file fails its own request only."""
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            blobs = pb_utils.get_input_tensor_by_name(request, BYTES_INPUT).as_numpy().reshape(-1)
            try:
                x, hw = preprocess_bytes(list(blobs), self.spec)
            except (ValueError, TypeError, OSError) as e:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
                continue
            out = [pb_utils.Tensor("image", x), pb_utils.Tensor(ORIGINAL_HW, hw)]
            responses.append(pb_utils.InferenceResponse(output_tensors=out))
        return responses


class PostprocessModel:
    """``omsf2_postprocess``: ``logits`` and ``heatmap`` -> ``probabilities``, ``label`` and ``heatmap_checked``."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Read the class names and task from the model's parameters."""
        params = _parameters(args)
        self.classes = tuple(json.loads(params["classes"]))
        self.task = params.get("task", "multiclass")

    def execute(self, requests: list[Any]) -> list[Any]:
        """Checked outputs, probabilities with the runtime's activation and the arg-max class name."""
        import triton_python_backend_utils as pb_utils

        from omsf2.runtime.predictor import check_outputs
        from omsf2.runtime.rules import activate

        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            heat = pb_utils.get_input_tensor_by_name(request, "heatmap").as_numpy()
            try:
                checked, _ = check_outputs(logits, heat, len(logits), self.classes, "triton")
            except (ValueError, FloatingPointError) as e:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
                continue
            probs = activate(self.task, checked).astype(np.float32)
            out = [
                pb_utils.Tensor("probabilities", probs),
                pb_utils.Tensor("label", labels_of(probs, self.classes)),
                pb_utils.Tensor("heatmap_checked", np.asarray(heat, dtype=np.float32)),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=out))
        return responses


def labels_of(probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The arg-max class name of each row, as Triton BYTES (N, 1)."""
    return np.asarray([[classes[int(k)].encode()] for k in probabilities.argmax(axis=1)], dtype=np.object_)
