"""What an export records for the evidence pack: the checkpoint's facts, the software, the inputs' hashes.

A bundle cannot load the checkpoint (the runtime has no torch), so the export copies into
``report.json`` the checkpoint's own record of its training (data spec and data record, recipe,
validation metrics, software) and, beside each input it consumed, the hash that ties the input to
its output: the checkpoint file, the calibration folder and the calibration set drawn from it
(:mod:`omsf2.lineage`). The model card (:mod:`omsf2.runtime.model_card`) and ``omsf2 trace``
(:mod:`omsf2.runtime.trace`) read them from there. A checkpoint written before omsf2 recorded a
fact has ``None`` in its place, which the card reports as "not recorded", never as a guess.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
from pathlib import Path
from typing import Any

from omsf2._version import __version__
from omsf2.export.calibration import ImageSet
from omsf2.fileio import sha256_file
from omsf2.lineage import files_sha256, folder_sha256

#: The checkpoint metrics a report keeps (multi-class and multi-label); the rest is per-epoch detail.
METRIC_KEYS = (
    "n",
    "accuracy",
    "macro_f1",
    "qwk",
    "macro_auc",
    "per_class_recall",
    "confusion",
    "classes",
    "per_label_auc",
    "per_label_accuracy",
    "labels",
    "epoch",
    "val_loss",
    "selected_on",
    "select_size",
)
#: The distributions whose versions an export records (those installed).
SOFTWARE = ("torch", "onnx", "onnxruntime", "onnxslim", "numpy", "nncf", "nvidia-modelopt", "tensorrt")


def _json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as None (JSON has no NaN) and tuples as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def checkpoint_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint as given, resolved, and its sha256 (the ONNX step's input)."""
    return {"path": str(path), "resolved": str(Path(path).resolve()), "sha256": sha256_file(path)}


def training_facts(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's record of its training, JSON-ready; a fact it does not hold is None."""
    metrics = ckpt.get("metrics") or {}
    kept = {k: metrics[k] for k in METRIC_KEYS if k in metrics}
    return _json_safe(
        {
            "omsf2_version": ckpt.get("omsf2_version"),
            "software": ckpt.get("software"),
            "model_config": ckpt.get("model_config"),
            "data": ckpt.get("data"),
            "data_record": ckpt.get("data_record") or None,
            "train_config": ckpt.get("train_config"),
            "metrics": kept or None,
            "selection": ckpt.get("selection"),
        }
    )


def software_versions() -> dict[str, str]:
    """omsf2, Python and each installed distribution of :data:`SOFTWARE`, as the export ran them."""
    versions = {"omsf2": __version__, "python": platform.python_version()}
    for dist in SOFTWARE:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def checkpoint_facts(ckpt: dict[str, Any]) -> dict[str, Any]:
    """``training`` and ``software`` entries of ``report.json``."""
    return {"training": training_facts(ckpt), "software": software_versions()}


def calibration_lineage(calib: ImageSet) -> dict[str, Any]:
    """The calibration folder's listing, the images drawn from it and their hash (the calibration step's I/O)."""
    root = Path(calib.root)
    images = sorted(Path(os.path.relpath(p, root)).as_posix() for p in calib.paths)
    return {
        "data_dir_resolved": str(root.resolve()),
        "folder": folder_sha256(root),
        "images": images,
        "set_sha256": files_sha256(root, images)["sha256"],
    }
