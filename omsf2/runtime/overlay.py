"""Heat map over radiograph, as a PNG: the picture ``omsf2 predict --overlay`` writes.

matplotlib supplies the colormap only (imported on first use; it is not a runtime dependency,
``pip install matplotlib`` adds it); the blend and the PNG are numpy and Pillow. The heat map is
min-max scaled per image, so the overlay shows where the model looked, not how strongly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from omsf2.fileio import atomic_path

DEFAULT_CMAP = "jet"


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """Blend a colour-mapped heat map onto a [0, 1] grayscale image.

    Args:
        image: float (h, w) in [0, 1].
        heatmap: float (h, w), any range (min-max scaled here).
        alpha: heat-map opacity in [0, 1].
        cmap: a matplotlib colormap name.

    Returns:
        uint8 (h, w, 3).

    Raises:
        ValueError: shapes differ, alpha outside [0, 1], or an unknown colormap.
        RuntimeError: matplotlib is not installed.
    """
    if image.shape != heatmap.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and heat map {heatmap.shape} must be the same 2-D shape")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    try:
        from matplotlib import colormaps
    except ImportError as e:
        raise RuntimeError("--overlay needs matplotlib (pip install matplotlib)") from e
    if cmap not in colormaps:
        raise ValueError(f"unknown colormap {cmap!r} (any matplotlib colormap name, e.g. jet, inferno, viridis)")
    h = np.asarray(heatmap, np.float64)
    lo, hi = float(h.min()), float(h.max())
    norm = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
    colour = colormaps[cmap](norm)[..., :3]
    gray = np.clip(np.asarray(image, np.float64), 0.0, 1.0)[..., None]
    rgb = (1.0 - alpha) * gray + alpha * colour
    return np.asarray(np.rint(rgb * 255.0), dtype=np.uint8)


def write_overlay(
    path: str | os.PathLike[str],
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.4,
    cmap: str = DEFAULT_CMAP,
) -> Path:
    """Write :func:`overlay_rgb` as a PNG (atomically); returns the path."""
    rgb = overlay_rgb(image, heatmap, alpha=alpha, cmap=cmap)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb, "RGB").save(tmp, format="PNG")
    return Path(path)
