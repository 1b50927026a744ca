"""Engine manifests round-trip through JSON, refuse foreign files, and encode the load-compatibility rule."""

from __future__ import annotations

import dataclasses
import json

import pytest

from omsf2.runtime.engine_manifest import (
    EngineManifest,
    TensorInfo,
    compatibility_error,
    manifest_path,
    read_manifest,
    write_manifest,
)


def _manifest(**build) -> EngineManifest:
    return EngineManifest(
        engine_file="model.int8.engine",
        engine_sha256="e" * 64,
        tensorrt_version="10.3.0.30",
        gpu_name="Orin (nvgpu)",
        compute_capability=(8, 7),
        precision="int8",
        inputs=(
            TensorInfo("image", "float32", (-1, 1, 224, 224), ((1, 1, 224, 224), (4, 1, 224, 224), (8, 1, 224, 224))),
        ),
        outputs=(TensorInfo("logits", "float32", (-1, 4)), TensorInfo("heatmap", "float32", (-1, 1, 56, 56))),
        onnx_sha256="o" * 64,
        calibration_sha256="c" * 64,
        accuracy={"int8": {"accuracy_drop": 0.5}},
        metadata={"omsf2.classes": '["a"]'},
        build={"batch": [1, 4, 8], **build},
        omsf2_version="0.1.0",
    )


def test_round_trip(tmp_path) -> None:
    m = _manifest(version_compat=True)
    path = write_manifest(tmp_path / "m.engine.json", m)
    assert read_manifest(path) == m
    data = json.loads(path.read_text())
    assert data["format"] == "omsf2-engine-manifest" and data["format_version"] == 1
    assert data["inputs"][0]["profile"]["max"] == [8, 1, 224, 224]


def test_manifest_path_sits_beside_the_engine(tmp_path) -> None:
    assert manifest_path(tmp_path / "model.int8.engine") == tmp_path / "model.int8.engine.json"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid"),
        ('{"format": "something-else"}', "not an omsf2 engine manifest"),
        ('{"format": "omsf2-engine-manifest", "format_version": 99}', "format version 99"),
        ('{"format": "omsf2-engine-manifest", "format_version": 1, "engine_file": "x"}', "lacks"),
    ],
)
def test_bad_manifests_are_one_line_errors(tmp_path, content, match) -> None:
    path = tmp_path / "m.engine.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        read_manifest(path)
    assert "\n" not in str(e.value)


ORIN, ORIN_CC = "Orin (nvgpu)", (8, 7)


@pytest.mark.parametrize(
    ("build", "trt", "gpu", "cc", "problem"),
    [
        ({}, "10.3.0.30", ORIN, ORIN_CC, None),
        ({}, "10.3.0.26", " orin (NVGPU) ", ORIN_CC, None),  # build number and case/space ignored
        ({}, "10.4.0", ORIN, ORIN_CC, "TensorRT version differs"),
        ({}, "10.3.0", "Jetson AGX Orin 64GB", ORIN_CC, "GPU model differs"),
        ({}, "10.3.0", "NVIDIA A100", (8, 0), "compute capability differs"),
        ({"version_compat": True}, "11.1.0", ORIN, ORIN_CC, None),
        ({"version_compat": True}, "10.2.0", ORIN, ORIN_CC, "older than the builder"),
        ({"hardware_compat": True}, "10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), None),
        ({"hardware_compat": True}, "10.3.0", "Tesla T4", (7, 5), "need compute capability 8.0"),
    ],
)
def test_compatibility_rule(build, trt, gpu, cc, problem) -> None:
    err = compatibility_error(_manifest(**build), trt, gpu, cc)
    if problem is None:
        assert err is None
    else:
        assert err is not None and problem in err
        assert err.startswith("engine 'model.int8.engine' was built with TensorRT 10.3.0.30 on Orin (nvgpu) (sm_87)")
        assert f"running TensorRT {trt} on {gpu}" in err


def test_both_mismatches_are_reported_in_one_line() -> None:
    err = compatibility_error(_manifest(), "11.1.0", "NVIDIA H100 80GB HBM3", (9, 0))
    assert err and "TensorRT version differs" in err and "compute capability differs" in err and "\n" not in err


def test_manifest_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _manifest().precision = "fp32"  # type: ignore[misc]
