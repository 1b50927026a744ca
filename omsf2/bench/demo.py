"""The short bench that ends ``omsf2 demo``: the demo's export on the backends here, batch 1, about 30 s.

It is :func:`omsf2.bench.run.run_bench` with a short plan (3 rounds, 1 s warm-up, 3 s timed per
backend, 1024^3 ceilings) on the backends that need no compilation step, so the demo's extra time
stays under a minute on 2 cores; ``omsf2 bench runs/demo/export`` runs the full set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omsf2.bench.run import BenchResult, BenchSpec, run_bench
from omsf2.bench.runners import BY_NAME, unavailable_reason
from omsf2.bench.timing import RoundsPlan

DEMO_BACKENDS = ("torch", "ort", "ort-int8", "openvino-int8")


def demo_bench(
    export_dir: str | Path, eval_dir: str | Path | None, out: str | Path, on_stage: Callable[[str], None] | None = None
) -> BenchResult:
    """Bench ``export_dir`` on :data:`DEMO_BACKENDS` that can run here, accuracy on ``eval_dir``."""
    export_dir = Path(export_dir)
    names = [n for n in DEMO_BACKENDS if unavailable_reason(BY_NAME[n], export_dir, set(), True) is None]
    spec = BenchSpec(
        source=str(export_dir),
        out=str(out),
        backends=tuple(names),
        plan=RoundsPlan(warmup_s=1.0, duration_s=3.0, rounds=3),
        eval_data=None if eval_dir is None else str(eval_dir),
        command=f"omsf2 demo (short bench: {','.join(names)}, batch 1, 3 rounds, 3 s per backend)",
    )
    if on_stage:
        on_stage(f"short bench of {export_dir} ({', '.join(names)}; full set: omsf2 bench {export_dir})")
    return run_bench(spec)


def demo_bench_isolated(
    export_dir: str | Path, eval_dir: str | Path | None, out: str | Path, on_stage: Callable[[str], None] | None = None
) -> BenchResult | str:
    """:func:`demo_bench` in a fresh interpreter (``spawn``); returns its result, or why it did not finish.

    The demo would otherwise bench in the process that just trained. A fresh interpreter measures what
    ``omsf2 bench`` measures: no training left behind (torch's thread settings, allocator state, the
    SIGCHLD handler of torch's DataLoader), every backend loaded from cold. And a crash in a native
    backend is reported instead of taking the demo down before it writes ``summary.json``. (The
    SIGSEGV that first moved the bench here was OpenVINO's signal stack, fixed in
    :mod:`omsf2.runtime.openvino_core`; the bench now also runs in the training process.)
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    if on_stage:
        on_stage(f"short bench of {export_dir} in a fresh process (full set: omsf2 bench {export_dir})")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        future = pool.submit(demo_bench, str(export_dir), None if eval_dir is None else str(eval_dir), str(out))
        try:
            return future.result()
        except cf.process.BrokenProcessPool:
            return "the bench process died (a crash in a runtime); run `omsf2 bench` on the export to see which"
        except (ValueError, RuntimeError, OSError) as e:
            return " ".join(str(e).split())[:300]
