"""What a checkpoint records about its data: counts per split and class, the split rule, the data's hash."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from omsf2.data.datasets import DataSpec
from omsf2.lineage import data_listing, record_sha256
from omsf2.train.data_record import data_record
from omsf2.train.splits import load_splits


def test_a_folder_with_its_own_val(small_cfg, synth_root: Path) -> None:
    rec = data_record(small_cfg, load_splits(small_cfg))
    assert rec["source"] == str(synth_root.resolve()) and rec["classes"] == [
        "normal",
        "stage_I",
        "stage_II",
        "stage_III",
    ]
    assert rec["splits"]["train"]["n"] == 16 and rec["splits"]["train"]["per_class"] == dict.fromkeys(rec["classes"], 4)
    assert rec["splits"]["val"]["n"] == 8 and rec["splits"]["val"]["patients"] == 8
    assert rec["shared_patients"] == {"train/val": 0}
    rule = rec["split_rule"]
    assert rule["val"] == "the source's own val split" and rule["best_checkpoint_chosen_on"] == "val"
    assert rule["patients_from"].startswith("labels.csv")
    assert rec["listing"] == data_listing(synth_root)


def test_val_carved_by_patient_and_a_selection_set(small_cfg, synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "only-train"
    shutil.copytree(synth_root / "train", root / "train")
    cfg = dataclasses.replace(small_cfg, data=DataSpec(source=str(root), val_fraction=0.25), select_fraction=0.25)
    rec = data_record(cfg, load_splits(cfg))
    assert set(rec["splits"]) == {"train", "val", "select"}
    assert sum(s["n"] for s in rec["splits"].values()) == 16
    assert rec["shared_patients"] == {"train/val": 0, "train/select": 0}
    assert rec["split_rule"]["val"].startswith("0.25 of train's patients per class, moved to val by patient")
    assert rec["split_rule"]["best_checkpoint_chosen_on"].startswith("0.25 of train's patients per class, held out")
    assert rec["split_rule"]["patients_from"].startswith("each image is its own patient")


def test_phantoms_record_their_generator(small_cfg) -> None:
    cfg = dataclasses.replace(small_cfg, data=DataSpec(source="synthetic", synthetic_n=8, synthetic_size=64))
    rec = data_record(cfg, load_splits(dataclasses.replace(cfg, batch_size=2)))
    assert rec["listing"]["kind"] == "synthetic" and rec["listing"]["path"] is None
    assert rec["listing"]["sha256"] == record_sha256({"seed": 0, "train_n": 8, "size": 64})


def test_training_writes_it_into_the_checkpoint(trained_ckpt: Path, synth_root: Path) -> None:
    import torch

    from omsf2.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(trained_ckpt)
    assert ckpt["data_record"]["listing"]["sha256"] == data_listing(synth_root)["sha256"]
    assert ckpt["data_record"]["splits"]["train"]["n"] == 16
    assert ckpt["software"]["torch"] == str(torch.__version__) and ckpt["software"]["omsf2"] == ckpt["omsf2_version"]
