"""The JSON manifest written beside every TensorRT engine, and the rule that decides where it may load.

A serialized engine is opaque and tied to the TensorRT version and GPU that built it; loading it
elsewhere fails deep inside TensorRT, or works and runs kernels tuned for another chip. The
manifest records what was built where and from what (ONNX and calibration hashes, the accuracy
gate's numbers, I/O names and shapes, build options), so :func:`compatibility_error` can refuse
a mismatch with one readable line before TensorRT is asked, and the engine's own accuracy gate on
the GPU that built it (``gate``). This module is pure Python (stdlib
only): the runtime and a scanner's tooling read manifests without torch or TensorRT; the export
writes them with :func:`write_manifest` from here. The rule itself, and the one TensorRT version parser
(:func:`parse_trt_version`) that the build, the parser-support table and the DLA rule use, live in
:mod:`omsf2.runtime.rules`, the table the C++ runtime mirrors.

Compatibility rule (``compatibility_error``):

* TensorRT: by default the running ``major.minor.patch`` must equal the builder's (TensorRT's own
  rule is "same version"; the fourth, build component is not compared). A ``version_compat``
  engine (``BuilderFlag.VERSION_COMPATIBLE``, TensorRT >= 8.6) loads on the same or a *newer*
  TensorRT, never an older one (NVIDIA, "Version Compatibility").
* GPU: by default the compute capability must match and the GPU name must match (ASCII case and
  surrounding whitespace ignored: :func:`omsf2.runtime.rules.gpu_name_key`): engines are tuned for
  the device model that built them. A
  ``hardware_compat`` engine (``HardwareCompatibilityLevel.AMPERE_PLUS``) loads on any GPU of compute
  capability 8.0 or newer, whatever its name.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omsf2.fileio import write_json
from omsf2.runtime.rules import (
    ENGINE_MANIFEST_FORMAT,
    ENGINE_MANIFEST_FORMAT_VERSION,
    HARDWARE_COMPAT_MIN_CC,
    ManifestJSONError,
    engine_compat_reasons,
    loads_json,
    parse_trt_version,
)

FORMAT = ENGINE_MANIFEST_FORMAT
FORMAT_VERSION = ENGINE_MANIFEST_FORMAT_VERSION
AMPERE = HARDWARE_COMPAT_MIN_CC
__all__ = ["AMPERE", "EngineManifest", "TensorInfo", "compatibility_error", "manifest_path", "parse_trt_version"]


def manifest_path(engine_path: str | os.PathLike[str]) -> Path:
    """Where an engine's manifest lives: ``model.int8.engine`` -> ``model.int8.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


@dataclass(frozen=True)
class TensorInfo:
    """One engine input or output.

    Attributes:
        name: tensor name (``image``, ``logits``, ``heatmap``).
        dtype: numpy-style dtype name (``float32``, ``float16``).
        shape: shape with -1 for the dynamic batch dimension.
        profile: for inputs, the optimisation profile's (min, opt, max) shapes.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON types only."""
        d: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.profile is not None:
            d["profile"] = {k: list(s) for k, s in zip(("min", "opt", "max"), self.profile, strict=True)}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorInfo:
        """Inverse of :meth:`to_dict`."""
        prof = d.get("profile")
        profile = None if prof is None else (tuple(prof["min"]), tuple(prof["opt"]), tuple(prof["max"]))
        return cls(str(d["name"]), str(d["dtype"]), tuple(int(s) for s in d["shape"]), profile)


@dataclass(frozen=True)
class EngineManifest:
    """What an engine is, where it was built and from what.

    Attributes:
        engine_file: the engine's file name (the manifest sits beside it).
        engine_sha256: hash of the engine bytes (a swapped file is refused).
        tensorrt_version: ``tensorrt.__version__`` of the builder.
        gpu_name: the building GPU's name.
        compute_capability: (major, minor) of the building GPU.
        precision: ``fp32``, ``fp16`` or ``int8`` (the ONNX's types; the network is strongly typed).
        inputs: engine inputs with their optimisation profile.
        outputs: engine outputs.
        onnx_sha256: hash of the ONNX the engine was parsed from (None for Torch-TensorRT builds).
        calibration_sha256: hash of the calibration set (INT8), from the export report.
        accuracy: the accuracy gate's numbers (FP32 vs INT8 ONNX on the eval split), from the report.
        plugin_library: file name of the plugin library the engine needs, if any.
        plugin_library_sha256: its hash.
        metadata: the ONNX's ``omsf2.*`` metadata props (classes, preprocessing, source checkpoint).
        build: build options (batch profile, workspace, DLA, compatibility flags, builder path).
        omsf2_version: the omsf2 that built it.
        gate: the engine's own accuracy gate, run on the GPU that built it through the runtime
            (drop and agreement against the FP32 ONNX with intervals, subgroups, caveats; written by
            :func:`omsf2.export.engine_gate.record_in_manifest`); empty for an engine built outside
            ``omsf2 export``.
    """

    engine_file: str
    engine_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    onnx_sha256: str | None = None
    calibration_sha256: str | None = None
    accuracy: dict[str, Any] = field(default_factory=dict)
    plugin_library: str | None = None
    plugin_library_sha256: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    omsf2_version: str = ""
    gate: dict[str, Any] = field(default_factory=dict)

    @property
    def hardware_compat(self) -> bool:
        """Built with ``HardwareCompatibilityLevel.AMPERE_PLUS``."""
        return bool(self.build.get("hardware_compat", False))

    @property
    def version_compat(self) -> bool:
        """Built with ``BuilderFlag.VERSION_COMPATIBLE``."""
        return bool(self.build.get("version_compat", False))

    def to_dict(self) -> dict[str, Any]:
        """JSON types only, stamped with format and version."""
        d = dataclasses.asdict(self)
        d["compute_capability"] = list(self.compute_capability)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineManifest:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: not an omsf2 engine manifest, a newer format, or missing fields.
        """
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not an omsf2 engine manifest (format {d.get('format') if isinstance(d, dict) else d!r})")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"engine manifest format version {d['format_version']}; this omsf2 reads up to {FORMAT_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = sorted(set(required) - set(kw))
        if missing:
            raise ValueError(f"engine manifest lacks {missing}")
        kw["compute_capability"] = tuple(int(x) for x in kw["compute_capability"])
        kw["inputs"] = tuple(TensorInfo.from_dict(t) for t in kw["inputs"])
        kw["outputs"] = tuple(TensorInfo.from_dict(t) for t in kw["outputs"])
        return cls(**kw)


def write_manifest(path: str | os.PathLike[str], manifest: EngineManifest) -> Path:
    """Write ``manifest`` as JSON, atomically."""
    return write_json(path, manifest.to_dict())


def read_manifest(path: str | os.PathLike[str]) -> EngineManifest:
    """Read an engine manifest.

    Raises:
        ValueError: missing file, invalid JSON or not a manifest (one line naming the file).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"engine manifest '{p}' does not exist (engines are written with a manifest beside them)")
    try:
        return EngineManifest.from_dict(loads_json(p.read_bytes()))
    except (ManifestJSONError, KeyError, TypeError) as e:
        raise ValueError(f"engine manifest '{p}' is not valid: {type(e).__name__}: {e}") from e
    except ValueError as e:
        raise ValueError(f"engine manifest '{p}': {e}") from e


def _sm(cc: tuple[int, int]) -> str:
    return f"sm_{cc[0]}{cc[1]}"


def compatibility_error(
    manifest: EngineManifest, trt_version: str, gpu_name: str, compute_capability: tuple[int, int]
) -> str | None:
    """Why an engine cannot load here, or None when it can (see the module docstring for the rule).

    Args:
        manifest: the engine's manifest.
        trt_version: the running ``tensorrt.__version__``.
        gpu_name: the running GPU's name.
        compute_capability: the running GPU's (major, minor).

    Returns:
        One line saying what was built where, what is running, and what to do; or None.
    """
    cc = (int(compute_capability[0]), int(compute_capability[1]))
    built_cc = (int(manifest.compute_capability[0]), int(manifest.compute_capability[1]))
    reasons = engine_compat_reasons(
        built_trt=manifest.tensorrt_version,
        built_cc=built_cc,
        built_gpu=manifest.gpu_name,
        version_compat=manifest.version_compat,
        hardware_compat=manifest.hardware_compat,
        running_trt=trt_version,
        running_cc=cc,
        running_gpu=gpu_name,
    )
    if not reasons:
        return None
    return (
        f"engine '{manifest.engine_file}' was built with TensorRT {manifest.tensorrt_version} on {manifest.gpu_name} "
        f"({_sm(built_cc)}); running TensorRT {trt_version} on {gpu_name} ({_sm(cc)}): " + "; ".join(reasons)
    )
