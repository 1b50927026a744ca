"""Bundles: what make_bundle writes, and every way load_bundle refuses a bundle that was tampered with."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from omsf2.fileio import sha256_file
from omsf2.runtime.bundle import FORMAT_VERSION, BundleError, BundleSpec, load_bundle, load_export, make_bundle


def _manifest(b: Path) -> dict:
    return json.loads((b / "manifest.json").read_text())


def _rewrite(b: Path, **changes) -> None:
    m = _manifest(b)
    m.update(changes)
    (b / "manifest.json").write_text(json.dumps(m))


def test_bundle_holds_the_export_and_its_metadata(tiny_bundle: Path, tiny_export: Path) -> None:
    m = _manifest(tiny_bundle)
    assert m["format"] == "omsf2-bundle" and m["format_version"] == FORMAT_VERSION
    assert m["classes"] == ["normal", "stage_I", "stage_II", "stage_III"]
    assert m["preprocess"]["size"] == [64, 64]
    assert m["artifacts"] == {"onnx": "model.onnx"}
    assert set(m["files"]) == {"model.onnx", "README.md", "model_card.json", "MODEL_CARD.md"}
    assert m["files"]["model.onnx"] == sha256_file(tiny_export / "model.onnx")
    nd = m["network_data_format"]
    assert nd["inputs"]["image"]["spatial_shape"] == [64, 64]
    assert nd["outputs"]["logits"]["channel_def"] == {"0": "normal", "1": "stage_I", "2": "stage_II", "3": "stage_III"}
    assert {"intended_use", "data_source", "references"} <= set(m)
    assert m["export"]["onnx_parity"]["top1_agreement"] == 1.0
    b = load_bundle(tiny_bundle)
    assert b.artifacts["onnx"] == tiny_bundle / "model.onnx" and b.max_batch == 32
    assert len(b.digest) == 64


def test_one_changed_byte_is_refused(tiny_bundle: Path) -> None:
    p = tiny_bundle / "model.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"'model.onnx' does not match its sha256.*\(file changed\)"):
        load_bundle(tiny_bundle)


def test_an_added_file_is_refused(tiny_bundle: Path) -> None:
    (tiny_bundle / "extra.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"'extra.onnx' is not listed in manifest.json \(file added\)"):
        load_bundle(tiny_bundle)
    (tiny_bundle / "extra.onnx").unlink()
    (tiny_bundle / "sub").mkdir()
    (tiny_bundle / "sub" / "x.txt").write_text("x")
    with pytest.raises(BundleError, match=r"'sub/x.txt'.*file added"):
        load_bundle(tiny_bundle)


def test_a_removed_file_is_refused(tiny_bundle: Path) -> None:
    (tiny_bundle / "README.md").unlink()
    with pytest.raises(BundleError, match=r"'README.md' is listed in manifest.json but missing \(file removed\)"):
        load_bundle(tiny_bundle)


@pytest.mark.parametrize("name", ["../model.onnx", "/etc/passwd", "a/../../x", "..\\x"])
def test_paths_escaping_the_folder_are_refused(tiny_bundle: Path, name: str) -> None:
    m = _manifest(tiny_bundle)
    _rewrite(tiny_bundle, files={**m["files"], name: "0" * 64})
    with pytest.raises(BundleError, match=r"escapes the bundle folder|invalid file name"):
        load_bundle(tiny_bundle)


def test_a_symlink_out_of_the_folder_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((tiny_bundle / "model.onnx").read_bytes())
    (tiny_bundle / "model.onnx").unlink()
    os.symlink(outside, tiny_bundle / "model.onnx")
    with pytest.raises(BundleError, match="resolves outside the bundle folder"):
        load_bundle(tiny_bundle)


def test_a_newer_format_version_is_refused(tiny_bundle: Path) -> None:
    _rewrite(tiny_bundle, format_version=FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match=rf"format version {FORMAT_VERSION + 1}; this omsf2 .* reads up to"):
        load_bundle(tiny_bundle)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is not a folder"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match=r"has no manifest\.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)


def test_make_bundle_refuses_a_non_empty_output_and_a_changed_export(tiny_export: Path, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="already exists and is not an empty folder"):
        BundleSpec(str(tiny_export), str(tmp_path / "full"))
    with pytest.raises(ValueError, match="parent folder"):
        BundleSpec(str(tiny_export), str(tmp_path / "no" / "such" / "b"))
    with pytest.raises(ValueError, match="max_batch"):
        BundleSpec(str(tiny_export), str(tmp_path / "b"), max_batch=0)
    export = tmp_path / "export"
    export.mkdir()
    for f in tiny_export.iterdir():
        (export / f.name).write_bytes(f.read_bytes())
    (export / "model.onnx").write_bytes(b"changed")
    with pytest.raises(BundleError, match=r"does not match its sha256 in report\.json"):
        make_bundle(BundleSpec(str(export), str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]  # no staging folder left behind


def test_export_folder_loads_like_a_bundle(tiny_export: Path) -> None:
    b = load_export(tiny_export)
    assert b.classes[0] == "normal" and b.artifacts == {"onnx": tiny_export / "model.onnx"}


def _export_with_plugin_engine(tiny_export: Path, tmp_path: Path, lib_bytes: bytes) -> Path:
    import hashlib
    import shutil

    from omsf2.runtime.engine_manifest import EngineManifest, TensorInfo, manifest_path, write_manifest

    export = Path(shutil.copytree(tiny_export, tmp_path / "export"))
    data = b"ENGINE:with-plugins"
    (export / "model.int8.engine").write_bytes(data)
    write_manifest(
        manifest_path(export / "model.int8.engine"),
        EngineManifest(
            engine_file="model.int8.engine",
            engine_sha256=hashlib.sha256(data).hexdigest(),
            tensorrt_version="10.3.0.30",
            gpu_name="Orin (nvgpu)",
            compute_capability=(8, 7),
            precision="int8",
            inputs=(TensorInfo("image", "float32", (-1, 1, 64, 64)),),
            outputs=(TensorInfo("logits", "float32", (-1, 4)), TensorInfo("heatmap", "float32", (-1, 1, 8, 8))),
            plugin_library="libomsf2_plugins.so",
            plugin_library_sha256=hashlib.sha256(lib_bytes).hexdigest(),
        ),
    )
    report = json.loads((export / "report.json").read_text())
    report["artifacts"]["engine_int8"] = {"file": "model.int8.engine", "sha256": hashlib.sha256(data).hexdigest()}
    (export / "report.json").write_text(json.dumps(report))
    return export


def test_engine_bundles_carry_the_plugin_library_it_was_built_with(tiny_export: Path, tmp_path: Path) -> None:
    export = _export_with_plugin_engine(tiny_export, tmp_path, b"\x7fELF plugin v1")
    with pytest.raises(BundleError, match=r"needs plugin library 'libomsf2_plugins.so'; pass --plugin-lib PATH"):
        make_bundle(BundleSpec(str(export), str(tmp_path / "b")))
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "libomsf2_plugins.so").write_bytes(b"\x7fELF plugin v2")
    with pytest.raises(BundleError, match=r"is not the one 'model.int8.engine' was built with"):
        make_bundle(BundleSpec(str(export), str(tmp_path / "b"), plugin_library=str(libs / "libomsf2_plugins.so")))
    (libs / "libomsf2_plugins.so").write_bytes(b"\x7fELF plugin v1")
    b = make_bundle(BundleSpec(str(export), str(tmp_path / "b"), plugin_library=str(libs / "libomsf2_plugins.so")))
    assert {"model.int8.engine", "model.int8.engine.json", "libomsf2_plugins.so"} <= set(b.metadata["files"])
    assert b.artifacts["engine_int8"] == tmp_path / "b" / "model.int8.engine"
