"""The rules the Python runtime and the C library share, held together case by case.

The C library (omsf2/runtime/cpp, built here with g++, no inference backend needed) and
omsf2.runtime.rules must agree on the table itself, on engine compatibility (verdict and message)
over a grid of TensorRT versions, GPUs and build flags, on activation by task, on which manifests
the strict JSON rule refuses, and on the clinical input gating (verdict and reason, word for word,
over a grid of modalities, body parts, views, pixel layouts, bundle ``accepts`` and site flags).
A host in a comma locale must read the same bundle. Change a rule on one side only and a test here
fails.
"""

from __future__ import annotations

import ctypes
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from omsf2.runtime import gating, rules
from omsf2.runtime.engine_manifest import EngineManifest, TensorInfo, compatibility_error


@pytest.fixture(scope="module")
def lib(cpp_lib: ctypes.CDLL) -> ctypes.CDLL:
    """The C library (tests/runtime/conftest.py builds it once per session)."""
    return cpp_lib


def test_the_tables_are_equal(lib) -> None:
    assert json.loads(lib.omsf2_rules_json()) == rules.as_dict()
    assert rules.as_dict()["gating"] == gating.table()
    assert lib.omsf2_abi_version() == 2


# --------------------------------------------------------------------------- engine compatibility

VERSIONS = ["10.3.0", "10.3.0.30", "10.4", "11.1.0rc1", "10.2.9", " 11.1.0 "]
CCS = [(7, 5), (8, 0), (8, 7), (9, 0)]
BUILT_GPU = "NVIDIA GeForce RTX 4090"
GPUS = [BUILT_GPU, "nvidia geforce rtx 4090", " \tNVIDIA GeForce RTX 4090\n", "NVIDIA GeForce RTX 4080", "NVIDIA H100"]


def _manifest(trt: str, cc: tuple[int, int], version_compat: bool, hardware_compat: bool) -> EngineManifest:
    tensor = TensorInfo("image", "float32", (-1, 1, 64, 64), ((1, 1, 64, 64), (1, 1, 64, 64), (4, 1, 64, 64)))
    return EngineManifest(
        engine_file="model.int8.engine",
        engine_sha256="0" * 64,
        tensorrt_version=trt,
        gpu_name=BUILT_GPU,
        compute_capability=cc,
        precision="int8",
        inputs=(tensor,),
        outputs=(TensorInfo("logits", "float32", (-1, 4)),),
        build={"version_compat": version_compat, "hardware_compat": hardware_compat},
    )


@pytest.mark.parametrize(("version_compat", "hardware_compat"), list(itertools.product([False, True], repeat=2)))
def test_engine_compatibility_agrees(lib, version_compat: bool, hardware_compat: bool) -> None:
    seen = set()
    for built_trt, built_cc in itertools.product(VERSIONS, CCS):
        m = _manifest(built_trt, built_cc, version_compat, hardware_compat)
        doc = json.dumps(m.to_dict()).encode()
        for trt, cc, gpu in itertools.product(VERSIONS, CCS, GPUS):
            want = compatibility_error(m, trt, gpu, cc)
            st = lib.omsf2_check_engine_compatibility(doc, len(doc), trt.encode(), gpu.encode(), *cc)
            got = lib.omsf2_last_error().decode() if st else None
            assert (st, got) == (0 if want is None else 4, want), (built_trt, built_cc, trt, cc, gpu)
            seen.add(want is None)
    assert seen == {True, False}  # the grid holds both verdicts


def test_engine_compatibility_refuses_what_is_not_a_manifest(lib) -> None:
    for doc, fragment in [
        (b'{"format": "omsf2-bundle"}', b"not an omsf2 engine manifest"),
        (b'{"format": "omsf2-engine-manifest", "format_version": 2}', b"format version 2"),
        (b'{"format": "omsf2-engine-manifest", "gpu_name": "x"}', b"lacks"),
        (b'{"format": "omsf2-engine-manifest", "format": "x"}', b"duplicate key"),
    ]:
        st = lib.omsf2_check_engine_compatibility(doc, len(doc), b"10.3.0", b"gpu", 8, 0)
        assert st == 1 and fragment in lib.omsf2_last_error(), doc


# --------------------------------------------------------------------------- activation


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_activation_by_task_agrees(lib, task: str) -> None:
    rng = np.random.default_rng(3)
    rows = [rng.standard_normal(k).astype(np.float32) * s for k in (1, 4, 7) for s in (0.1, 3.0, 40.0)]
    rows.append(np.array([1000.0, -1000.0, 0.0, 88.0], np.float32))
    for logits in rows:
        with np.errstate(over="ignore"):  # exp(1000) is inf in numpy and in C++ alike; the sigmoid is then 0
            want = rules.activate(task, logits[None, :])[0]
        got = np.empty_like(logits)
        st = lib.omsf2_activate(task.encode(), logits.ctypes.data, logits.size, got.ctypes.data, got.size)
        assert st == 0, lib.omsf2_last_error()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    x = np.zeros(3, np.float32)
    assert lib.omsf2_activate(b"regression", x.ctypes.data, 3, x.ctypes.data, 3) == 1
    assert b"multiclass or multilabel" in lib.omsf2_last_error()
    with pytest.raises(ValueError, match="unknown task"):
        rules.activate("regression", x[None, :])


# --------------------------------------------------------------------------- strict JSON

ACCEPTED = [
    b'{"a": 1}',
    b"[]",
    b' {"a" : true , "A": false}\n',
    b'"\\u00e9 \\ud83d\\ude00 \\ud800 \\/"',  # a lone surrogate escape is still JSON to Python
    '{"k": "é😀"}'.encode(),
    b"-0.5e-3",
    b"1e-400",  # underflows to 0.0 on both sides
    b"123456789012345678901234567890",
    b"[" * rules.JSON_MAX_DEPTH + b"]" * rules.JSON_MAX_DEPTH,
    b'["' + b"[" * 40 + b'"]',  # brackets inside a string do not nest
    b'{"a": {"b": [1, 2.5, {"c": null}]}}',
]
REFUSED = [
    b'{"a": 1, "a": 2}',
    b'{"a": 1, "\\u0061": 2}',  # the same key, escaped
    b'{"x": [{"a": 1, "a": 1}]}',
    b"[" * (rules.JSON_MAX_DEPTH + 1) + b"]" * (rules.JSON_MAX_DEPTH + 1),
    b"NaN",
    b"[Infinity]",
    b'{"a": -Infinity}',
    b"1e400",  # a number that is not finite is Infinity by another name
    b"[-1e400]",
    b'{"a": "\xff"}',
    b'"\xc0\xaf"',  # overlong
    b'"\xed\xa0\x80"',  # an encoded surrogate
    b'"\xf4\x90\x80\x80"',  # above U+10FFFF
    b"\xef\xbb\xbf{}",  # a byte-order mark
    b'{"a": 1,}',
    b"[1,]",
    b"{'a': 1}",
    b"01",
    b"1.",
    b".5",
    b"+1",
    b'"a\tb"',
    b'"\\x"',
    b'"\\u12"',
    b"",
    b'{"a" 1}',
    b"nul",
    b"true false",
    b"[1] x",
]


def _python_refuses(doc: bytes) -> bool:
    try:
        rules.loads_json(doc)
    except rules.ManifestJSONError:
        return True
    return False


@pytest.mark.parametrize("doc", ACCEPTED + REFUSED, ids=lambda d: repr(d)[:40])
def test_strict_json_agrees(lib, doc: bytes) -> None:
    refused = doc in REFUSED
    assert _python_refuses(doc) == refused, "Python (omsf2.runtime.rules.loads_json) drifted"
    st = lib.omsf2_check_json(doc, len(doc))
    assert (st != 0) == refused, f"C++ (json.cpp) drifted: {lib.omsf2_last_error()!r}"


def test_bundle_manifest_with_a_duplicate_key_is_refused_by_both(lib, tiny_bundle: Path) -> None:
    from omsf2.runtime.bundle import BundleError, load_bundle

    manifest = tiny_bundle / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"task": "multiclass"', '"task": "multiclass", "task": "multilabel"', 1))
    with pytest.raises(BundleError, match="duplicate key"):
        load_bundle(tiny_bundle)
    rt = ctypes.c_void_p()
    assert lib.omsf2_runtime_create(str(tiny_bundle).encode(), ctypes.byref(rt)) == 2
    assert b"duplicate key 'task'" in lib.omsf2_last_error()


def _stamp_task(bundle: Path, task: str) -> str:
    """Set ``omsf2.task`` in model.onnx (the manifest must agree with it); the file's new sha256."""
    import hashlib

    import onnx

    model = onnx.load(str(bundle / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == "omsf2.task":
            prop.value = task
    onnx.save(model, str(bundle / "model.onnx"))
    return hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()


def test_task_is_read_and_an_unknown_task_refused(lib, tiny_bundle: Path) -> None:
    manifest = tiny_bundle / "manifest.json"
    m = json.loads(manifest.read_text())
    m["files"]["model.onnx"] = _stamp_task(tiny_bundle, "multilabel")
    for task, status in [("multilabel", 0), ("regression", 2)]:
        manifest.write_text(json.dumps({**m, "task": task}))
        rt = ctypes.c_void_p()
        assert lib.omsf2_runtime_create(str(tiny_bundle).encode(), ctypes.byref(rt)) == status
        if status == 0:
            assert lib.omsf2_runtime_task(rt) == b"multilabel"
        else:
            assert f"bundle '{tiny_bundle}': unknown task 'regression' (multiclass or multilabel)" in (
                lib.omsf2_last_error().decode()
            )
        lib.omsf2_runtime_destroy(rt)


# --------------------------------------------------------------------------- clinical input gating


class InputAttributes(ctypes.Structure):
    """``omsf2_input_attributes`` of omsf2_runtime.h."""

    _fields_ = [
        ("modality", ctypes.c_char_p),
        ("body_part_examined", ctypes.c_char_p),
        ("view_position", ctypes.c_char_p),
        ("photometric", ctypes.c_char_p),
        ("samples_per_pixel", ctypes.c_int32),
        ("bits_allocated", ctypes.c_int32),
        ("bits_stored", ctypes.c_int32),
    ]


def _c_gate(lib, attrs: gating.InputAttributes, accepts: dict | None, flags: int) -> str | None:
    def b(v: str | None) -> bytes | None:
        return None if v is None else v.encode()

    c = InputAttributes(b(attrs.modality), b(attrs.body_part), b(attrs.view), b(attrs.photometric),
                        attrs.samples_per_pixel, attrs.bits_allocated, attrs.bits_stored)  # fmt: skip
    doc = None if accepts is None else json.dumps(accepts).encode()
    st = lib.omsf2_check_input(doc, 0 if doc is None else len(doc), ctypes.byref(c), flags)
    assert st in (0, 7), lib.omsf2_last_error()
    return None if st == 0 else lib.omsf2_last_error().decode()


GATE_CASES = [
    gating.InputAttributes(m, bp, v, ph, spp, ba, bs)
    for m, bp, v in itertools.product(
        ["CR", "DX", "dx ", "DR", "CT", "MG", None, ""],
        ["CHEST", "chest", "EXTREMITY", None, " "],
        ["PA", "AP", "LL", "rl", None],
    )
    for ph, spp, ba, bs in [("MONOCHROME2", 1, 16, 12)]
] + [
    gating.InputAttributes("DX", "CHEST", "PA", ph, spp, ba, bs)
    for ph, spp, ba, bs in [
        ("MONOCHROME1", 0, 8, 0),
        ("RGB", 3, 8, 8),
        ("YBR_FULL_422", 3, 8, 8),
        ("PALETTE COLOR", 1, 8, 8),
        (None, 1, 16, 16),
        ("MONOCHROME2", 1, 32, 32),
        ("MONOCHROME2", 1, 0, 0),
        ("MONOCHROME2", 1, 16, 17),
        ("MONOCHROME2", 2, 16, 12),
    ]
]
ACCEPTS = [None, {"views": ["PA", "AP", "LL", "RL"]}, {"modalities": ["dx"], "body_parts": ["CHEST", "THORAX"]}]


@pytest.mark.parametrize("accepts", ACCEPTS, ids=["defaults", "laterals", "dx-thorax"])
def test_input_gating_agrees(lib, accepts) -> None:
    verdicts = set()
    for flags in range(8):
        policy = gating.GatePolicy(
            gating.Accepts.from_manifest({"accepts": accepts} if accepts else {}),
            frozenset(name for bit, name in ((2, "body-part"), (4, "view")) if flags & bit),
            any_modality=bool(flags & 1),
        )
        assert policy.flags == flags
        for attrs in GATE_CASES:
            want = gating.not_applicable(attrs, policy)
            assert _c_gate(lib, attrs, accepts, flags) == want, (attrs, accepts, flags)
            verdicts.add(want is None)
    assert verdicts == {True, False}


def test_input_gating_reasons_name_the_rule(lib) -> None:
    cases = {
        gating.InputAttributes("CT", "CHEST", "PA", "MONOCHROME2", 1, 16, 12): "modality CT (this bundle",
        gating.InputAttributes("CR", "EXTREMITY", "AP", "MONOCHROME1", 1, 16, 10): "body part EXTREMITY",
        gating.InputAttributes("DX", "CHEST", "LL", "MONOCHROME2", 1, 16, 12): "view LL (this bundle accepts AP, PA)",
        gating.InputAttributes("DX", "CHEST", "PA", "RGB", 3, 8, 8): "photometric interpretation RGB",
        gating.InputAttributes(None, "CHEST", "PA", "MONOCHROME2", 1, 16, 12): "no Modality",
        gating.InputAttributes("DX", None, "PA", "MONOCHROME2", 1, 16, 12): "no BodyPartExamined",
    }
    for attrs, fragment in cases.items():
        why = gating.not_applicable(attrs)
        assert why is not None and why.startswith("not applicable: ") and fragment in why
        assert _c_gate(lib, attrs, None, 0) == why


def test_input_gating_refuses_bad_accepts_and_flags_alike(lib) -> None:
    attrs = gating.InputAttributes("DX", "CHEST", "PA", "MONOCHROME2", 1, 16, 12)
    c = InputAttributes(b"DX", b"CHEST", b"PA", b"MONOCHROME2", 1, 16, 12)
    for bad in ({"views": ["P/A"]}, {"views": [5]}, {"colour": ["x"]}, ["PA"]):
        doc = json.dumps(bad).encode()
        assert lib.omsf2_check_input(doc, len(doc), ctypes.byref(c), 0) == 1
        with pytest.raises(ValueError) as e:
            gating.Accepts.from_manifest({"accepts": bad})
        assert lib.omsf2_last_error().decode() == str(e.value)
    assert lib.omsf2_check_input(None, 0, ctypes.byref(c), 8) == 1 and b"unknown gating flags" in lib.omsf2_last_error()
    with pytest.raises(ValueError, match="--allow-missing takes body-part, view"):
        gating.GatePolicy(allow_missing=frozenset({"laterality"}))
    assert gating.not_applicable(attrs) is None


def test_bundle_accepts_are_read_by_both(lib, tiny_bundle: Path) -> None:
    """A bundle that declares laterals: Python and the C library both let an LL view through, and refuse a bad block."""
    from omsf2.runtime.bundle import BundleError, load_bundle

    manifest = tiny_bundle / "manifest.json"
    m = json.loads(manifest.read_text())
    assert m["accepts"] == {"modalities": ["CR", "DR", "DX"], "body_parts": ["CHEST"], "views": ["AP", "PA"]}
    lateral = InputAttributes(b"DX", b"CHEST", b"LL", b"MONOCHROME2", 1, 16, 12)
    for views, status in ((["PA", "AP", "LL"], 0), (["PA"], 7)):
        manifest.write_text(json.dumps({**m, "accepts": {**m["accepts"], "views": views}}))
        rt = ctypes.c_void_p()
        assert lib.omsf2_runtime_create(str(tiny_bundle).encode(), ctypes.byref(rt)) == 0, lib.omsf2_last_error()
        assert lib.omsf2_runtime_check_input(rt, ctypes.byref(lateral), 0) == status
        lib.omsf2_runtime_destroy(rt)
        assert ("LL" in load_bundle(tiny_bundle).accepts.views) == (status == 0)
    manifest.write_text(json.dumps({**m, "accepts": {"views": "PA"}}))
    with pytest.raises(BundleError) as e:
        load_bundle(tiny_bundle)
    rt = ctypes.c_void_p()
    assert lib.omsf2_runtime_create(str(tiny_bundle).encode(), ctypes.byref(rt)) == 2
    assert lib.omsf2_last_error().decode() == str(e.value)
