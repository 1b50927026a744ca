"""Every TensorRT engine judged where it runs: on the GPU that built it, through the runtime's one inference core.

An INT8 Q/DQ graph that passed its gate in onnxruntime can still lose accuracy once TensorRT
fuses it and picks its kernels, and only on some devices; FP16 engines can too. So each engine
``omsf2 export --format engine`` builds is opened the way a deployment opens it (a ``tensorrt``
session of :mod:`omsf2.runtime.sessions`, built from the verified bytes, run through
:meth:`omsf2.runtime.predictor.Predictor.run_batch`: chunking, output checks, activation) on the
gate images, and held to the same bounds as its ONNX flavour: accuracy drop and top-1 agreement
against the FP32 ONNX, per-group figures and caveats (:func:`omsf2.export.gate.gate_record`).

An engine that fails is not written (:func:`discard`); the one-line error names the closest
configuration that passed (:func:`closest_passing`: another engine of this export, nearest in
precision first, else the ONNX it was built from as gated in onnxruntime) and how to get it. An
engine that passes gets its gate figures in its manifest (``gate``; :func:`record_in_manifest`).
The engine run itself needs a GPU; everything around it is tested on CPU with a fake session.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.config import PreprocessSpec
from omsf2.export.calibration import ImageSet
from omsf2.export.gate import GateSpec, gate_record

#: For a failed engine of a precision, the configurations tried as its closest passing one, nearest first.
CLOSEST = {
    "int8": ("engine_fp16", "engine_fp32", "onnx_int8", "onnx"),
    "fp16": ("engine_fp32", "onnx"),
    "fp32": ("onnx",),
}
_FILES = {
    "engine_fp16": "model.fp16.engine",
    "engine_fp32": "model.fp32.engine",
    "onnx_int8": "model.int8.onnx",
    "onnx": "model.onnx",
}
_HOW = {
    "engine_fp16": "--format engine --fp16",
    "engine_fp32": "--format engine (no --int8, no --fp16)",
    "onnx_int8": "the same --int8 export in onnxruntime (model.int8.onnx, the ort-int8 backend), or --format onnx",
    "onnx": "--format onnx (model.onnx in onnxruntime or OpenVINO)",
}


@dataclasses.dataclass(frozen=True)
class EngineGateSpec:
    """What every engine of one export is judged on.

    Attributes:
        classes: the checkpoint's class names.
        task: ``multiclass`` or ``multilabel`` (the activation the runtime applies).
        preprocess: the checkpoint's preprocessing (the engine's input size).
        batch: the engines' (min, opt, max) batch profile.
        images: the gate images (the gate part of the export).
        fp32_logits: the FP32 ONNX's logits on ``images`` (the reference).
        bounds: drop, agreement and group bounds: those of the ONNX flavours.
    """

    classes: tuple[str, ...]
    task: str
    preprocess: PreprocessSpec
    batch: tuple[int, int, int]
    images: ImageSet = dataclasses.field(repr=False)
    fp32_logits: np.ndarray = dataclasses.field(repr=False)
    bounds: GateSpec = dataclasses.field(default_factory=GateSpec)


def engine_bundle(path: Path, target: str, spec: EngineGateSpec) -> Any:
    """A :class:`~omsf2.runtime.bundle.Bundle` holding only this engine, hashed as the export stages it."""
    from omsf2.runtime.bundle import Bundle

    return Bundle(
        root=path.parent,
        classes=spec.classes,
        preprocess=spec.preprocess,
        artifacts={target: path},
        max_batch=spec.batch[2],
        task=spec.task,
        digest="",
        metadata={},
        artifact_sha256={target: hashlib.sha256(path.read_bytes()).hexdigest()},
    )


def open_engine_session(bundle: Any, target: str) -> Any:
    """The runtime's ``tensorrt`` session on the bundle's engine (the GPU path; tests replace it)."""
    from omsf2.runtime.predictor import open_session

    return open_session(bundle, "tensorrt", artifact=target)


def run_engine_core(bundle: Any, session: Any, images: np.ndarray, min_batch: int) -> np.ndarray:
    """Scores (N, K) of ``images`` through :meth:`Predictor.run_batch` on ``session``.

    Where the profile's smallest batch is above 1, the images are padded (with the last image) to
    whole chunks of the largest, so every call fits the profile; the padding is dropped.
    """
    from omsf2.runtime.predictor import Predictor

    predictor = Predictor(bundle, session)
    n = len(images)
    x = images
    if min_batch > 1 and n % predictor.max_batch:
        pad = predictor.max_batch - n % predictor.max_batch
        x = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
    probs, _ = predictor.run_batch(x)
    return np.asarray(probs[:n])


def gate_engine(path: Path, target: str, precision: str, spec: EngineGateSpec) -> dict[str, Any]:
    """Run one staged engine on the gate images through the runtime and judge it like its ONNX flavour.

    Returns:
        The gate record (:func:`omsf2.export.gate.gate_record`) plus ``engine``, ``precision``,
        ``accuracy``, ``fp32_accuracy``, ``ran_on``, ``eval_count`` and the building GPU and TensorRT.

    Raises:
        ValueError: the engine cannot run here, or its outputs are not finite.
    """
    from omsf2.runtime.engine_manifest import manifest_path, read_manifest

    bundle = engine_bundle(path, target, spec)
    session = open_engine_session(bundle, target)
    try:
        scores = run_engine_core(bundle, session, spec.images.images, spec.batch[0])
    except FloatingPointError as e:
        raise ValueError(f"engine {path.name} produced non-finite outputs on the gate images: {e}") from e
    finally:
        close = getattr(session, "close", None)
        if callable(close):
            close()
    rec = gate_record(spec.images, spec.fp32_logits, scores, spec.bounds)
    labels = spec.images.labels
    manifest = read_manifest(manifest_path(path))
    rec.update(
        engine=path.name,
        precision=precision,
        accuracy=float((scores.argmax(1) == labels).mean()),
        fp32_accuracy=float((spec.fp32_logits.argmax(1) == labels).mean()),
        eval_count=len(labels),
        ran_on="Predictor.run_batch on the runtime's tensorrt session",
        gpu_name=manifest.gpu_name,
        compute_capability=list(manifest.compute_capability),
        tensorrt_version=manifest.tensorrt_version,
    )
    return rec


def manifest_gate(rec: dict[str, Any]) -> dict[str, Any]:
    """The gate figures an engine's manifest keeps: verdict, bounds, figures, groups and caveats."""
    keys = ("passed", "accuracy", "fp32_accuracy", "accuracy_drop", "accuracy_drop_ci95", "top1_agreement",
            "top1_agreement_ci95", "flipped", "max_drop", "min_agreement", "min_group_agreement", "eval_count",
            "groups", "small_groups", "caveats", "ran_on")  # fmt: skip
    return {k: rec[k] for k in keys if k in rec}


def record_in_manifest(path: Path, rec: dict[str, Any]) -> None:
    """Write the gate figures into the engine's manifest (``gate``); the engine's bytes are unchanged."""
    from omsf2.runtime.engine_manifest import manifest_path, read_manifest, write_manifest

    m = read_manifest(manifest_path(path))
    write_manifest(manifest_path(path), dataclasses.replace(m, gate=manifest_gate(rec)))


def discard(path: Path) -> None:
    """Remove a failed engine and its manifest from the staging folder: it is not written."""
    from omsf2.runtime.engine_manifest import manifest_path

    path.unlink(missing_ok=True)
    manifest_path(path).unlink(missing_ok=True)


def closest_passing(precision: str, engines: dict[str, dict[str, Any]], report: dict[str, Any]) -> str:
    """The configuration nearest to a failed ``precision`` engine that passed its gate, and how to get it.

    Args:
        precision: the failed engine's precision.
        engines: this export's engine gate records by target name.
        report: the export's report so far (the ONNX flavours' gates).
    """
    for name in CLOSEST.get(precision, ("onnx",)):
        rec = engines.get(name) if name.startswith("engine") else report.get("int8") if name == "onnx_int8" else None
        if name == "onnx":
            return f"{_FILES[name]} (the FP32 reference; {_HOW[name]})"
        if rec is not None and rec.get("passed"):
            figures = f"drop {rec['accuracy_drop']:.2f} points, agreement {100 * rec['top1_agreement']:.1f}%"
            where = "on this GPU" if name.startswith("engine") else "in onnxruntime (qdq-float)"
            return f"{_FILES[name]} passed {where} ({figures}; {_HOW[name]})"
    return f"{_FILES['onnx']} (the FP32 reference; {_HOW['onnx']})"


def engine_gate_message(rec: dict[str, Any], closest: str) -> str:
    """One line: which engine failed where, by how much, on how many images, and the closest passing configuration."""
    lo, hi = rec["accuracy_drop_ci95"]
    caution = f"; caution: {rec['caveats'][0]}" if rec.get("caveats") else ""
    return (
        f"engine gate failed for {rec['engine']} ({rec['precision']}, TensorRT {rec['tensorrt_version']} on "
        f"{rec['gpu_name']}): {'; '.join(rec['failed_because'])} — accuracy {100 * rec['accuracy']:.2f}% vs FP32 "
        f"{100 * rec['fp32_accuracy']:.2f}% on {rec['eval_count']} gate images (drop 95% CI [{lo:.2f}, {hi:.2f}]), "
        f"top-1 agreement {100 * rec['top1_agreement']:.1f}%; the engine was not written; closest passing "
        f"configuration: {closest}{caution}"
    )


def settle(
    gated: dict[str, dict[str, Any]], produced: dict[str, Path], fp16_onnx: Path, report: dict[str, Any]
) -> str | None:
    """Keep the engines that passed (their gate in the manifest), drop the rest; the failure line, or None.

    Args:
        gated: gate records by engine target.
        produced: the export's staged files by target; failed engines are removed from it.
        fp16_onnx: the FP16 ONNX an FP16 engine was built from (dropped with a failed FP16 engine).
        report: the export's report: ``engine_gate`` is set, the ONNX flavours' gates are read.
    """
    for name, rec in gated.items():
        if rec["passed"]:
            record_in_manifest(produced[name], rec)
            continue
        discard(produced.pop(name))
        if name == "engine_fp16":
            fp16_onnx.unlink(missing_ok=True)
    report["engine_gate"] = gated
    failed = [r for r in gated.values() if not r["passed"]]
    if not failed:
        return None
    return engine_gate_message(failed[0], closest_passing(failed[0]["precision"], gated, report))
