"""``omsf2 trace BUNDLE``: a full chain verifies; a changed calibration folder, checkpoint or card is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from omsf2.cli.app import app

runner = CliRunner()
STEPS = ("checkpoint:", "ONNX:", "calibration set:", "quantized ONNX:", "gate:", "engine:", "bundle:")


def trace(bundle: Path):
    return runner.invoke(app, ["trace", str(bundle)], env={"COLUMNS": "200"})


def _errors(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.strip()]


def _trace_with(path: Path, extra: bytes, bundle: Path):
    """The trace of ``bundle`` while ``path`` has ``extra`` appended (put back afterwards); exit 1 expected."""
    original = path.read_bytes()
    path.write_bytes(original + extra)
    try:
        res = trace(bundle)
    finally:
        path.write_bytes(original)
    assert res.exit_code == 1
    return res


def test_a_full_chain_verifies(evidence_chain: dict[str, Path]) -> None:
    res = trace(evidence_chain["bundle"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"bundle {evidence_chain['bundle']}: tiny 1.0.0, manifest sha256 ")
    assert [next(ln for ln in lines if ln.startswith(s)).split(":")[0] + ":" for s in STEPS] == list(STEPS)
    assert "CHANGED" not in res.stdout and "not recorded" not in res.stdout and not res.stderr.strip()
    assert f"calibration folder {evidence_chain['calib']} " in res.stdout
    assert f"checkpoint {evidence_chain['checkpoint']} " in res.stdout
    assert "gate result" in res.stdout and "[int8 passed, int8_cpu passed] (verified)" in res.stdout
    assert lines[-1].startswith("chain holds: no recorded hash differs")


def test_a_file_added_to_the_calibration_folder_is_named(evidence_chain: dict[str, Path]) -> None:
    calib = evidence_chain["calib"]
    extra = calib / "normal" / "added-after-export.png"
    shutil.copy2(next((calib / "normal").iterdir()), extra)
    try:
        res = trace(evidence_chain["bundle"])
    finally:
        extra.unlink()
    assert res.exit_code == 1
    errors = _errors(res)
    assert len(errors) == 1, res.stderr
    assert errors[0].startswith(
        f"error: calibration set: calibration folder '{calib}' changed since the export (sha256 "
    )
    assert "recorded," in errors[0] and errors[0].endswith(" now)")
    assert trace(evidence_chain["bundle"]).exit_code == 0  # put back: the chain holds again


def test_a_modified_calibration_image_is_named_once(evidence_chain: dict[str, Path]) -> None:
    image = sorted((evidence_chain["calib"] / "stage_II").iterdir())[0]
    res = _trace_with(image, b"\0", evidence_chain["bundle"])
    errors = _errors(res)
    # the folder and the set drawn from it both changed: one line for the step, naming both
    assert len(errors) == 1 and errors[0].startswith("error: calibration set: calibration folder "), res.stderr
    assert errors[0].endswith("; calibration set changed too")


def test_a_changed_checkpoint_is_named(evidence_chain: dict[str, Path]) -> None:
    ckpt = evidence_chain["checkpoint"]
    res = _trace_with(ckpt, b"changed", evidence_chain["bundle"])
    errors = _errors(res)
    assert len(errors) == 1, res.stderr
    assert errors[0].startswith(f"error: checkpoint: checkpoint '{ckpt}' changed since the export (sha256 ")
    assert "checkpoint" in res.stdout and "(CHANGED)" in res.stdout


def test_changed_training_data_is_named(evidence_chain: dict[str, Path]) -> None:
    extra = evidence_chain["data"] / "added-after-training.txt"
    extra.write_text("x")
    try:
        res = trace(evidence_chain["bundle"])
    finally:
        extra.unlink()
    assert res.exit_code == 1
    errors = _errors(res)
    assert len(errors) == 1, res.stderr
    assert errors[0].startswith(f"error: checkpoint: training data '{evidence_chain['data']}' changed since training")


def test_what_is_not_on_disk_is_reported_not_failed(evidence_chain: dict[str, Path]) -> None:
    export, calib = evidence_chain["export"], evidence_chain["calib"]
    moved = [(export, export.with_name("export.moved")), (calib, calib.with_name("calib.moved"))]
    for src, dst in moved:
        src.rename(dst)
    try:
        res = trace(evidence_chain["bundle"])
    finally:
        for src, dst in moved:
            dst.rename(src)
    assert res.exit_code == 0, res.output
    assert "calibration folder" in res.stdout and "not on disk (not verified)" in res.stdout
    assert "model.onnx" in res.stdout and "(verified, bundle copy)" in res.stdout  # the bundle holds its own copy
    assert "export report" in res.stdout and "CHANGED" not in res.stdout


def test_an_edited_model_card_is_refused_in_one_line(evidence_chain: dict[str, Path], tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(evidence_chain["bundle"], tmp_path / "bundle"))
    card = json.loads((bundle / "model_card.json").read_text())
    card["evaluation"]["fp32"]["accuracy"] = 0.99
    (bundle / "model_card.json").write_text(json.dumps(card, indent=2))
    res = trace(bundle)
    assert res.exit_code == 1
    assert _errors(res) == [
        f"error: bundle '{bundle}': 'model_card.json' does not match its sha256 in manifest.json (file changed)"
    ]
    assert not res.stdout.strip()


def test_a_folder_that_is_not_a_bundle_is_one_line(tmp_path: Path) -> None:
    res = trace(tmp_path)
    assert res.exit_code == 1 and len(_errors(res)) == 1 and _errors(res)[0].startswith("error: ")
