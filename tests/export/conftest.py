"""Fixtures of the export tests: 64-px phantoms and one INT8 export (the tiny checkpoint is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def phantoms64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 train (the calibration minimum), 16 val and 16 test phantoms at 64 px."""
    from omsf2.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("phantoms64") / "data"
    write_dataset(root, 64, seed=5, size=64, n_val=16, n_test=16, workers=1)
    return root


@pytest.fixture(scope="session")
def int8_export(tiny_ckpt: Path, phantoms64: Path, tmp_path_factory: pytest.TempPathFactory):
    """One full ``run_export(--int8)`` shared by the tests that only inspect its artifacts."""
    from omsf2.export.targets import ExportSpec, run_export

    out = tmp_path_factory.mktemp("export") / "out"
    return run_export(
        ExportSpec(
            str(tiny_ckpt),
            str(out),
            int8=True,
            calib_data=str(phantoms64 / "train"),
            calib_count=64,
            eval_data=str(phantoms64 / "test"),
            max_drop=100.0,  # an untrained model: this fixture tests plumbing, the gate has its own test
        )
    )
