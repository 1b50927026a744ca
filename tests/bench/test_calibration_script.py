"""bench/calibration.py: disjoint class-stratified calibration parts, and clear errors on bad methods."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from omsf2.export.calibration import PERCENTILE, CalibMethod, ImageSet

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPT = BENCH / "calibration.py"


@pytest.fixture(scope="module")
def script(bench_script: Callable[[str], ModuleType]) -> ModuleType:
    return bench_script("calibration.py")


def test_parts_are_disjoint_and_stratified(script: ModuleType) -> None:
    labels = np.repeat(np.arange(3), [40, 40, 41])
    images = ImageSet(
        np.arange(len(labels), dtype=np.float32).reshape(-1, 1, 1, 1),
        labels,
        tuple(f"img-{i}.png" for i in range(len(labels))),
        ("a", "b", "c"),
        "root",
    )
    parts = script.disjoint_parts(images, 4)
    seen = [p for part in parts for p in part.paths]
    assert len(seen) == len(set(seen)) == len(labels)  # every image in exactly one part
    for part in parts:
        assert all(10 <= n <= 11 for n in part.per_class().values())  # each class dealt out evenly
        idx = [int(p[4:-4]) for p in part.paths]
        assert np.array_equal(part.images[:, 0, 0, 0], np.array(idx, np.float32))  # images follow paths
        assert np.array_equal(part.labels, labels[idx])


def test_methods_parse_with_and_without_a_percentile(script: ModuleType) -> None:
    assert script.parse_method("percentile") == (CalibMethod.PERCENTILE, PERCENTILE)
    assert script.parse_method("percentile:99.9") == (CalibMethod.PERCENTILE, 99.9)
    assert script.parse_method("mse") == (CalibMethod.MSE, PERCENTILE)


@pytest.mark.parametrize(
    ("methods", "message"), [("nope", "unknown calibration method"), ("max:9", "only the percentile")]
)
def test_bad_method_is_one_clear_error(tmp_path: Path, methods: str, message: str) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes(b"")
    (export / "report.json").write_text("{}")
    res = subprocess.run([sys.executable, str(SCRIPT), "--export", str(export), "--methods", methods],
                         text=True, capture_output=True, timeout=120)  # fmt: skip
    assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr
