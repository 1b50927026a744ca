"""The model card: every number equals the record it came from, and the Markdown is the JSON rendered.

Each test runs on two chains: phantoms, and cxr-real (real radiographs, issue 26's acceptance 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omsf2.fileio import sha256_file
from omsf2.lineage import data_listing
from omsf2.metrics import macro_f1_interval, wilson_interval
from omsf2.runtime.bundle import BundleSpec, load_bundle, make_bundle
from omsf2.runtime.model_card import CARD_JSON, CARD_MD, NOT_RECORDED, build_card
from omsf2.runtime.model_card_md import f4, interval, pct, render_markdown


@pytest.fixture(params=["phantoms", "cxr-real"])
def chain(request: pytest.FixtureRequest) -> dict[str, Path]:
    """The whole chain (data -> checkpoint -> INT8 export -> bundle) on phantoms, then on cxr-real."""
    return dict(request.getfixturevalue("evidence_chain" if request.param == "phantoms" else "cxr_chain"))


def _split_counts(root: Path, split: str) -> dict[str, int]:
    """Images per class on disk in ``root/split/<class>/``."""
    return {d.name: sum(1 for f in d.iterdir() if f.is_file()) for d in sorted((root / split).iterdir()) if d.is_dir()}


def _load(chain: dict[str, Path]) -> tuple[dict, dict, dict]:
    """(card, report.json of the export, manifest)."""
    card = json.loads((chain["bundle"] / CARD_JSON).read_text())
    report = json.loads((chain["export"] / "report.json").read_text())
    manifest = json.loads((chain["bundle"] / "manifest.json").read_text())
    return card, report, manifest


def test_card_files_are_in_the_bundle_and_hashed(chain: dict[str, Path]) -> None:
    b = chain["bundle"]
    files = load_bundle(b).metadata["files"]
    for name in (CARD_JSON, CARD_MD):
        assert files[name] == sha256_file(b / name)
    card = json.loads((b / CARD_JSON).read_text())
    assert card["format"] == "omsf2-model-card"
    assert "Mitchell" in card["follows"][0]["citation"] and "January 2025" in card["follows"][1]["citation"]
    assert set(card["follows"][0]["sections"]) >= {"Model Details", "Intended Use", "Training Data", "Metrics"}
    use = card["intended_use"]["intended_use"]  # the default names the bundle's own classes
    classes = load_bundle(b).classes
    if tuple(classes) == ("normal", "stage_I", "stage_II", "stage_III"):
        assert "staging of pneumoconiosis" in use
    else:
        assert f"classification into {', '.join(classes)}" in use and "pneumoconiosis" not in use


def test_evaluation_numbers_equal_report_json(chain: dict[str, Path]) -> None:
    card, report, _ = _load(chain)
    gate = report["int8"]
    fp32 = card["evaluation"]["fp32"]
    assert fp32["accuracy"] == gate["fp32_accuracy"] and fp32["macro_f1"] == gate["fp32_macro_f1"]
    assert fp32["accuracy_ci95"] == gate["fp32_accuracy_ci95"]
    assert fp32["macro_f1_ci95"] == gate["fp32_macro_f1_ci95"]
    assert fp32["per_class_recall"] == gate["fp32_per_class_recall"]
    assert fp32["confusion"] == gate["fp32_confusion"] and fp32["n"] == gate["eval_count"]
    # ... and report.json's record is itself consistent: the matrix counts the gate images, its intervals
    # are the metrics module's.
    cm = np.asarray(gate["fp32_confusion"])
    assert cm.sum() == gate["eval_count"] == report["gate_data"]["gate"]["n"]
    assert np.trace(cm) / cm.sum() == pytest.approx(gate["fp32_accuracy"])
    assert gate["fp32_accuracy_ci95"] == list(wilson_interval(int(np.trace(cm)), int(cm.sum())))
    assert gate["fp32_macro_f1_ci95"] == list(macro_f1_interval(cm))
    gate_set = card["evaluation"]["gate_set"]
    for key in ("data_dir", "n", "patients", "per_class", "sha256"):
        assert gate_set[key] == report["gate_data"]["gate"][key]
    rows = [(r["attribute"], r["group"], r["n"], r["fp32_accuracy"]) for r in card["evaluation"]["subgroups"]]
    assert rows == [(a, r["group"], r["n"], r["fp32_accuracy"]) for a, rs in gate["groups"].items() for r in rs]


def test_each_gate_equals_its_record(chain: dict[str, Path]) -> None:
    card, report, manifest = _load(chain)
    assert [g["flavour"] for g in card["int8_gates"]] == ["int8", "int8_cpu"]
    for g in card["int8_gates"]:
        rec = report[g["flavour"]]
        for key in (
            "file",
            "passed",
            "eval_count",
            "eval_mode",
            "accuracy_drop",
            "accuracy_drop_ci95",
            "top1_agreement",
            "top1_agreement_ci95",
            "flipped",
            "max_drop",
            "min_agreement",
            "caveats",
        ):
            assert g[key] == rec[key], key
        assert g["accuracy"] == rec["int8_accuracy"] and g["macro_f1"] == rec["int8_macro_f1"]
        assert g["min_group_agreement"] == "off" and rec["min_group_agreement"] is None
        assert g["in_bundle"] == (rec["file"] in manifest["artifacts"].values())
        assert [r["top1_agreement"] for r in g["groups"]] == [
            r["top1_agreement"] for rs in rec["groups"].values() for r in rs
        ]
        texts = [lim["text"] for lim in card["limitations"]]
        assert all(f"{g['flavour']}: {c}." in texts for c in rec["caveats"])  # each caveat is a limitation


def test_monitoring_plan_holds_the_bounds_the_node_monitor_uses(chain: dict[str, Path]) -> None:
    from omsf2.serve.int8_monitor import gate_bound

    card, report, manifest = _load(chain)
    shipped = [g for g in card["int8_gates"] if g["in_bundle"] and g["passed"]]
    bounds = card["post_deployment_monitoring"]["bounds"]
    assert [(b["flavour"], b["file"], b["min_agreement"]) for b in bounds] == [
        (g["flavour"], g["file"], report[g["flavour"]]["min_agreement"]) for g in shipped
    ]
    for b in bounds:  # the node's monitor reads the same records from the manifest
        if b["min_agreement"] > 0:
            assert gate_bound(manifest, b["file"]).overall == b["min_agreement"]
        else:  # these chains open the gate (min_agreement 0): nothing for the monitor to hold INT8 to
            with pytest.raises(ValueError, match="set no agreement bound"):
                gate_bound(manifest, b["file"])
    md = (chain["bundle"] / CARD_MD).read_text()
    assert "omsf2 serve dicom --monitor FRACTION" in md and all(f"| {b['file']} |" in md for b in bounds)


def test_training_facts_equal_the_checkpoint(chain: dict[str, Path]) -> None:
    from omsf2.models.checkpoint import load_checkpoint

    card, report, _ = _load(chain)
    ckpt = load_checkpoint(chain["checkpoint"])
    rec = ckpt["data_record"]
    data = card["training_data"]
    assert data["splits"] == rec["splits"] and data["split_rule"] == rec["split_rule"]
    assert data["listing"]["sha256"] == rec["listing"]["sha256"] == data_listing(chain["data"])["sha256"]
    for split in ("train", "val"):  # the counts are those of the data on disk
        on_disk = _split_counts(chain["data"], split)
        assert data["splits"][split]["per_class"] == on_disk and data["splits"][split]["n"] == sum(on_disk.values())
    assert data["shared_patients"] == {"train/val": 0}
    assert card["recipe"]["train_config"] == ckpt["train_config"]
    val = card["evaluation"]["validation"]
    for key in ("accuracy", "macro_f1", "confusion", "per_class_recall", "epoch", "n"):
        assert val[key] == ckpt["metrics"][key], key
    assert card["software"]["training"] == ckpt["software"] and card["software"]["export"] == report["software"]
    sha = sha256_file(chain["checkpoint"])
    assert card["model_details"]["checkpoint_sha256"] == report["checkpoint"]["sha256"] == sha
    assert card["model_details"]["architecture"] == ckpt["model_config"]


def test_trace_section_holds_the_recorded_hashes(chain: dict[str, Path]) -> None:
    card, report, manifest = _load(chain)
    steps = [link["step"] for link in card["trace"]]
    assert steps == ["checkpoint", "ONNX", "calibration set", "quantized ONNX", "gate", "bundle"]
    assert [link["step"] for link in manifest["trace"]] == steps
    by_step = {link["step"]: link for link in card["trace"]}
    assert by_step["ONNX"]["output"][0]["sha256"] == report["artifacts"]["onnx"]["sha256"]
    assert by_step["calibration set"]["input"][0]["sha256"] == report["calibration"]["folder"]["sha256"]
    assert by_step["calibration set"]["output"][0]["sha256"] == report["calibration"]["set_sha256"]
    assert by_step["gate"]["input"][0]["sha256"] == report["gate_data"]["gate"]["sha256"]
    assert by_step["bundle"]["input"][0]["sha256"] == sha256_file(chain["export"] / "report.json")
    assert "names" not in by_step["gate"]["input"][0] and manifest["trace"][4]["input"][0]["names"]


def test_markdown_is_the_json_rendered(chain: dict[str, Path]) -> None:
    card, _, _ = _load(chain)
    md = (chain["bundle"] / CARD_MD).read_text()
    assert md == render_markdown(card)
    fp32 = card["evaluation"]["fp32"]
    assert f"| accuracy | {pct(fp32['accuracy'])} | {interval(fp32['accuracy_ci95'])} |" in md
    assert f"| macro-F1 | {f4(fp32['macro_f1'])} | {interval(fp32['macro_f1_ci95'], 1.0, 4, '')} |" in md
    for g in card["int8_gates"]:
        assert f"| {g['flavour']} | {g['file']} | yes | passed | {g['eval_count']} |" in md
        assert interval(g["top1_agreement_ci95"]) in md
    for lim in card["limitations"]:
        assert lim["text"] in md
    assert "Model Cards for Model Reporting" in md and "January 2025" in md
    assert card["training_data"]["listing"]["sha256"] in md


def test_facts_an_old_checkpoint_lacks_read_not_recorded(tiny_bundle: Path) -> None:
    """An untrained checkpoint written outside omsf2 train, exported without --int8: no data, recipe or gate."""
    card = json.loads((tiny_bundle / CARD_JSON).read_text())
    assert card["training_data"]["splits"] == NOT_RECORDED and card["training_data"]["listing"] == NOT_RECORDED
    assert card["recipe"]["train_config"] == NOT_RECORDED
    assert card["evaluation"]["fp32"] == NOT_RECORDED and card["evaluation"]["validation"] == NOT_RECORDED
    assert card["int8_gates"] == []
    texts = [lim["text"] for lim in card["limitations"]]
    assert any("No accuracy gate ran" in t for t in texts)
    assert any(t.startswith("training_data.splits was not recorded") for t in texts)
    assert "not recorded" in (tiny_bundle / CARD_MD).read_text()


def test_a_report_from_before_the_evidence_pack_still_makes_a_card(tiny_export: Path, tmp_path: Path) -> None:
    """report.json of an older omsf2: no training facts, software, trace or lineage fields."""
    export = Path(tmp_path / "old")
    export.mkdir()
    report = json.loads((tiny_export / "report.json").read_text())
    for key in ("training", "software", "trace"):
        report.pop(key)
    report["checkpoint"].pop("resolved")
    (export / "report.json").write_text(json.dumps(report))
    (export / "model.onnx").write_bytes((tiny_export / "model.onnx").read_bytes())
    b = make_bundle(BundleSpec(str(export), str(tmp_path / "b"), name="old", version="0.9"))
    card = json.loads((b.root / CARD_JSON).read_text())
    assert card["software"]["training"] == NOT_RECORDED and card["software"]["export"] == {
        "omsf2": report["omsf2_version"]
    }
    assert card["training_data"]["source"] == NOT_RECORDED
    assert render_markdown(card) == (b.root / CARD_MD).read_text()
    direct = build_card({**b.metadata, "trace": []}, report, "0" * 64)
    assert direct["model_details"]["architecture"] == NOT_RECORDED
