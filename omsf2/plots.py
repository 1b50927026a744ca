"""Every figure omsf2 draws, with matplotlib (Agg backend, imported lazily): confusion matrix, bench plots.

matplotlib is an optional extra (``omsf2[plots]``, in ``dev``); importing this module does not
import it. Each function writes one PNG atomically and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omsf2.fileio import atomic_write


def _pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend.

    Raises:
        ImportError: matplotlib is not installed (the message names the extra).
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("figures need matplotlib: pip install 'omsf2[plots]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    plt = _pyplot()
    try:
        return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def confusion_png(
    path: str | os.PathLike[str], cm: Sequence[Sequence[int]], classes: Sequence[str], title: str
) -> Path:
    """A confusion matrix (rows true, columns predicted) shaded by row share, counts and shares in cells."""
    import numpy as np

    plt = _pyplot()
    m = np.asarray(cm, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.1 * k + 2))
    ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            color = "white" if frac[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(m[i, j])}\n{100 * frac[i, j]:.0f}%", ha="center", va="center", color=color)
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=30, ha="right")
    ax.set_yticks(range(k), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title[:90], fontsize=9)
    return _save(fig, path)


def _log_ms_axis(axis: Any, lo: float, hi: float) -> None:
    """A log-scale millisecond axis from ``lo`` to ``hi``, labelled in plain numbers, not powers of ten.

    Labels at 1, 2, 5 x 10^k; over less than a decade and a half also at 1.5, 3 and 7, so that a
    narrow range still carries three or more labels.
    """
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator

    subs = (1.0, 2.0, 5.0) if math.log10(hi / lo) > 1.5 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def latency_png(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], title: str) -> Path:
    """Latency per backend, one panel per (batch, size): a p50 dot with its value, a p90 tick, a p50-p99 whisker.

    The time axis is logarithmic, so a 2 ms p50 stays readable beside another backend's 700 ms p99
    (on a linear axis it was a bar one pixel high); each p50 is also printed beside its dot. Dots,
    not bars: a bar's length on a log axis depends on where the axis starts and would mislead.
    """
    plt = _pyplot()
    ok = [r for r in rows if r.get("status") == "ok" and r.get("p50_ms")]
    groups = list(dict.fromkeys((r["batch"], r["img_size"]) for r in ok)) or [(0, 0)]
    cols = min(len(groups), 2)
    per_row = max((sum((r["batch"], r["img_size"]) == g for r in ok) for g in groups), default=1)
    n_rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(6.0 * cols, (0.42 * per_row + 1.4) * n_rows), squeeze=False)
    for ax, (b, s) in zip(axes.flat, groups, strict=False):
        sel = [r for r in ok if (r["batch"], r["img_size"]) == (b, s)]
        if not sel:
            ax.text(0.5, 0.5, "no backend ran", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        y = list(range(len(sel)))
        p50 = [r["p50_ms"] for r in sel]
        p90 = [r.get("p90_ms") or r["p50_ms"] for r in sel]
        p99 = [r.get("p99_ms") or r["p50_ms"] for r in sel]
        ax.hlines(y, p50, p99, color="tab:red", linewidth=1.2, alpha=0.7, label="p50 to p99")
        ax.scatter(p90, y, marker="|", s=140, color="tab:orange", label="p90", zorder=3)
        ax.scatter(p99, y, marker="|", s=140, color="tab:red", label="p99", zorder=3)
        ax.scatter(p50, y, marker="o", s=40, color="tab:blue", label="p50", zorder=4)
        for yi, v in zip(y, p50, strict=True):
            ax.annotate(
                f"{v:.0f} ms" if v >= 100 else f"{v:.3g} ms",
                (v, yi),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
        lo, hi = min(p50) / 1.6, max(p99) * 1.6
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        _log_ms_axis(ax.xaxis, lo, hi)
        ax.set_yticks(y, [r["backend"] for r in sel])
        ax.set_ylim(len(sel) - 0.4, -0.7)  # first backend on top, room for its label
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.set_xlabel("ms per batch (log scale)")
        ax.set_title(f"batch {b}, {s} px", fontsize=9)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title[:100], fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


def batch_scaling_png(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], title: str) -> Path:
    """Latency (p50) and throughput against batch size, one line per backend and size."""
    plt = _pyplot()
    ok = [r for r in rows if r.get("status") == "ok" and r.get("p50_ms") is not None]
    fig, (ax_l, ax_t) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key in dict.fromkeys((r["backend"], r["img_size"]) for r in ok):
        sel = sorted((r for r in ok if (r["backend"], r["img_size"]) == key), key=lambda r: r["batch"])
        label = f"{key[0]} ({key[1]} px)"
        ax_l.plot([r["batch"] for r in sel], [r["p50_ms"] for r in sel], marker="o", label=label)
        ax_t.plot([r["batch"] for r in sel], [r["throughput_ips"] for r in sel], marker="o", label=label)
    batches = sorted({r["batch"] for r in ok})
    ax_l.set(xlabel="batch", ylabel="p50 ms per batch (log scale)", title="latency", yscale="log", xticks=batches)
    ax_t.set_xticks(batches)
    if ok:
        _log_ms_axis(ax_l.yaxis, min(r["p50_ms"] for r in ok), max(r["p50_ms"] for r in ok))
    ax_t.set(xlabel="batch", ylabel="images / s", title="throughput")
    ax_t.legend(fontsize=7)
    fig.suptitle(title[:100], fontsize=10)
    return _save(fig, path)
