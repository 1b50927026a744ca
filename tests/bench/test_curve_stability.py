"""bench/common.py's curve_stability: the stability rule of the ablation and stability records."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest


def test_dip_after_the_first_third_and_last_third_mean(bench_script: Callable[[str], ModuleType]) -> None:
    curve_stability = bench_script("common.py").curve_stability
    # 9 epochs: dips in the first third (epochs 1-3) do not count; the best, 95, is at epoch 3 and
    # epoch 7's 65 is the worst later epoch, 30 below it.
    curve = [10, 20, 95, 80, 90, 85, 65, 88, 89]  # epoch 3's 95 is the best even inside the first third
    s = curve_stability([{"macro_f1": v / 100} for v in curve])
    assert s["best_macro_f1"] == pytest.approx(95) and s["best_epoch"] == 3
    assert s["worst_dip_after_first_third"] == pytest.approx(30) and s["worst_dip_epoch"] == 7
    assert s["last_third_mean"] == pytest.approx((65 + 88 + 89) / 3)
    one = curve_stability([{"macro_f1": 0.5}])  # a one-epoch smoke run: no dip, the mean is that epoch
    assert one["worst_dip_after_first_third"] == 0 and one["last_third_mean"] == pytest.approx(50)
