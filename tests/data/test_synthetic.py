"""The phantom generator: deterministic, balanced, staged by opacity profusion."""

from __future__ import annotations

import csv
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

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
    with pytest.raises(ValueError, match="not empty; choose another folder or overwrite it"):
        synthetic.write_dataset(out, 4, size=64, workers=1)
    # overwrite replaces only an earlier phantom dataset, never a folder holding anything else.
    with pytest.raises(ValueError, match="is not an omsf2 phantom dataset"):
        synthetic.write_dataset(out, 4, size=64, workers=1, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="train needs at least 4 phantoms"):
        synthetic.write_dataset(tmp_path / "x", 2, size=64, workers=1)
    assert not (tmp_path / "x").exists()
    ph = tmp_path / "ph2"
    synthetic.write_dataset(ph, 4, size=64, n_val=4, n_test=4, workers=1)
    synthetic.write_dataset(ph, 8, size=64, n_val=4, n_test=4, workers=1, overwrite=True)
    assert len(list((ph / "train").rglob("*.png"))) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ph", "ph2"]


def test_settings_are_checked_before_any_file(tmp_path) -> None:
    for kwargs, msg in (
        ({"size": 100000}, r"phantom size must lie in \[64, 4096\]"),
        ({"n_val": 2}, "val needs 0 .* or at least 4"),
        ({"workers": -1}, "workers must be >= 0"),
    ):
        with pytest.raises(ValueError, match=msg):
            synthetic.write_dataset(tmp_path / "d", 4, **{"size": 64, "workers": 1, **kwargs})
    with pytest.raises(ValueError, match="names no folder"):
        synthetic.write_dataset(Path("."), 4, size=64, workers=1, overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_zero_val_writes_no_val_folder_and_training_splits_train(tmp_path) -> None:
    from omsf2.data.datasets import DataSpec, load_split

    out = tmp_path / "ph"
    synthetic.write_dataset(out, 20, size=64, n_val=0, n_test=0, workers=1)
    assert sorted(p.name for p in out.iterdir()) == ["SOURCE.md", "labels.csv", "train"]
    val = load_split(DataSpec(source=str(out)), "val")
    assert len(val) > 0


def test_folders_follow_the_umask(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        synthetic.write_dataset(tmp_path / "ph", 4, size=64, n_val=0, n_test=0, workers=1)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ph").stat().st_mode) == 0o755


def test_stale_staging_of_a_dead_run_is_removed(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    stale = tmp_path / f".ph.staging-{dead}-abc"
    (stale / "train").mkdir(parents=True)
    live = tmp_path / f".ph.staging-{os.getpid()}-xyz"
    live.mkdir()
    synthetic.write_dataset(tmp_path / "ph", 4, size=64, n_val=0, n_test=0, workers=1)
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_leaves_no_temporary_folder(tmp_path, workers: int) -> None:
    code = (
        "import sys; from omsf2.data.synthetic import write_dataset;"
        f"write_dataset(sys.argv[1], 4000, size=64, n_val=0, n_test=0, workers={workers},"
        " on_image=lambda: print('x', flush=True))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ph")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "x"  # generation is under way
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)  # promptly: the queued images are cancelled, not generated
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []
