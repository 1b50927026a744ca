"""The manifest held to the model it names: classes, task, preprocessing, identity and I/O shapes.

``manifest.json`` (or an export's ``report.json``) is not hashed, so nothing stops it from
disagreeing with the model beside it: reversed classes put a wrong stage in a patient's record, an
edited mean silently changes every probability, a model file swapped for another model's (its hash
updated) runs the other model. Every omsf2 ONNX carries its own ``omsf2.*`` metadata props (classes,
task, preprocessing, the source checkpoint's sha256; ``omsf2.export.onnx``) and every engine
manifest copies them, so :func:`check_model` compares, field by field:

==================  =======================================  =====================================
manifest            ONNX metadata prop / engine manifest      refused when
==================  =======================================  =====================================
``classes``         ``omsf2.classes`` (JSON list)             the lists differ (order included)
``task``            ``omsf2.task`` (absent: multiclass)       the tasks differ
``preprocess``      ``omsf2.preprocess`` (JSON object)        size, resize, channels, mean, std or
                                                              pad_value differ (a single mean or std
                                                              stands for every channel)
checkpoint sha256   ``omsf2.checkpoint_sha256``               both present and different: another
                                                              model
I/O                 graph inputs / outputs, engine tensors   ``image`` is not float32 (N, C, H, W) of
                                                              the spec's C, H, W; ``logits`` not
                                                              (N, K) for K classes; no ``heatmap``
==================  =======================================  =====================================

The first mismatch is one line naming the field (:class:`ModelMismatch`). An ONNX without
``omsf2.classes`` or ``omsf2.preprocess`` is not an omsf2 export and is refused; an engine manifest
without metadata (none predates it in a bundle) is held to its tensor shapes only.

The ONNX is read by a small protobuf reader here (the wire format's varints and length-delimited
fields; ``ModelProto.metadata_props`` and ``graph.input`` / ``graph.output``), not by the ``onnx``
package: the ``[runtime]`` install has only onnxruntime, and reading the props through a backend
(``InferenceSession.get_modelmeta()``, OpenVINO's ``rt_info``) would mean building the model in a
backend before knowing it is the right one. The C library reads the same fields the same way
(``omsf2/runtime/cpp/model_check.cpp``), and the messages are the same in both languages.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

__all__ = ["ModelInfo", "ModelMismatch", "check_model", "engine_model_info", "onnx_model_info"]

META_CLASSES = "omsf2.classes"
META_TASK = "omsf2.task"
META_PREPROCESS = "omsf2.preprocess"
META_CHECKPOINT = "omsf2.checkpoint_sha256"
FLOAT32 = 1  # TensorProto.FLOAT
_PRE_FIELDS = ("size", "resize", "channels", "mean", "std", "pad_value")
_PRE_DEFAULTS = {
    "size": [224, 224],
    "resize": "letterbox",
    "channels": 1,
    "mean": [0.5],
    "std": [0.25],
    "pad_value": 0.0,
}


class ModelMismatch(ValueError):
    """The manifest and its model file disagree (one line naming the field)."""


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A model input or output: element type (ONNX ``TensorProto`` code, 1 = float32) and dims (None: dynamic)."""

    elem_type: int
    dims: tuple[int | None, ...] | None


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself: its ``omsf2.*`` metadata and its named tensors."""

    metadata: dict[str, str]
    tensors: dict[str, Tensor]
    has_metadata: bool = True


# --------------------------------------------------------------------------- protobuf wire format


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Any:
    """(field number, wire type, varint value or (start, end) of a length-delimited payload)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise ValueError("a field runs past the end of the file")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise ValueError("truncated fixed-width field")
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _text(buf: memoryview, span: tuple[int, int]) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8")


def _tensor(buf: memoryview, span: tuple[int, int]) -> tuple[str, Tensor]:
    """ValueInfoProto: name (1), type (2) -> TypeProto.tensor_type (1) -> elem_type (1), shape (2) -> dim (1)."""
    name, elem, dims = "", 0, None
    for number, wire, value in _fields(buf, *span):
        if number == 1 and wire == 2:
            name = _text(buf, value)
        elif number == 2 and wire == 2:
            for n2, w2, v2 in _fields(buf, *value):
                if n2 != 1 or w2 != 2:
                    continue
                for n3, w3, v3 in _fields(buf, *v2):
                    if n3 == 1 and w3 == 0:
                        elem = int(v3)
                    elif n3 == 2 and w3 == 2:
                        dims = tuple(_dim(buf, v4) for n4, w4, v4 in _fields(buf, *v3) if n4 == 1 and w4 == 2)
    return name, Tensor(elem, dims)


def _dim(buf: memoryview, span: tuple[int, int]) -> int | None:
    for number, wire, value in _fields(buf, *span):
        if number == 1 and wire == 0:
            return int(value) if value < 1 << 63 else None
    return None


def onnx_model_info(data: bytes) -> ModelInfo:
    """The ``metadata_props`` and the graph's inputs and outputs of serialized ONNX bytes.

    Raises:
        ValueError: the bytes are not a protobuf message of ONNX's shape.
    """
    buf = memoryview(data)
    metadata: dict[str, str] = {}
    tensors: dict[str, Tensor] = {}
    graph_seen = False
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number == 14 and wire == 2:  # ModelProto.metadata_props: StringStringEntryProto {key 1, value 2}
            entry = {n: _text(buf, v) for n, w, v in _fields(buf, *value) if w == 2 and n in (1, 2)}
            metadata[entry.get(1, "")] = entry.get(2, "")
        elif number == 7 and wire == 2:  # ModelProto.graph
            graph_seen = True
            for n2, w2, v2 in _fields(buf, *value):
                if n2 in (11, 12) and w2 == 2:  # GraphProto.input / output
                    name, tensor = _tensor(buf, v2)
                    tensors.setdefault(name, tensor)
    if not graph_seen:
        raise ValueError("no graph")
    return ModelInfo(metadata, tensors)


def engine_model_info(manifest: dict[str, Any]) -> ModelInfo:
    """What an engine manifest (``*.engine.json``) says: its ``metadata`` and its tensors (-1: dynamic)."""
    meta = manifest.get("metadata")
    tensors = {}
    for t in [*(manifest.get("inputs") or []), *(manifest.get("outputs") or [])]:
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            dims = tuple(int(d) if isinstance(d, int) and d >= 0 else None for d in t.get("shape") or [])
            tensors[t["name"]] = Tensor(FLOAT32 if t.get("dtype") == "float32" else 0, dims)
    has = isinstance(meta, dict) and bool(meta)
    return ModelInfo({str(k): str(v) for k, v in meta.items()} if has else {}, tensors, has)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the comparison


def _per_channel(values: Any, channels: int) -> list[float] | None:
    if not isinstance(values, list) or not values or not all(isinstance(v, int | float) for v in values):
        return None
    return [float(values[min(c, len(values) - 1)]) for c in range(channels)]


def _pre_value(pre: dict[str, Any], key: str, channels: int) -> Any:
    value = pre.get(key, _PRE_DEFAULTS[key])
    if key in ("mean", "std"):
        return _per_channel(value, channels)
    if key == "pad_value":
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
    return value


def _first_preprocess_difference(manifest: dict[str, Any], model: dict[str, Any]) -> str | None:
    channels = (manifest.get("channels", 1), model.get("channels", 1))
    for key in _PRE_FIELDS:
        a = _pre_value(manifest, key, channels[0] if isinstance(channels[0], int) else 1)
        b = _pre_value(model, key, channels[1] if isinstance(channels[1], int) else 1)
        if a != b or a is None:
            return key
    return None


def _json_prop(info: ModelInfo, key: str, file: str) -> Any:
    try:
        return json.loads(info.metadata[key])
    except ValueError:
        raise ModelMismatch(f"'{file}' has an unreadable {key} metadata prop (not JSON)") from None


def _check_metadata(fields: dict[str, Any], info: ModelInfo, file: str, what: str) -> None:
    if not info.has_metadata:
        return
    for key in (META_CLASSES, META_PREPROCESS):
        if key not in info.metadata:
            raise ModelMismatch(f"'{file}' carries no {key} metadata: it is not an omsf2 export (re-export it)")
    if _json_prop(info, META_CLASSES, file) != list(fields["classes"]):
        raise ModelMismatch(f"{what}'s classes differ from {META_CLASSES} in '{file}'")
    if info.metadata.get(META_TASK, "multiclass") != fields["task"]:
        raise ModelMismatch(f"{what}'s task differs from {META_TASK} in '{file}'")
    model_pre = _json_prop(info, META_PREPROCESS, file)
    if not isinstance(model_pre, dict):
        raise ModelMismatch(f"'{file}' has an unreadable {META_PREPROCESS} metadata prop (not an object)")
    differs = _first_preprocess_difference(fields["preprocess"], model_pre)
    if differs is not None:
        raise ModelMismatch(f"{what}'s preprocess {differs} differs from {META_PREPROCESS} in '{file}'")
    ckpt, model_ckpt = fields.get("checkpoint_sha256"), info.metadata.get(META_CHECKPOINT)
    if ckpt and model_ckpt and ckpt != model_ckpt:
        raise ModelMismatch(
            f"{what}'s checkpoint sha256 differs from {META_CHECKPOINT} in '{file}': it is another model's file"
        )


def _shape(dims: tuple[int | None, ...] | None) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims or ()) + "]"


def _check_tensors(fields: dict[str, Any], info: ModelInfo, file: str, what: str) -> None:
    pre = fields["preprocess"]
    size = pre.get("size", _PRE_DEFAULTS["size"])
    want = (pre.get("channels", 1), *(size if isinstance(size, list) else [None, None]))
    image = info.tensors.get("image")
    if image is None or image.elem_type != FLOAT32 or image.dims is None or len(image.dims) != 4:
        got = "no float32 input 'image'" if image is None or image.elem_type != FLOAT32 else _shape(image.dims)
        raise ModelMismatch(f"'{file}' does not take a float32 image of shape [N, C, H, W] ({got})")
    if any(d is not None and d != w for d, w in zip(image.dims[1:], want, strict=True)):
        raise ModelMismatch(
            f"'{file}' takes image {_shape(image.dims)}; {what}'s preprocess needs [N, {want[0]}, {want[1]}, {want[2]}]"
        )
    logits = info.tensors.get("logits")
    k = len(fields["classes"])
    if logits is None or logits.dims is None or len(logits.dims) != 2 or logits.dims[1] not in (None, k):
        got = "none" if logits is None else _shape(logits.dims)
        raise ModelMismatch(f"'{file}' returns logits {got}; {what} has {k} classes ([N, {k}])")
    if "heatmap" not in info.tensors:
        raise ModelMismatch(f"'{file}' has no 'heatmap' output")


def check_model(fields: dict[str, Any], info: ModelInfo, file: str, what: str = "manifest.json") -> None:
    """Hold one model file to the manifest's fields (see the module docstring for the rule).

    Args:
        fields: ``classes`` (list), ``task``, ``preprocess`` (the manifest's dict) and optionally
            ``checkpoint_sha256``, as the manifest states them.
        info: what the model file says (:func:`onnx_model_info`, :func:`engine_model_info`).
        file: the model file's name, for the message.
        what: the manifest's name, for the message.

    Raises:
        ModelMismatch: the first field that differs, in one line.
    """
    _check_metadata(fields, info, file, what)
    _check_tensors(fields, info, file, what)
