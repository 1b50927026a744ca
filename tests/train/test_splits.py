"""Selection set and cross-validation folds: patient-disjoint, stratified; best.pt chosen on the right set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from omsf2.config import Task
from omsf2.data.datasets import LabeledSet, Sample
from omsf2.models.checkpoint import load_checkpoint
from omsf2.train import TrainConfig, train
from omsf2.train.schedule import monitor
from omsf2.train.splits import fold_split, patient_folds, selection_split

CLASSES = ("normal", "stage_I", "stage_II", "stage_III")


def _dataset(per_class: tuple[int, ...], images_per_patient: int = 1) -> LabeledSet:
    samples = []
    for c, n in enumerate(per_class):
        for p in range(n):
            for i in range(images_per_patient):
                samples.append(Sample(f"c{c}-p{p}-i{i}.png", c, None, f"c{c}-p{p}"))
    return LabeledSet(tuple(samples), CLASSES, Task.MULTICLASS, "toy")


def _patients(ds: LabeledSet) -> set[str]:
    return {s.patient for s in ds.samples}


def _counts(ds: LabeledSet) -> list[int]:
    return [sum(1 for s in ds.samples if s.target == c) for c in range(len(CLASSES))]


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35])
def test_selection_split_is_patient_disjoint_and_stratified(fraction: float) -> None:
    ds = _dataset((40, 23, 17, 9))
    rest, sel = selection_split(ds, fraction, seed=5)
    assert not _patients(rest) & _patients(sel)
    assert len(rest) + len(sel) == len(ds)
    for c, (n, k) in enumerate(zip(_counts(ds), _counts(sel), strict=True)):
        assert abs(k - n * fraction) <= 1, (c, n, k)  # within one image of proportional, in every class
    assert "selection set" in sel.description


def test_selection_split_keeps_patients_together() -> None:
    ds = _dataset((12, 8, 6, 4), images_per_patient=3)
    rest, sel = selection_split(ds, 0.25, seed=0)
    assert not _patients(rest) & _patients(sel)
    assert len(sel) == 3 * len(_patients(sel)) and len(rest) == 3 * len(_patients(rest))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_every_patient_is_in_exactly_one_fold_and_folds_are_stratified(k: int) -> None:
    ds = _dataset((31, 20, 14, 11), images_per_patient=2)
    folds = patient_folds(ds, k, seed=1)
    assert len(folds) == k
    seen: list[str] = [p for f in folds for p in _patients(f)]
    assert sorted(seen) == sorted(_patients(ds))  # each patient once, none missing
    for c, n in enumerate(_counts(ds)):
        shares = [_counts(f)[c] for f in folds]
        assert max(shares) - min(shares) <= 2 * 2, (c, shares)  # within one patient (2 images) of equal
        assert abs(sum(shares) - n) == 0
    for i in range(k):
        train, held = fold_split(ds, k, i, seed=1)
        assert _patients(held) == _patients(folds[i]) and not _patients(train) & _patients(held)
        assert len(train) + len(held) == len(ds)


def test_too_many_folds_for_the_patients_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot make 5 patient-level folds"):
        patient_folds(_dataset((2, 1, 1, 1)), 5, seed=0)


def test_best_is_chosen_on_the_selection_set_and_val_is_reported(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=3, select_fraction=0.25, batch_size=2)
    res = train(cfg, tmp_path / "run")
    assert res.selected_on == "select"
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["selected_on"] == "select" and m["select_size"] == 4 and m["train_size"] == 12  # 16 train images
    keys = [monitor(Task.MULTICLASS, {"accuracy": h["select_accuracy"]}, h["select_loss"]) for h in res.history]
    assert res.best_epoch == 1 + max(range(len(keys)), key=lambda i: (keys[i], -i))  # first of the best
    best_rec = res.history[res.best_epoch - 1]
    assert res.best["accuracy"] == best_rec["accuracy"]  # the val figure of the chosen epoch
    assert res.best["select"]["accuracy"] == best_rec["select_accuracy"]
    ck = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ck["selection"]["selected_on"] == "select" and ck["selection"]["select_size"] == 4


def test_selection_default_is_val(small_cfg: TrainConfig, tmp_path: Path) -> None:
    res = train(dataclasses.replace(small_cfg, epochs=1), tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert res.selected_on == "val" and m["selected_on"] == "val" and m["select_size"] == m["val_size"]
    assert "select_accuracy" not in res.history[0]


def test_selection_and_folds_settings_are_checked(small_cfg: TrainConfig) -> None:
    with pytest.raises(ValueError, match=r"selection fraction must lie in \[0, 0.5\]"):
        dataclasses.replace(small_cfg, select_fraction=0.8)
    with pytest.raises(ValueError, match="drop the selection fraction"):
        dataclasses.replace(small_cfg, select_fraction=0.2, folds=3)
    with pytest.raises(ValueError, match="folds must be 0"):
        dataclasses.replace(small_cfg, folds=1)
