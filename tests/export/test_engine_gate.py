"""The engine gate's CPU side: each engine run by ``Predictor.run_batch`` on a session, judged like its ONNX flavour.

TensorRT is replaced by the fake of tests/export/conftest.py: a "built" engine runs its source ONNX
in onnxruntime behind the session interface, or a corrupted copy whose every answer changes. What
is proven is omsf2's logic: the engine runs through the runtime's core on the gate images, a pass
is written with its gate in the manifest, a fail writes nothing and names the closest passing
configuration, and the subgroup table is filled. The real engine run is ``test_tensorrt_gpu.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.export.engine_gate import closest_passing
from omsf2.export.targets import ExportSpec, run_export
from omsf2.runtime.engine_manifest import manifest_path, read_manifest


def test_a_passing_engine_is_written_with_its_gate_in_the_manifest(tiny_ckpt, phantoms64, tmp_path, fake_trt) -> None:
    res = run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "out"), format="engine", batch="1,4,8",
                                eval_data=str(phantoms64 / "test")))  # fmt: skip
    engine = res.out / "model.fp32.engine"
    assert engine.is_file() and res.artifacts["engine_fp32"] == engine
    gate = read_manifest(manifest_path(engine)).gate
    assert gate["passed"] and gate["top1_agreement"] == 1.0 and gate["accuracy_drop"] == 0.0
    assert gate["eval_count"] == 16 and "Predictor.run_batch" in gate["ran_on"]
    rows = gate["groups"]["class"]
    assert [r["group"] for r in rows] == ["normal", "stage_I", "stage_II", "stage_III"]
    assert [r["n"] for r in rows] == [4, 4, 4, 4] and all(not r["judged"] for r in rows)  # 4 images: too few
    assert gate["small_groups"] == [f"class={c} (n 4)" for c in ("normal", "stage_I", "stage_II", "stage_III")]
    rec = res.report["engine_gate"]["engine_fp32"]
    assert rec["gpu_name"] == "Fake GPU" and rec["precision"] == "fp32"
    assert set(fake_trt["batches"]) <= {8}, "the core runs whole chunks of the profile's largest batch"
    assert sum(fake_trt["batches"]) == 16 and all(s.closed for s in fake_trt["sessions"])
    report = json.loads((res.out / "report.json").read_text())
    assert report["engine_gate"]["engine_fp32"]["passed"] and report["gate_data"]["gate"]["n"] == 16


def test_a_failing_engine_writes_nothing_and_names_the_closest_passing_configuration(
    tiny_ckpt, phantoms64, tmp_path, fake_trt
) -> None:
    fake_trt["corrupt"].add("model.fp32.engine")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["export", str(tiny_ckpt), "--out", str(out), "--format", "engine",
                                   "--eval-data", str(phantoms64 / "test")])  # fmt: skip
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert lines[-1].startswith("error: engine gate failed for model.fp32.engine (fp32, TensorRT 10.3.0 on Fake GPU)")
    assert "top-1 agreement 0.0% < --min-agreement 98%" in lines[-1]
    assert "the engine was not written; closest passing configuration: model.onnx" in lines[-1]
    assert not out.exists()  # the whole export is refused: OUT is as it was


def test_without_fail_on_gate_only_the_failed_engine_and_its_source_are_left_out(
    tiny_ckpt, phantoms64, tmp_path, fake_trt
) -> None:
    fake_trt["corrupt"].add("model.fp16.engine")
    res = run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "out"), format="all", fp16=True, batch="1,4,8",
                                eval_data=str(phantoms64 / "test"), fail_on_gate=False))  # fmt: skip
    assert res.gate_failed == ("engine_fp16",) and res.report["gate_failed"] == ["engine_fp16"]
    assert sorted(p.name for p in res.out.iterdir()) == ["model.onnx", "report.json"]
    assert not res.report["engine_gate"]["engine_fp16"]["passed"]


def test_closest_passing_prefers_the_nearest_precision_that_passed() -> None:
    ok = {"passed": True, "accuracy_drop": 0.0, "top1_agreement": 0.995}
    failed = {"passed": False}
    msg = closest_passing("int8", {"engine_int8": failed, "engine_fp16": ok}, {})
    assert msg.startswith("model.fp16.engine passed on this GPU (drop 0.00 points, agreement 99.5%")
    assert "--format engine --fp16" in msg
    msg = closest_passing("int8", {"engine_int8": failed, "engine_fp16": failed}, {"int8": ok})
    assert msg.startswith("model.int8.onnx passed in onnxruntime (qdq-float)")
    assert closest_passing("fp16", {"engine_fp16": failed}, {"int8": ok}).startswith("model.onnx (the FP32 reference")


def _dicom(path: Path, pixels, manufacturer: str, modality: str, photometric: str, patient: str) -> None:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Manufacturer, ds.PatientID = modality, manufacturer, patient
    arr = pixels if photometric == "MONOCHROME2" else (255 - pixels)  # the same image either way once read
    ds.set_pixel_data(np.ascontiguousarray(arr, np.uint8), photometric, 8)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def dicom_gate_set(phantoms64: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 16 test phantoms as DICOM: vendor A (DX, MONOCHROME2) and vendor B (CR, MONOCHROME1), alternating."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("dicom-gate") / "gate"
    for i, png in enumerate(sorted((phantoms64 / "test").glob("*/*.png"))):
        (root / png.parent.name).mkdir(parents=True, exist_ok=True)
        vendor = ("VendorA", "DX", "MONOCHROME2") if i % 2 == 0 else ("VendorB", "CR", "MONOCHROME1")
        pixels = np.asarray(Image.open(png).convert("L"))
        _dicom(root / png.parent.name / f"{png.stem}.dcm", pixels, *vendor, patient=f"P{i:03d}")
    return root


def test_a_dicom_gate_set_shows_both_manufacturers_in_every_gate(
    tiny_ckpt, phantoms64, dicom_gate_set, tmp_path, fake_trt
) -> None:
    """Acceptance 3: the INT8 flavours' and the engine's gates list each vendor, CR/DX and MONOCHROME1/2."""
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["export", str(tiny_ckpt), "--out", str(out), "--format", "all", "--int8",
                                   "--calib-data", str(phantoms64 / "train"), "--calib-count", "64",
                                   "--eval-data", str(phantoms64 / "val"), "--gate-data", str(dicom_gate_set),
                                   "--max-drop", "100", "--min-agreement", "0"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    gates = [report["int8"], report["int8_cpu"], report["engine_gate"]["engine_int8"]]
    for g in gates:
        assert [(r["group"], r["n"]) for r in g["groups"]["manufacturer"]] == [("VendorA", 8), ("VendorB", 8)]
        assert [r["group"] for r in g["groups"]["modality"]] == ["CR", "DX"]
        assert [r["group"] for r in g["groups"]["photometric_interpretation"]] == ["MONOCHROME1", "MONOCHROME2"]
        assert "manufacturer=VendorA (n 8)" in g["small_groups"]  # listed, not hidden
    assert report["gate_data"]["patients_from"].endswith("gate: DICOM PatientID")
    assert report["gate_data"]["search"]["n"] == 16 and report["gate_data"]["gate"]["n"] == 16
    text = " ".join(res.output.split())
    assert "too small to judge: class=normal (n 4)" in text and "manufacturer=VendorB (n 8)" in text
    assert "model.int8.onnx: gate per subgroup" in text and "model.int8.engine: gate per subgroup" in text
    gate = read_manifest(manifest_path(out / "model.int8.engine")).gate
    assert [r["group"] for r in gate["groups"]["manufacturer"]] == ["VendorA", "VendorB"]
