"""macro_f1_interval: the bootstrap of macro-F1 over the items a confusion matrix counts."""

from __future__ import annotations

import numpy as np
import pytest

from omsf2.metrics import classification_metrics, macro_f1_interval


def test_it_is_the_bootstrap_of_classification_metrics() -> None:
    """Same draws, computed the slow way: each resample's macro-F1 from classification_metrics."""
    cm = np.array([[5, 1, 0], [2, 6, 1], [0, 0, 4]])
    cells = np.repeat(np.arange(9), cm.ravel())
    draws = cells[np.random.default_rng(3).integers(0, cells.size, size=(40, cells.size))]
    slow = []
    for d in draws:
        y, p = d // 3, d % 3
        slow.append(classification_metrics(y, np.eye(3)[p], ["a", "b", "c"])["macro_f1"])
    lo, hi = np.quantile(slow, [0.025, 0.975])
    assert macro_f1_interval(cm, n_boot=40, seed=3) == pytest.approx((lo, hi))


def test_edges() -> None:
    assert macro_f1_interval([[3, 0], [0, 5]]) == (1.0, 1.0)
    lo, hi = macro_f1_interval([[30, 10], [5, 55]])
    point = classification_metrics(
        np.repeat([0, 0, 1, 1], [30, 10, 5, 55]), np.eye(2)[np.repeat([0, 1, 0, 1], [30, 10, 5, 55])], ["a", "b"]
    )["macro_f1"]
    assert lo < point < hi
    assert macro_f1_interval([[30, 10], [5, 55]]) == (lo, hi)  # seeded
    for bad in ([[1, 2, 3]], [[0, 0], [0, 0]], [[-1, 2], [0, 1]]):
        with pytest.raises(ValueError, match="square confusion matrix"):
            macro_f1_interval(bad)
