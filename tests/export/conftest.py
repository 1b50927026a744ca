"""Fixtures of the export tests: a tiny untrained checkpoint, 64-px phantoms and one INT8 export."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained omsf2_tiny at 64 px with the phantom classes (export needs no training)."""
    import torch

    from omsf2 import create_model
    from omsf2.config import PreprocessSpec
    from omsf2.data.synthetic import STAGES
    from omsf2.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("omsf2_tiny", img_size=64, num_classes=len(STAGES)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(
        path,
        {
            "model_config": model.cfg.to_dict(),
            "classes": list(STAGES),
            "task": "multiclass",
            "preprocess": PreprocessSpec(size=(64, 64)).to_dict(),
            "model": model.state_dict(),
        },
    )
    return path


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
