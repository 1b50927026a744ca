"""Timing statistics and interleaved rounds: how ``omsf2 bench`` measures so that ratios survive noise.

Backends run in rounds (A, B, C, A, B, C, ...), each getting the same slice of wall time (or the
same number of iterations) per round, so a burst of load from another process hits all of them.
Speed-ups are the median over rounds of the per-round ratio of medians, a paired estimate that a
loaded round cannot bend. The trade-off: a slow backend gets fewer samples than a fast one in
time-based mode; its percentiles still come from at least ``rounds`` samples.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence

# A row whose p90 exceeds its median by more than this share, or whose round medians spread by
# more than NOISY_ROUND_SPREAD (max / min), ran on a busy machine and is flagged.
NOISY_P90_OVER_P50 = 0.25
NOISY_ROUND_SPREAD = 1.3


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 1] of a non-empty sequence.

    Raises:
        ValueError: empty input or ``q`` outside [0, 1].
    """
    if not xs:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile q must lie in [0, 1], got {q}")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclasses.dataclass(frozen=True)
class Stats:
    """Summary of one backend's timed runs, in milliseconds per call (one call = one batch)."""

    n: int
    p50_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float

    @classmethod
    def from_ms(cls, times_ms: Sequence[float]) -> Stats:
        """Statistics of ``times_ms``.

        Raises:
            ValueError: no samples.
        """
        if not times_ms:
            raise ValueError("no timed runs to summarise")
        xs = [float(t) for t in times_ms]
        return cls(
            n=len(xs),
            p50_ms=statistics.median(xs),
            mean_ms=statistics.fmean(xs),
            p90_ms=percentile(xs, 0.90),
            p99_ms=percentile(xs, 0.99),
            min_ms=min(xs),
            max_ms=max(xs),
            std_ms=statistics.pstdev(xs) if len(xs) > 1 else 0.0,
        )


@dataclasses.dataclass(frozen=True)
class RoundsPlan:
    """How long to measure.

    Attributes:
        warmup_s: time-based warm-up per backend before the rounds (at least one call).
        duration_s: timed seconds per backend over all rounds (ignored when ``iters`` is set).
        iters: timed calls per backend over all rounds (None: time-based).
        rounds: number of interleaved rounds.
    """

    warmup_s: float = 2.0
    duration_s: float = 10.0
    iters: int | None = None
    rounds: int = 5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            raise ValueError(f"--warmup-s must be a finite number >= 0, got {self.warmup_s}")
        if self.iters is None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"--duration-s must be a finite number > 0, got {self.duration_s}")
        if self.iters is not None and self.iters < 1:
            raise ValueError(f"--iters must be >= 1, got {self.iters}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")


@dataclasses.dataclass(frozen=True)
class Measured:
    """One backend's samples from the interleaved rounds."""

    times_ms: tuple[float, ...]
    round_medians_ms: tuple[float, ...]

    @property
    def stats(self) -> Stats:
        """Statistics over every sample."""
        return Stats.from_ms(self.times_ms)

    @property
    def round_spread(self) -> float:
        """Max / min of the per-round medians (1.0 = every round alike)."""
        lo = min(self.round_medians_ms)
        return max(self.round_medians_ms) / lo if lo > 0 else math.inf

    @property
    def noisy(self) -> bool:
        """The spread says the machine was busy during these runs."""
        s = self.stats
        return (s.p90_ms - s.p50_ms) > NOISY_P90_OVER_P50 * s.p50_ms or self.round_spread > NOISY_ROUND_SPREAD


def paired_speedup(base: Measured, other: Measured) -> float:
    """Median over rounds of ``base_round_median / other_round_median`` (>1: ``other`` is faster)."""
    ratios = [b / o for b, o in zip(base.round_medians_ms, other.round_medians_ms, strict=True) if o > 0]
    return statistics.median(ratios) if ratios else math.nan


def _iters_per_round(iters: int, rounds: int, r: int) -> int:
    base, extra = divmod(iters, rounds)
    return base + (1 if r < extra else 0)


def interleaved_rounds(
    calls: dict[str, Callable[[], object]],
    plan: RoundsPlan,
    clock: Callable[[], int] = time.perf_counter_ns,
    on_round: Callable[[int, str], None] | None = None,
) -> dict[str, Measured]:
    """Warm each call up, then time them in interleaved rounds.

    Args:
        calls: name -> a zero-argument callable that runs one batch (and waits for it).
        plan: warm-up, duration or iterations, rounds.
        clock: nanosecond clock (``perf_counter_ns``; tests may inject one).
        on_round: called after each backend's slice with (round index, name).

    Returns:
        name -> its samples, in milliseconds.
    """
    for fn in calls.values():
        end = clock() + int(plan.warmup_s * 1e9)
        fn()
        while clock() < end:
            fn()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    medians: dict[str, list[float]] = {name: [] for name in calls}
    # Every round gives every backend at least one call, so there are never more rounds than iterations.
    rounds = plan.rounds if plan.iters is None else min(plan.rounds, plan.iters)
    slice_ns = int(plan.duration_s * 1e9 / rounds)
    for r in range(rounds):
        for name, fn in calls.items():
            this: list[float] = []
            n = None if plan.iters is None else _iters_per_round(plan.iters, rounds, r)
            start = clock()
            # Time-based: at least one call per round, then until the slice is used up.
            while (len(this) < n) if n is not None else (not this or clock() - start < slice_ns):
                t0 = clock()
                fn()
                this.append((clock() - t0) / 1e6)
            samples[name].extend(this)
            if this:
                medians[name].append(statistics.median(this))
            if on_round is not None:
                on_round(r, name)
    return {name: Measured(tuple(samples[name]), tuple(medians[name])) for name in calls if samples[name]}
