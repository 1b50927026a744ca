"""The rules the Python runtime and the C library share, held together case by case.

The C library (omsf2/runtime/cpp, built here with g++, no inference backend needed) and
omsf2.runtime.rules must agree on the table itself, on engine compatibility (verdict and message)
over a grid of TensorRT versions, GPUs and build flags, on activation by task, and on which manifests
the strict JSON rule refuses. A host in a comma locale must read the same bundle. Change a rule on
one side only and a test here fails.
"""

from __future__ import annotations

import ctypes
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from omsf2.runtime import rules
from omsf2.runtime.engine_manifest import EngineManifest, TensorInfo, compatibility_error


@pytest.fixture(scope="module")
def lib(cpp_lib: ctypes.CDLL) -> ctypes.CDLL:
    """The C library (tests/runtime/conftest.py builds it once per session)."""
    return cpp_lib


def test_the_tables_are_equal(lib) -> None:
    assert json.loads(lib.omsf2_rules_json()) == rules.as_dict()
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


def test_task_is_read_and_an_unknown_task_refused(lib, tiny_bundle: Path) -> None:
    manifest = tiny_bundle / "manifest.json"
    m = json.loads(manifest.read_text())
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
