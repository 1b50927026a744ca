"""Fixtures of the bench tests: a tiny untrained checkpoint, 64-px phantoms and one INT8 export."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(filename: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the scripts import bench/common.py as `common`
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{Path(filename).stem}", BENCH / filename)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="session")
def bench_script() -> Callable[[str], ModuleType]:
    """Loads a script of bench/ (``bench_script("ablation.py")``) as a module, as it runs from there."""
    return _load


@pytest.fixture(scope="session")
def bench_ckpt(tiny_ckpt: Path) -> Path:
    """An untrained omsf2_tiny at 64 px with the phantom classes (the suite's shared ``tiny_ckpt``)."""
    return tiny_ckpt


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
