"""The phantom generator: deterministic, balanced, staged by opacity profusion."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from omsf2.data import synthetic
from omsf2.data.io import read_image


def test_deterministic_and_independent_of_order() -> None:
    a = synthetic.generate_phantom(7, 5, "val", 96)
    b = synthetic.generate_phantom(7, 5, "val", 96)
    np.testing.assert_array_equal(a.image, b.image)
    c = synthetic.generate_phantom(7, 5, "test", 96)
    assert not np.array_equal(a.image, c.image)  # splits are independent streams
    assert a.patient_id != c.patient_id


def test_image_range_and_stage_rules() -> None:
    counts_by_stage: dict[int, list[int]] = {s: [] for s in range(4)}
    for i in range(16):
        ph = synthetic.generate_phantom(1, i, "train", 96)
        assert ph.image.dtype == np.float32 and ph.image.shape == (96, 96)
        assert ph.image.min() >= 0.0 and ph.image.max() <= 1.0
        assert ph.stage == i % 4
        counts_by_stage[ph.stage].append(int(ph.zone_counts.sum()))
    # Profusion grows with stage, with no overlap between consecutive stages.
    assert max(counts_by_stage[0]) <= 2
    for s in range(3):
        assert max(counts_by_stage[s]) < min(counts_by_stage[s + 1])


def test_opacities_are_visible_in_the_lungs() -> None:
    # Same anatomy stream, different stage: stage III adds bright fine structure.
    hi = [synthetic.generate_phantom(2, i, "train", 128).image for i in (3, 7, 11)]
    lo = [synthetic.generate_phantom(2, i, "train", 128).image for i in (0, 4, 8)]

    def detail(img: np.ndarray) -> float:
        # High-pass energy: opacities are small bright blobs.
        blur = (img[:-2, 1:-1] + img[2:, 1:-1] + img[1:-1, :-2] + img[1:-1, 2:]) / 4
        return float(np.abs(img[1:-1, 1:-1] - blur).mean())

    assert np.mean([detail(x) for x in hi]) > np.mean([detail(x) for x in lo])


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        synthetic.generate_phantom(0, 0, "dev")
    with pytest.raises(ValueError, match=">= 64"):
        synthetic.generate_phantom(0, 0, "train", 32)
    with pytest.raises(ValueError, match=">= 0"):
        list(synthetic.iter_phantoms(-1, 0))


def test_write_dataset_layout_and_labels(tmp_path) -> None:
    out = tmp_path / "ph"
    counts = synthetic.write_dataset(out, 8, seed=1, size=64, n_val=4, n_test=0, workers=1)
    assert counts == {"train": 8, "val": 4, "test": 0}
    assert sorted(p.name for p in (out / "train").iterdir()) == list(synthetic.STAGES)
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and set(rows[0]) == {"file", "label", "split", "patient_id"}
    img = read_image(out / rows[0]["file"])
    ph = synthetic.generate_phantom(1, 0, "train", 64)
    np.testing.assert_allclose(img, ph.image, atol=0.5 / 255 + 1e-6)  # 8-bit quantisation only
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_write_dataset_refuses_to_clobber_and_cleans_up(tmp_path) -> None:
    out = tmp_path / "ph"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty; pass --overwrite"):
        synthetic.write_dataset(out, 4, size=64, workers=1)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="need n >= 4"):
        synthetic.write_dataset(tmp_path / "x", 2, size=64, workers=1)
    assert not (tmp_path / "x").exists()
    synthetic.write_dataset(out, 4, size=64, n_val=4, n_test=4, workers=1, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ph"]
