"""The rules the Python runtime and the C/C++ library share: this side's one table.

``omsf2/runtime/cpp/omsf2_rules.hpp`` holds the same table for C++. ``tests/runtime/test_rules_parity.py``
builds the C library and holds the two together: the tables must be equal as data (the library's
``omsf2_rules_json()`` against :func:`as_dict`), and the behaviour must agree case by case (engine
compatibility over a grid of manifests, TensorRT versions and GPUs; activation by task; GPU name
comparison; TensorRT version parsing). Change a rule on one side and that test fails until the
other side follows.

What lives here: which file each backend runs (in order of preference), what ``auto`` tries and in
which order, the plugin library's name, the activation of each task, the bundle and engine-manifest
format versions each side reads, the engine compatibility rule with the pieces it is made of, and
the clinical input gating (its table and behaviour live in :mod:`omsf2.runtime.gating`; ``gating``
below is that table).
Pure Python (stdlib and numpy): the runtime, the export and a scanner's tooling all import it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from omsf2.runtime import gating

#: Bumped when a rule changes meaning; both sides report it.
RULES_VERSION = 2
BUNDLE_FORMAT = "omsf2-bundle"
BUNDLE_FORMAT_VERSION = 1
ENGINE_MANIFEST_FORMAT = "omsf2-engine-manifest"
ENGINE_MANIFEST_FORMAT_VERSION = 1
#: The TensorRT plugin library an engine with omsf2 custom ops needs; it sits in the bundle folder.
PLUGIN_LIBRARY = "libomsf2_plugins.so"
#: task -> activation of the logits.
ACTIVATION = {"multiclass": "softmax", "multilabel": "sigmoid"}
#: ``hardware_compat`` (Ampere+) engines load on compute capability 8.0 or newer.
HARDWARE_COMPAT_MIN_CC = (8, 0)
#: Manifests nest a few levels; a deeper document is refused rather than parsed recursively.
JSON_MAX_DEPTH = 32


@dataclasses.dataclass(frozen=True)
class BackendRule:
    """One backend: the bundle files it runs, where, and at what precision.

    Attributes:
        name: the ``--backend`` value (and the C library's backend name).
        artifacts: export targets it can run, in order of preference (the first present wins).
        device: ``cpu``, ``cuda`` or ``remote`` (a Triton server runs it).
        precision: ``fp32``, ``bf16``, ``int8``, ``engine`` (whatever the engine was built in) or
            ``server`` (whatever the server runs).
    """

    name: str
    artifacts: tuple[str, ...]
    device: str
    precision: str


BACKEND_RULES: tuple[BackendRule, ...] = (
    BackendRule("ort", ("onnx",), "cpu", "fp32"),
    # U8S8 first: it agreed with FP32 better than the S8S8 TensorRT contract on CPUs (docs/runtime-and-c-library.md).
    BackendRule("ort-int8", ("onnx_int8_cpu", "onnx_int8"), "cpu", "int8"),
    BackendRule("openvino", ("onnx",), "cpu", "fp32"),
    BackendRule("openvino-int8", ("onnx_int8_cpu", "onnx_int8"), "cpu", "int8"),
    BackendRule("openvino-bf16", ("onnx",), "cpu", "bf16"),
    BackendRule("tensorrt", ("engine_int8", "engine_fp16", "engine_fp32"), "cuda", "engine"),
    BackendRule("ort-cuda", ("onnx",), "cuda", "fp32"),
    BackendRule("ort-trt", ("onnx_int8",), "cuda", "int8"),
    # The model runs on an `omsf2 serve triton` server that holds the same bundle (its digest checked);
    # this side reads no model file. Never tried by auto.
    BackendRule("triton", (), "remote", "server"),
)
#: What ``auto`` tries, in order; each side skips the backends it does not implement (C++: no ``ort``).
#: A GPU engine first, then FP32 on the CPU: INT8 and bf16 only when asked for by name.
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "ort", "openvino")


def backend_rule(name: str) -> BackendRule:
    """The rule of a backend name.

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    for rule in BACKEND_RULES:
        if rule.name == name:
            return rule
    raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(r.name for r in BACKEND_RULES)}")


def gpu_name_key(name: str) -> str:
    """How GPU names compare: surrounding ASCII whitespace dropped, ASCII letters lower-cased.

    ASCII only on purpose, so that C++ (``std::tolower`` in the "C" locale) computes the same key.
    """
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in name.strip(" \t\r\n\f\v"))


def parse_trt_version(version: str) -> tuple[int, int, int]:
    """``"10.3.0.30"`` -> ``(10, 3, 0)``: major, minor, patch (the build component is dropped).

    Missing components are 0 and non-digits inside a component are ignored (``"11.1.0rc1"`` ->
    ``(11, 1, 0)``), so every ``tensorrt.__version__`` and every table key parses the same way.
    """
    nums = []
    for part in str(version).strip().split(".")[:3]:
        digits = "".join(ch for ch in part if "0" <= ch <= "9")
        nums.append(int(digits) if digits else 0)
    nums += [0] * (3 - len(nums))
    return nums[0], nums[1], nums[2]


def engine_compat_reasons(
    *,
    built_trt: str,
    built_cc: tuple[int, int],
    built_gpu: str,
    version_compat: bool,
    hardware_compat: bool,
    running_trt: str,
    running_cc: tuple[int, int],
    running_gpu: str,
) -> list[str]:
    """Why an engine built with ``built_*`` cannot load on ``running_*`` (empty: it can).

    * TensorRT: the running ``major.minor.patch`` must equal the builder's; a ``version_compat``
      engine loads on the same or a newer TensorRT, never an older one.
    * GPU: the compute capability must match, and so must the GPU name (:func:`gpu_name_key`); a
      ``hardware_compat`` engine loads on any GPU of compute capability 8.0 or newer.
    """
    reasons = []
    built_v, run_v = parse_trt_version(built_trt), parse_trt_version(running_trt)
    if version_compat:
        if run_v < built_v:
            reasons.append(
                "TensorRT is older than the builder (version-compatible engines load only on the same or newer)"
            )
    elif run_v != built_v:
        reasons.append("TensorRT version differs (rebuild here, or build with version_compat)")
    if hardware_compat:
        if tuple(running_cc) < HARDWARE_COMPAT_MIN_CC:
            reasons.append("hardware-compatible (Ampere+) engines need compute capability 8.0 or newer")
    elif tuple(running_cc) != tuple(built_cc):
        reasons.append("compute capability differs (rebuild on this GPU, or build with hardware_compat on Ampere+)")
    elif gpu_name_key(running_gpu) != gpu_name_key(built_gpu):
        reasons.append("GPU model differs (engines are tuned for the GPU that built them; rebuild here)")
    return reasons


class ManifestJSONError(ValueError):
    """A manifest that the strict JSON rule refuses (duplicate key, too deep, NaN/Infinity, not JSON)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ManifestJSONError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ManifestJSONError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400: valid JSON that no float holds; C++ refuses it too
        raise ManifestJSONError(f"number {text} is out of range")
    return value


def _depth(text: str) -> int:
    """Deepest nesting of objects and arrays (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads_json(data: bytes | str) -> Any:
    """Parse a manifest by the strict rule both sides share.

    Duplicate keys, nesting deeper than :data:`JSON_MAX_DEPTH`, ``NaN``/``Infinity``, numbers out of
    a double's range (``1e400``) and invalid UTF-8 are refused: two readers that resolve a duplicate
    key differently could see two different manifests in one file.

    Raises:
        ManifestJSONError: the document breaks the rule or is not JSON (one line).
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else str(data)
    except UnicodeDecodeError as e:
        raise ManifestJSONError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    if _depth(text) > JSON_MAX_DEPTH:
        raise ManifestJSONError(f"nested deeper than {JSON_MAX_DEPTH} levels")
    try:
        return json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except json.JSONDecodeError as e:
        raise ManifestJSONError(f"{e.msg} at line {e.lineno} column {e.colno}") from None


def activate(task: str, logits: np.ndarray) -> np.ndarray:
    """Probabilities (float64) from logits ``(N, K)`` by the task's activation (:data:`ACTIVATION`).

    ``softmax`` subtracts each row's maximum first; ``sigmoid`` is ``1 / (1 + exp(-x))`` per value.

    Raises:
        ValueError: an unknown task.
    """
    if task not in ACTIVATION:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(ACTIVATION)}")
    x = np.asarray(logits, dtype=np.float64)
    if ACTIVATION[task] == "sigmoid":
        with np.errstate(over="ignore"):  # exp(1000) = inf gives exactly 0, as in C++
            return 1.0 / (1.0 + np.exp(-x))
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def as_dict() -> dict[str, Any]:
    """The table as JSON types, in the layout ``omsf2_rules_json()`` of the C library returns."""
    return {
        "rules_version": RULES_VERSION,
        "bundle_format": BUNDLE_FORMAT,
        "bundle_format_version": BUNDLE_FORMAT_VERSION,
        "engine_manifest_format": ENGINE_MANIFEST_FORMAT,
        "engine_manifest_format_version": ENGINE_MANIFEST_FORMAT_VERSION,
        "plugin_library": PLUGIN_LIBRARY,
        "activation": dict(ACTIVATION),
        "hardware_compat_min_cc": list(HARDWARE_COMPAT_MIN_CC),
        "json_max_depth": JSON_MAX_DEPTH,
        "auto_order": list(AUTO_ORDER),
        "backends": [
            {"name": r.name, "artifacts": list(r.artifacts), "device": r.device, "precision": r.precision}
            for r in BACKEND_RULES
        ],
        "gating": gating.table(),
    }
