from __future__ import annotations

import time

import pytest

from omsf2.bench.timing import Measured, RoundsPlan, Stats, interleaved_rounds, paired_speedup, percentile


class FakeClock:
    """A nanosecond clock that only moves when a fake workload 'runs'."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t

    def work(self, ms: float) -> None:
        self.t += int(ms * 1e6)


def test_percentiles_of_known_values():
    s = Stats.from_ms([float(i) for i in range(1, 101)])
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert (s.min_ms, s.max_ms, s.n) == (1.0, 100.0, 100)
    assert s.mean_ms == pytest.approx(50.5)
    assert s.std_ms == pytest.approx(28.866, rel=1e-3)


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        percentile([1.0], 1.5)


def test_fake_workload_with_known_times_gives_its_percentiles():
    clock = FakeClock()
    # 90 calls of 2 ms and 10 of 10 ms, in a fixed order: p50 2 ms, p99 10 ms, p90 between.
    pattern = iter([10.0 if i % 10 == 9 else 2.0 for i in range(100)])
    m = interleaved_rounds(
        {"w": lambda: clock.work(next(pattern, 2.0))}, RoundsPlan(warmup_s=0, iters=99, rounds=3), clock=clock
    )["w"]
    st = m.stats
    assert st.n == 99
    assert st.p50_ms == pytest.approx(2.0)
    assert st.p99_ms == pytest.approx(10.0)
    assert st.min_ms == pytest.approx(2.0) and st.max_ms == pytest.approx(10.0)


def test_real_sleeps_are_timed_within_tolerance():
    m = interleaved_rounds({"sleep": lambda: time.sleep(0.004)}, RoundsPlan(warmup_s=0, iters=12, rounds=3))["sleep"]
    # perf_counter_ns around a 4 ms sleep: never shorter, and on a loaded 2-core box within a few ms.
    assert 4.0 <= m.stats.p50_ms < 12.0
    assert m.stats.min_ms >= 4.0


def test_time_based_rounds_give_every_backend_equal_slices():
    clock = FakeClock()
    calls = {"slow": lambda: clock.work(4.0), "fast": lambda: clock.work(1.0)}
    got = interleaved_rounds(calls, RoundsPlan(warmup_s=0.01, duration_s=0.2, rounds=4), clock=clock)
    assert len(got["slow"].round_medians_ms) == len(got["fast"].round_medians_ms) == 4
    # 50 ms slices: ~12 calls of 4 ms vs ~50 calls of 1 ms per round.
    assert got["fast"].stats.n == pytest.approx(4 * got["slow"].stats.n, rel=0.15)


def _load_injected(rounds_hit: set[int], who: set[str], factor: float) -> dict[str, Measured]:
    """torch takes 4 ms and fast 2 ms; in ``rounds_hit`` the backends in ``who`` run ``factor`` x slower."""
    clock = FakeClock()
    state = {"round": 0}

    def make(name: str, ms: float):
        return lambda: clock.work(ms * (factor if state["round"] in rounds_hit and name in who else 1.0))

    def on_round(r: int, name: str) -> None:
        if name == "fast":  # the last backend of round r: the next call belongs to round r + 1
            state["round"] = r + 1

    calls = {"torch": make("torch", 4.0), "fast": make("fast", 2.0)}
    plan = RoundsPlan(warmup_s=0, iters=35, rounds=7)
    return interleaved_rounds(calls, plan, clock=clock, on_round=on_round)


def test_load_burst_hitting_all_backends_keeps_the_ratio():
    m = _load_injected({1, 2}, {"torch", "fast"}, 3.0)
    assert paired_speedup(m["torch"], m["fast"]) == pytest.approx(2.0)
    assert m["fast"].noisy  # the spread says the machine was busy


def test_delay_injected_into_one_backend_in_some_rounds_is_still_compared_fairly():
    m = _load_injected({2, 5}, {"fast"}, 3.0)
    # Two slowed rounds out of seven: the paired median ignores them; a plain ratio of means does not.
    assert paired_speedup(m["torch"], m["fast"]) == pytest.approx(2.0)
    naive = m["torch"].stats.mean_ms / m["fast"].stats.mean_ms
    assert naive < 1.5


def test_rounds_plan_rejects_bad_values():
    with pytest.raises(ValueError, match="--iters"):
        RoundsPlan(iters=0)
    with pytest.raises(ValueError, match="--duration-s"):
        RoundsPlan(duration_s=0)
    with pytest.raises(ValueError, match="--warmup-s"):
        RoundsPlan(warmup_s=-1)
