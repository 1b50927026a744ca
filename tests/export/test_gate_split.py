"""Search and gate on different images: the patient split, the trial log, both figures in report.json, the caveats.

Acceptance 1 of issue 24: a default ``--int8`` export holds the search part's and the gate part's
figures apart, and the log of every evaluation proves that no search trial ran on a gate image.
Acceptance 5: a model at chance level is exported with a warning that the gate cannot mean much.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.export.calibration import ImageSet
from omsf2.export.gate import GateSpec, caveats
from omsf2.export.gate_data import gate_data
from omsf2.export.targets import ExportSpec, run_export

CXR_REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "cxr-real"


def _evaluations(caplog: pytest.LogCaptureFixture) -> list[dict]:
    prefix = "evaluation "
    return [json.loads(r.getMessage()[len(prefix) :]) for r in caplog.records
            if r.name == "omsf2.export.int8_search" and r.getMessage().startswith(prefix)]  # fmt: skip


def test_no_search_trial_ever_ran_on_a_gate_image(tiny_ckpt, phantoms64, tmp_path, monkeypatch, caplog) -> None:
    """Full INT8 is made to fail on the search part, so mixed-precision trials run; each is logged with its images."""
    import omsf2.export.gate as gate

    real = gate.judge

    def full_int8_fails_the_search(labels, fp32_logits, logits, spec):  # judge() serves the search only
        rec = real(labels, fp32_logits, logits, spec)
        first = not calls
        calls.append(len(labels))
        return {**rec, "passed": False, "failed_because": ["forced"]} if first else {**rec, "passed": True}

    calls: list[int] = []
    monkeypatch.setattr(gate, "judge", full_int8_fails_the_search)
    caplog.set_level(logging.DEBUG, logger="omsf2.export.int8_search")
    res = run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "out"), int8=True, calib_data=str(phantoms64 / "train"),
                                calib_count=64, eval_data=str(phantoms64 / "test"), max_drop=100.0,
                                min_agreement=0.0))  # fmt: skip
    rep = res.report
    split = rep["gate_data"]
    search_ids = {str(phantoms64 / "test" / p) for p in split["search"]["images"]}
    gate_ids = {str(phantoms64 / "test" / p) for p in split["gate"]["images"]}
    assert len(search_ids) == len(gate_ids) == 8 and not search_ids & gate_ids
    logged = _evaluations(caplog)
    trials = [e for e in logged if e["part"] == "search"]
    assert any(e["what"] == "1 group(s) in float" for e in trials), "the mixed-precision search did not run"
    for e in trials:
        assert set(e["images"]) == search_ids and not set(e["images"]) & gate_ids, e["what"]
    verdicts = [e for e in logged if e["part"] == "gate"]
    assert [e["flavour"] for e in verdicts] == ["int8", "int8_cpu"]  # each flavour judged once, on the gate part
    assert all(set(e["images"]) == gate_ids for e in verdicts)
    assert {e["part"] for e in logged} == {"search", "gate", "calibration"}
    for name in ("int8", "int8_cpu"):
        q = rep[name]
        assert q["figures_on"] == "gate part" and q["eval_count"] == 8 and q["search_count"] == 8
        assert q["search"]["n"] == 8 and {"accuracy_drop", "top1_agreement", "fp32_accuracy"} <= set(q["search"])
    assert rep["int8"]["mixed_precision"]["on"] == "search" and rep["int8"]["float_groups"]


def test_gate_data_is_a_separate_set_and_all_of_eval_data_is_searched(tiny_ckpt, phantoms64, tmp_path) -> None:
    res = run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "out"), int8=True, calib_data=str(phantoms64 / "train"),
                                calib_count=64, eval_data=str(phantoms64 / "val"), gate_data=str(phantoms64 / "test"),
                                max_drop=100.0, min_agreement=0.0))  # fmt: skip
    split = res.report["gate_data"]
    assert split["search"]["n"] == 16 and split["gate"]["n"] == 16 and split["source"].startswith("--gate-data")
    with pytest.raises(ValueError, match="--gate-data shares 16 image"):
        run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "o2"), int8=True, calib_data=str(phantoms64 / "train"),
                              calib_count=64, eval_data=str(phantoms64 / "val"),
                              gate_data=str(phantoms64 / "val")))  # fmt: skip
    assert not (tmp_path / "o2").exists()


def _images(paths: list[str], labels: list[int], root: str, classes: tuple[str, ...]) -> ImageSet:
    n = len(paths)
    return ImageSet(np.zeros((n, 1, 4, 4), np.float32), np.array(labels, np.int64), tuple(paths), classes, root)


def test_the_split_keeps_each_patient_on_one_side(tmp_path) -> None:
    """Patients of several images (labels.csv one folder up, as in cxr-real) never straddle search and gate."""
    classes = ("a", "b")
    rows, paths, labels = ["file,label,patient_id"], [], []
    for i in range(40):
        cls = classes[i % 2]
        f = tmp_path / "val" / cls / f"img{i:03d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")
        rows.append(f"val/{cls}/{f.name},{cls},P{i // 4 * 2 + i % 2:02d}")  # 2 images per patient and class
        paths.append(str(f))
        labels.append(i % 2)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    gd = gate_data(_images(paths, labels, str(tmp_path / "val"), classes), None)
    search, gate = set(gd.search.patients), set(gd.gate.patients)
    assert not search & gate and len(search) == len(gate) == 10
    assert gd.record["patients_from"] == f"patient ids from {tmp_path / 'labels.csv'}"
    assert gd.search.per_class() == gd.gate.per_class() == {"a": 10, "b": 10}


@pytest.mark.skipif(not (CXR_REAL / "labels.csv").is_file(), reason="../shared/data/cxr-real is not here")
def test_cxr_real_val_splits_by_split_group() -> None:
    """On cxr-real the split follows SOURCE.md's split_group (personN, IM-n with NORMAL2-IM-n)."""
    root = CXR_REAL / "val"
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    files = [(str(f), classes.index(f.parent.name)) for f in sorted(root.glob("*/*.png"))]
    gd = gate_data(_images([f for f, _ in files], [y for _, y in files], str(root), classes), None)
    assert not set(gd.search.patients) & set(gd.gate.patients)
    assert len(gd.search) + len(gd.gate) == 150 and abs(len(gd.search) - len(gd.gate)) <= 10
    assert gd.record["patients_from"].endswith("cxr-real/labels.csv")
    import csv

    with (CXR_REAL / "labels.csv").open(newline="") as f:
        groups = {row["split_group"] for row in csv.DictReader(f) if row["split"] == "val"}
    assert set(gd.search.patients) | set(gd.gate.patients) == groups  # 117 groups of the 119 patients


def test_too_few_patients_to_split_is_one_clear_error(tmp_path) -> None:
    paths = [str(tmp_path / f"{i}.png") for i in range(2)]
    with pytest.raises(ValueError, match="too few to split into a search part and a gate part"):
        gate_data(_images(paths, [0, 1], str(tmp_path), ("a", "b")), None)


def test_caveats_name_chance_level_and_too_small_sets() -> None:
    labels = np.repeat([0, 1, 2, 3], 25)
    right = np.eye(4)[labels] * 5.0
    assert caveats(labels, right, GateSpec(max_drop=1.0, min_agreement=0.9)) == []
    at_chance = np.tile([5.0, 0, 0, 0], (100, 1))  # always "class 0": 25 %, the commonest class's share
    [msg] = caveats(labels, at_chance, GateSpec(max_drop=1.0, min_agreement=0.9))
    assert msg.startswith("FP32 is at chance level on the 100 gate images (accuracy 25.0%")
    small = caveats(labels[::5], right[::5], GateSpec(max_drop=0.5, min_agreement=0.98))
    assert "20 gate images cannot decide --min-agreement 98%" in small[0] and "about 189 images" in small[0]
    assert "one gate image is 5.00 points, more than --max-drop 0.5" in small[1]


def test_a_chance_level_model_is_exported_with_a_warning(tiny_ckpt, phantoms64, tmp_path) -> None:
    """Acceptance 5: the untrained model agrees with its INT8 copy, and the export says that means nothing."""
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["export", str(tiny_ckpt), "--out", str(out), "--int8",
                                   "--calib-data", str(phantoms64 / "train"), "--calib-count", "64",
                                   "--eval-data", str(phantoms64 / "test"), "--max-drop", "100",
                                   "--min-agreement", "0"])  # fmt: skip
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert text.count("caution: FP32 is at chance level on the 8 gate images") == 2  # one per flavour
    report = json.loads((out / "report.json").read_text())
    for name in ("int8", "int8_cpu"):
        assert report[name]["caveats"][0].startswith("FP32 is at chance level")


def test_demo_data_has_patients_from_its_labels_csv(phantoms64, tmp_path) -> None:
    """The phantom writer's labels.csv names one patient per image: the split reads it (not 'no patient ids')."""
    from omsf2.config import PreprocessSpec
    from omsf2.export.calibration import load_eval

    copy = tmp_path / "data"
    shutil.copytree(phantoms64, copy)
    ev = load_eval(copy / "test", PreprocessSpec(size=(64, 64)), ("normal", "stage_I", "stage_II", "stage_III"))
    gd = gate_data(ev, None)
    assert gd.record["patients_from"] == f"patient ids from {(copy / 'labels.csv').resolve()}"
