"""Confidence intervals of the INT8 gate: Wilson for a proportion, paired bootstrap for a difference."""

from __future__ import annotations

import numpy as np
import pytest

from omsf2.metrics import paired_bootstrap_interval, wilson_interval


def test_wilson_matches_published_values_and_stays_informative_at_the_edges() -> None:
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)  # Newcombe (1998)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    lo, hi = wilson_interval(400, 400)
    assert hi == 1.0 and 0.99 < lo < 1.0  # 400 of 400 still leaves room below 100 %
    lo99, hi99 = wilson_interval(8, 10, level=0.99)
    assert lo99 < 0.4902 and hi99 > 0.9433
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence level"):
        wilson_interval(1, 10, level=1.0)


def test_paired_bootstrap_is_seeded_and_covers_the_mean() -> None:
    diff = np.r_[np.ones(8), -np.ones(2), np.zeros(390)]  # 8 answers lost, 2 gained: drop 1.5 points
    lo, hi = paired_bootstrap_interval(diff)
    assert lo <= diff.mean() <= hi and hi - lo <= 0.035 and lo >= 0.0
    assert paired_bootstrap_interval(diff) == (lo, hi)  # reproducible
    assert paired_bootstrap_interval(np.zeros(50)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap_interval(np.array([]))


def test_images_to_show_is_where_a_perfect_record_first_reaches_the_bound() -> None:
    from omsf2.metrics import images_to_show

    for bound, expected in ((0.9, 35), (0.98, 189), (0.99, 381)):
        n = images_to_show(bound)
        assert n == expected
        assert wilson_interval(n, n)[0] >= bound > wilson_interval(n - 1, n - 1)[0]
    assert images_to_show(1.0) is None and images_to_show(0.0) == 0
