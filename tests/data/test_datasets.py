"""Dataset sources, patient-level splits and the torch loader."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omsf2.config import PreprocessSpec, Task, UncertainPolicy
from omsf2.data.datasets import (
    CHEXPERT_LABELS,
    DataSpec,
    load_sample,
    load_split,
    patient_split,
    read_chexpert_csv,
)
from omsf2.data.loader import BatchSource, epoch_order, materialize

SPEC = PreprocessSpec(size=(64, 64))


def _png(path: Path, value: int = 128, size: tuple[int, int] = (40, 50)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_folder_splits_and_classes(synth_root: Path) -> None:
    tr = load_split(DataSpec(source=str(synth_root)), "train")
    va = load_split(DataSpec(source=str(synth_root)), "val")
    assert tr.classes == ("normal", "stage_I", "stage_II", "stage_III")
    assert len(tr) == 16 and len(va) == 8 and tr.task is Task.MULTICLASS
    assert tr.class_counts() == [4, 4, 4, 4]
    # labels.csv gives patient ids.
    assert tr.samples[0].patient.startswith("phantom-3-train-")


def test_folder_without_val_is_split_by_patient(tmp_path: Path) -> None:
    for c in ("a", "b"):
        for p in range(10):
            for k in range(2):  # two images per patient
                _png(tmp_path / "train" / c / f"{c}{p}_{k}.png")
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "patient_id"])
        for c in ("a", "b"):
            for p in range(10):
                for k in range(2):
                    w.writerow([f"train/{c}/{c}{p}_{k}.png", f"{c}{p}"])
    spec = DataSpec(source=str(tmp_path), val_fraction=0.3, split_seed=1)
    tr, va = load_split(spec, "train"), load_split(spec, "val")
    assert len(tr) + len(va) == 40
    assert not {s.patient for s in tr.samples} & {s.patient for s in va.samples}
    assert [sum(1 for s in va.samples if s.target == c) for c in (0, 1)] == [
        6,
        6,
    ]  # stratified: 3 patients each
    assert [s.source for s in load_split(spec, "val").samples] == [s.source for s in va.samples]  # deterministic


@pytest.mark.parametrize(
    ("setup", "msg"),
    [
        (lambda r: None, "is empty"),
        (lambda r: (r / "val").mkdir(), "no 'train' split"),
        (lambda r: (r / "train" / "a").mkdir(parents=True), "at least 2"),
        (lambda r: ((r / "train" / "a").mkdir(parents=True), (r / "train" / "b").mkdir()), "holds no images"),
    ],
    ids=["empty folder", "no train split", "one class", "class folder with no images"],
)
def test_bad_folders(tmp_path: Path, setup, msg: str) -> None:
    root = tmp_path / "d"
    root.mkdir()
    setup(root)
    if "no images" in msg:
        _png(root / "train" / "a" / "x.png")
    with pytest.raises(ValueError, match=msg):
        load_split(DataSpec(source=str(root)), "train")


def test_missing_path_and_mismatched_val_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_split(DataSpec(source=str(tmp_path / "nope")), "train")
    for split, classes in (("train", "ab"), ("val", "ac")):
        for c in classes:
            _png(tmp_path / split / c / "x.png")
    with pytest.raises(ValueError, match=r"classes of .* differ from the train split's"):
        load_split(DataSpec(source=str(tmp_path)), "val")
    with pytest.raises(ValueError, match="no 'test' split"):
        load_split(DataSpec(source=str(tmp_path)), "test")


def test_synthetic_split() -> None:
    spec = DataSpec(source="synthetic", synthetic_n=8, synthetic_size=64)
    tr, te = load_split(spec, "train"), load_split(spec, "test")
    assert len(tr) == 8 and len(te) == 4
    x = load_sample(tr.samples[1], SPEC)
    assert x.shape == (1, 64, 64) and x.dtype == np.float32


def _chexpert(root: Path, rows: list[list[str]], name: str = "train.csv") -> Path:
    d = root / "CheXpert-v1.0-small"
    for r in rows:
        _png(root / r[0])
    with open(d / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Path", "Sex", *CHEXPERT_LABELS])
        w.writerows(rows)
    return d


def test_chexpert_policies(tmp_path: Path) -> None:
    p = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    q = "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg"
    r = "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg"
    t = "CheXpert-v1.0-small/train/patient00004/study2/view1_frontal.jpg"
    root = _chexpert(
        tmp_path,
        [
            [p, "F", "1", "-1", "", "0", "-1.0"],
            [q, "M", "0", "1", "1", "", "0"],
            [r, "M", "1", "0", "0", "", "0"],
            [t, "F", "0", "1", "0", "", "1"],
        ],
    )
    ones = read_chexpert_csv(root / "train.csv", UncertainPolicy.ONES)
    assert ones.task is Task.MULTILABEL and ones.classes == CHEXPERT_LABELS
    assert ones.samples[0].target == (1.0, 1.0, 0.0, 0.0, 1.0) and all(ones.samples[0].mask or ())
    assert ones.samples[0].patient == "patient00001"
    zeros = read_chexpert_csv(root / "train.csv", UncertainPolicy.ZEROS)
    assert zeros.samples[0].target == (1.0, 0.0, 0.0, 0.0, 0.0)
    ign = read_chexpert_csv(root / "train.csv", UncertainPolicy.IGNORE)
    assert ign.samples[0].mask == (True, False, False, True, False)
    # Loaded through load_split: no valid.csv -> a patient split of train.csv.
    spec = DataSpec(source=str(root), val_fraction=0.5)
    tr, va = load_split(spec, "train"), load_split(spec, "val")
    assert len(tr) == len(va) == 2 and not {s.patient for s in tr.samples} & {s.patient for s in va.samples}


def test_chexpert_bad_csv(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("Path,Edema\na.png,1\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_chexpert_csv(bad, UncertainPolicy.ONES)
    p = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    root = _chexpert(tmp_path, [[p, "F", "2", "", "", "", ""]])
    with pytest.raises(ValueError, match="line 2, column 'Atelectasis'"):
        read_chexpert_csv(root / "train.csv", UncertainPolicy.ONES)


def test_patient_split_rejects_impossible(synth_root: Path) -> None:
    one = load_split(DataSpec(source=str(synth_root)), "train")
    with pytest.raises(ValueError, match="cannot split"):
        patient_split(one.__class__(one.samples[:1], one.classes, one.task, "x"), 0.2, 0)


def test_loader_cached_equals_streamed(synth_root: Path) -> None:
    ds = load_split(DataSpec(source=str(synth_root)), "val")
    cached = materialize(ds, SPEC, workers=0, batch_size=3)
    assert cached.shape == (8, 1, 64, 64)
    order = [[5, 1, 2], [7, 0]]
    a = list(BatchSource(ds, SPEC, 0, cached).batches(order))
    b = list(BatchSource(ds, SPEC, 0, None).batches(order))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.x, y.x)
        assert x.y.tolist() == y.y.tolist() == [ds.samples[i].target for i in x.index.tolist()]


def test_epoch_order_is_seeded_and_balanced() -> None:
    o1 = epoch_order(10, 3, torch.Generator().manual_seed(4))
    o2 = epoch_order(10, 3, torch.Generator().manual_seed(4))
    assert o1 == o2 and len(o1) == 3 and all(len(b) == 3 for b in o1)
    assert len({i for b in o1 for i in b}) == 9
    w = np.array([1.0] * 9 + [0.0])  # sample 9 has weight 0: never drawn
    ob = epoch_order(10, 5, torch.Generator().manual_seed(0), w)
    assert 9 not in {i for b in ob for i in b}


def test_corrupt_image_in_split_fails_with_its_name(tmp_path: Path, synth_root: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(synth_root, root)
    bad = root / "val" / "normal" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    ds = load_split(DataSpec(source=str(root)), "val")
    with pytest.raises(ValueError, match=r"broken\.png"):
        materialize(ds, SPEC, workers=0)


def test_open_source_caches_only_within_budget(synth_root: Path) -> None:
    from omsf2.data.loader import cache_bytes, open_source

    ds = load_split(DataSpec(source=str(synth_root)), "val")
    loads: list[int] = []
    inside = open_source(ds, SPEC, 0, cache_bytes(ds, SPEC), on_load=lambda: loads.append(1))
    assert inside.cached is not None and loads == [1]
    outside = open_source(ds, SPEC, 0, cache_bytes(ds, SPEC) - 1, on_load=lambda: loads.append(2))
    assert outside.cached is None and loads == [1]


def test_a_split_with_its_own_folder_needs_no_train(tmp_path: Path, synth_root: Path) -> None:
    from omsf2.data.datasets import DataSpec, load_split

    root = tmp_path / "only-test"
    shutil.copytree(synth_root / "test", root / "test")
    ds = load_split(DataSpec(source=str(root)), "test")
    assert len(ds) == 8 and ds.classes == ("normal", "stage_I", "stage_II", "stage_III")
    with pytest.raises(ValueError, match="no 'train' split"):
        load_split(DataSpec(source=str(root)), "val")


def test_an_unreadable_labels_csv_is_named(tmp_path: Path, synth_root: Path) -> None:

    from omsf2.data.datasets import DataSpec, load_split

    root = tmp_path / "d"
    shutil.copytree(synth_root, root)
    (root / "labels.csv").write_bytes(b"\xff\xfe\x00bad\x00" * 50)
    with pytest.raises(ValueError, match=r"cannot read '.*labels.csv': not a valid CSV"):
        load_split(DataSpec(source=str(root)), "train")
