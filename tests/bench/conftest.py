"""Fixtures of the bench tests: a tiny untrained checkpoint, 64-px phantoms and one INT8 export."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bench_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained omsf2_tiny at 64 px with the phantom classes."""
    import torch

    from omsf2 import create_model
    from omsf2.config import PreprocessSpec
    from omsf2.data.synthetic import STAGES
    from omsf2.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("omsf2_tiny", img_size=64, num_classes=len(STAGES)).eval()
    path = tmp_path_factory.mktemp("bench-ckpt") / "tiny.pt"
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
def bench_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 train (the calibration minimum), 4 val and 8 test phantoms at 64 px."""
    from omsf2.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("bench-phantoms") / "data"
    write_dataset(root, 64, seed=5, size=64, n_val=4, n_test=8, workers=1)
    return root


@pytest.fixture(scope="session")
def bench_export(bench_ckpt: Path, bench_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export folder with model.onnx and both INT8 flavours (gate opened: the model is untrained)."""
    from omsf2.export.targets import ExportSpec, run_export

    out = tmp_path_factory.mktemp("bench-export") / "export"
    run_export(
        ExportSpec(
            str(bench_ckpt),
            str(out),
            int8=True,
            calib_data=str(bench_phantoms / "train"),
            calib_count=64,
            eval_data=str(bench_phantoms / "test"),
            max_drop=100.0,
        )
    )
    return out
