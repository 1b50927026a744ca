"""Resize cost of omsf2.data.preprocess against Pillow and a BLAS matmul, idle and with busy cores.

Why the preprocessing resize is a loop of gathers rather than two matrix products: the matmul
is BLAS-threaded, and its threads stall when data-loader workers already occupy every core. This
script measures the three resizes (2000x2000 -> 224x224, float32) on an idle machine and again
while ``--busy`` single-threaded processes spin on every core, and records the medians in
``bench/results/preprocess-<machine>.json`` and ``.md``.

Run: ``python bench/preprocess_bench.py [--runs 30] [--busy N] [--no-write]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from common import RESULTS, machine, written_by
from PIL import Image

from omsf2.data import preprocess as pre

SRC, DST = 2000, 224


def _spin(stop: Any) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    a = np.random.default_rng(0).random((256, 256))
    while not stop.is_set():
        a = np.sin(a) + 0.5


def _dense(n_in: int, n_out: int) -> np.ndarray:
    taps = pre._taps(n_in, n_out)
    w = np.zeros((n_out, n_in), np.float32)
    for k in range(taps.index.shape[0]):
        np.add.at(w, (np.arange(n_out), taps.index[k]), taps.weight[k])
    return w


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _measure(img: np.ndarray, runs: int) -> dict[str, float]:
    wy = wx = _dense(SRC, DST)
    pil = Image.fromarray(img, mode="F")
    return {
        "omsf2_taps_ms": _median_ms(lambda: pre.resize(img, (DST, DST)), runs),
        "pillow_bilinear_ms": _median_ms(lambda: pil.resize((DST, DST), Image.BILINEAR), runs),
        "blas_matmul_ms": _median_ms(lambda: wy @ img @ wx.T, runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="spinning processes for the loaded run")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    img = np.random.default_rng(0).random((SRC, SRC), dtype=np.float32)
    ref = np.asarray(Image.fromarray(img, mode="F").resize((DST, DST), Image.BILINEAR))
    err = float(np.abs(pre.resize(img, (DST, DST)) - ref).max())
    idle = _measure(img, args.runs)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_spin, args=(stop,)) for _ in range(args.busy)]
    for p in procs:
        p.start()
    try:
        time.sleep(1.0)
        busy = _measure(img, args.runs)
    finally:
        stop.set()
        for p in procs:
            p.join()
    slug, desc = machine()
    record = {
        "scenario": "preprocess-resize",
        "written_by": written_by(__file__),
        "about": f"{SRC}x{SRC} -> {DST}x{DST} float32 resize, median of {args.runs} runs",
        "machine": desc,
        "date": datetime.date.today().isoformat(),
        "max_abs_diff_vs_pillow": err,
        "idle": idle,
        f"busy_{args.busy}_processes": busy,
    }
    print(json.dumps(record, indent=2))
    if args.no_write:
        return
    (RESULTS / f"preprocess-{slug}.json").write_text(json.dumps(record, indent=2) + "\n")
    rows = [f"| {k} | {idle[k]:.1f} | {busy[k]:.1f} |" for k in idle]
    (RESULTS / f"preprocess-{slug}.md").write_text(
        "\n".join(
            [
                f"# Preprocessing resize ({record['about']})",
                "",
                f"Machine: {desc}; {record['date']}. Written by `bench/preprocess_bench.py`.",
                f"Max |omsf2 - Pillow| = {err:.2e}. 'idle' means no spinning processes of this script (other",
                "jobs on the machine still ran); the matmul is dense (224x2000 @ 2000x2000 @ 2000x224).",
                "",
                f"| resize | idle (ms) | {args.busy} busy processes (ms) |",
                "|---|---:|---:|",
                *rows,
                "",
            ]
        )
    )


if __name__ == "__main__":
    main()
