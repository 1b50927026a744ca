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


def latency_png(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], title: str) -> Path:
    """Latency percentiles (p50 bar, p90 / p99 marks) per backend, one panel per (batch, size)."""
    plt = _pyplot()
    ok = [r for r in rows if r.get("status") == "ok" and r.get("p50_ms") is not None]
    groups = list(dict.fromkeys((r["batch"], r["img_size"]) for r in ok)) or [(0, 0)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.8), squeeze=False)
    for ax, (b, s) in zip(axes[0], groups, strict=True):
        sel = [r for r in ok if (r["batch"], r["img_size"]) == (b, s)]
        x = range(len(sel))
        ax.bar(x, [r["p50_ms"] for r in sel], color="tab:blue", label="p50")
        ax.scatter(x, [r["p90_ms"] for r in sel], color="tab:orange", marker="_", s=300, label="p90", zorder=3)
        ax.scatter(x, [r["p99_ms"] for r in sel], color="tab:red", marker="_", s=300, label="p99", zorder=3)
        ax.set_xticks(list(x), [r["backend"] for r in sel], rotation=35, ha="right")
        ax.set_ylabel("ms per batch")
        ax.set_title(f"batch {b}, {s} px", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title[:100], fontsize=10)
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
    ax_l.set(xlabel="batch", ylabel="p50 ms per batch", title="latency")
    ax_t.set(xlabel="batch", ylabel="images / s", title="throughput")
    ax_t.legend(fontsize=7)
    fig.suptitle(title[:100], fontsize=10)
    return _save(fig, path)
