"""Turn a [0, 1] image into the model's input array, identically in training and at runtime.

This module owns the geometry and arithmetic between :func:`omsf2.data.io.read_image` and the
network: antialiased resizing, letterboxing, normalisation, and the inverse mapping of a heat
map back onto the original image. It is numpy-only (plus :mod:`omsf2.config`) so the torch-free
runtime reuses it verbatim and a model never sees a differently resized image after export.

Resizing is PIL's ``BILINEAR`` filter (the antialiased triangle filter whose support widens by
the reduction factor, as ``torch.nn.functional.interpolate(..., antialias=True)``) written as two
separable weight matrices, ``out = Wy @ img @ Wx.T``, cached per (in, out) length. The
trade-off: the matrices are stored sparse (K taps per output sample) and applied with numpy
gathers and multiply-adds instead of BLAS matmuls: single-threaded, close to Pillow's C loop,
and immune to OpenBLAS's thread stalls when data-loader workers already load every core (the
measured figures, idle and under load, are in ``bench/results/preprocess-<machine>.md``, written
by ``bench/preprocess_bench.py``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from omsf2.config import PreprocessSpec, ResizeMode

__all__ = [
    "LetterboxGeometry",
    "letterbox_geometry",
    "preprocess",
    "preprocess_batch",
    "resize",
    "unletterbox",
]

# Values this far outside [0, 1] mean the caller did not pass a read_image() result.
_RANGE_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class LetterboxGeometry:
    """Where the resized image sits inside the model input.

    Attributes:
        scale_y: new_h / h, the vertical scale from the original image to the model input.
        scale_x: new_w / w, the horizontal scale.
        top: first model-input row holding image pixels.
        left: first model-input column holding image pixels.
        new_h: rows of the resized image inside the input.
        new_w: columns of the resized image inside the input.

    """

    scale_y: float
    scale_x: float
    top: int
    left: int
    new_h: int
    new_w: int


# --------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Taps:
    """One axis of the resampling matrix W (n_out, n_in) in ELLPACK form.

    ``W[i, index[k, i]] = weight[k, i]`` for every tap k; all other entries are zero. Columns of
    ``weight`` (one per output sample) sum to 1; padding taps have weight 0.
    """

    index: np.ndarray  # (K, n_out) intp, valid input indices
    weight: np.ndarray  # (K, n_out) float32


@functools.lru_cache(maxsize=256)
def _taps(n_in: int, n_out: int) -> _Taps:
    """Triangle-filter taps mapping n_in samples to n_out, as in Pillow's ImagingResample.

    Output sample i is centred at (i + 0.5) * n_in / n_out in input coordinates (half-pixel
    alignment); the triangle's half-width is max(n_in / n_out, 1) input samples; taps beyond
    the border are dropped and the remaining weights renormalised to sum to 1, as Pillow does.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
    n_taps = int(np.ceil(2.0 * support)) + 1
    first = np.floor(centers - support - 0.5).astype(np.int64) + 1  # first j with |j + .5 - c| < s
    index = first[None, :] + np.arange(n_taps, dtype=np.int64)[:, None]
    weight = np.maximum(0.0, 1.0 - np.abs(index + 0.5 - centers[None, :]) / support)
    weight[(index < 0) | (index >= n_in)] = 0.0
    # Every output has a tap within half a sample of its centre, so no column sums to 0.
    weight /= weight.sum(axis=0, keepdims=True)
    used = weight.any(axis=1)
    idx = np.ascontiguousarray(np.clip(index[used], 0, n_in - 1).astype(np.intp))
    wts = np.ascontiguousarray(weight[used].astype(np.float32))
    idx.setflags(write=False)
    wts.setflags(write=False)
    return _Taps(idx, wts)


def _resample(img: np.ndarray, taps: _Taps, axis: int) -> np.ndarray:
    """Apply W along one axis of a float32 2-D array: W @ img (axis 0) or img @ W.T (axis 1).

    A loop over the K taps of gathers and multiply-adds: the same products as the matrix
    multiplication, without BLAS, whose threads stall badly when data-loader workers already
    occupy every core (see the module docstring).
    """
    weight = taps.weight[:, :, None] if axis == 0 else taps.weight[:, None, :]
    out = np.take(img, taps.index[0], axis=axis, mode="clip")
    out *= weight[0]
    tmp = np.empty_like(out)
    for k in range(1, taps.index.shape[0]):
        np.take(img, taps.index[k], axis=axis, out=tmp, mode="clip")
        tmp *= weight[k]
        out += tmp
    return out


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D image with Pillow's antialiased bilinear (triangle) filter.

    Downscaling averages over a triangle as wide as the reduction factor (no aliasing);
    upscaling is plain bilinear interpolation with half-pixel centres (``align_corners=False``)
    and edge clamping. The result agrees with ``PIL.Image.resize(..., Image.BILINEAR)`` on a
    mode "F" image to float32 rounding, borders included.

    Args:
        image: (h, w) array; cast to float32.
        size: (H, W) of the output, each >= 1.

    Returns:
        float32 (H, W), C-contiguous; a copy when the size is unchanged. Values lie within
        [image.min(), image.max()] up to float32 rounding (the weights are non-negative).

    Raises:
        TypeError: image is not a numpy array.
        ValueError: image is not 2-D or is empty, or size is not two positive integers.

    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"resize expects a numpy array, got {type(image).__name__}")
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"resize expects a non-empty 2-D (h, w) array, got shape {image.shape}")
    out_h, out_w = _check_size(size)
    img = np.ascontiguousarray(image, dtype=np.float32)
    h, w = img.shape
    if (h, w) == (out_h, out_w):
        return img.copy() if np.may_share_memory(img, image) else img
    if h == out_h:
        return _resample(img, _taps(w, out_w), axis=1)
    if w == out_w:
        return _resample(img, _taps(h, out_h), axis=0)
    ty = _taps(h, out_h)
    tx = _taps(w, out_w)
    # Run first the pass that leaves less work (multiply-adds) for the second one.
    rows_first = ty.index.shape[0] * out_h * w + tx.index.shape[0] * out_h * out_w
    cols_first = tx.index.shape[0] * h * out_w + ty.index.shape[0] * out_h * out_w
    if rows_first <= cols_first:
        return _resample(_resample(img, ty, axis=0), tx, axis=1)
    return _resample(_resample(img, tx, axis=1), ty, axis=0)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        out_h, out_w = (int(s) for s in size)
        ok = all(int(s) == s for s in size) and out_h >= 1 and out_w >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"size must be two positive integers (H, W), got {size!r}")
    return out_h, out_w


# --------------------------------------------------------------------------------------------
# Letterbox geometry
# --------------------------------------------------------------------------------------------


def letterbox_geometry(hw: tuple[int, int], spec: PreprocessSpec) -> LetterboxGeometry:
    """Place an (h, w) image inside the model input of ``spec.size``.

    Letterbox: one scale ``min(H / h, W / w)`` for both axes, the resized size rounded half up
    (and at least 1), the image centred with the odd pixel of padding at the bottom/right.
    Stretch: the image fills the input (top = left = 0).

    Args:
        hw: (h, w) of the original image.
        spec: the preprocessing spec.

    Returns:
        The box of the model input that holds the image and the per-axis scales.

    Raises:
        ValueError: hw is not two positive integers.

    """
    h, w = _check_size(hw)
    out_h, out_w = spec.size
    if spec.resize is ResizeMode.STRETCH:
        return LetterboxGeometry(out_h / h, out_w / w, 0, 0, out_h, out_w)
    scale = min(out_h / h, out_w / w)
    new_h = min(out_h, max(1, int(np.floor(h * scale + 0.5))))
    new_w = min(out_w, max(1, int(np.floor(w * scale + 0.5))))
    return LetterboxGeometry(new_h / h, new_w / w, (out_h - new_h) // 2, (out_w - new_w) // 2, new_h, new_w)


# --------------------------------------------------------------------------------------------
# Model input
# --------------------------------------------------------------------------------------------


def _validated_image(image: np.ndarray) -> np.ndarray:
    """Check a read_image()-style input and return it as float32."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"preprocess expects a numpy array, got {type(image).__name__}")
    if image.dtype == np.bool_ or np.issubdtype(image.dtype, np.integer):
        raise TypeError(
            f"preprocess expects a float image in [0, 1], got dtype {image.dtype}; "
            "read files with omsf2.data.io.read_image first"
        )
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"preprocess expects a float image in [0, 1], got dtype {image.dtype}")
    if image.ndim != 2:
        raise ValueError(f"preprocess expects a 2-D (h, w) grayscale image, got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"preprocess got an empty image of shape {image.shape}")
    img = np.asarray(image, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("preprocess got an image with NaN or infinite values")
    if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(
            f"preprocess expects values in [0, 1], got [{lo:g}, {hi:g}]; "
            "read files with omsf2.data.io.read_image (0-255 data must be divided by 255)"
        )
    return img


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resize, pad and normalise a [0, 1] grayscale image into the model input.

    Args:
        image: float (h, w) array in [0, 1], as returned by :func:`omsf2.data.io.read_image`.
        spec: the preprocessing spec recorded with the model.

    Returns:
        float32 (C, H, W) with C = ``spec.channels`` and (H, W) = ``spec.size``: the resized image
        (letterboxed with ``spec.pad_value`` or stretched), then ``(x - mean[c]) / std[c]``; with
        3 channels the gray image is replicated.

    Raises:
        TypeError: image is not a float numpy array (integer arrays included).
        ValueError: image is not 2-D, is empty, has non-finite values or values outside [0, 1].

    """
    img = _validated_image(image)
    out_h, out_w = spec.size
    geo = letterbox_geometry((img.shape[0], img.shape[1]), spec)
    resized = resize(img, (geo.new_h, geo.new_w))
    if (geo.new_h, geo.new_w) == (out_h, out_w):
        canvas = resized
    else:
        canvas = np.full((out_h, out_w), spec.pad_value, dtype=np.float32)
        canvas[geo.top : geo.top + geo.new_h, geo.left : geo.left + geo.new_w] = resized
    c = spec.channels
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
    out = np.empty((c, out_h, out_w), dtype=np.float32)
    np.divide(canvas[None] - mean, std, out=out)  # (1 or C, H, W) broadcast into C channels
    return out


def preprocess_batch(images: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """Preprocess several images into one batch.

    Args:
        images: float (h_i, w_i) arrays in [0, 1]; sizes may differ.
        spec: the preprocessing spec.

    Returns:
        float32 (N, C, H, W); (0, C, H, W) for an empty sequence.

    Raises:
        TypeError, ValueError: as :func:`preprocess`, the message prefixed with the image index.

    """
    out = np.empty((len(images), spec.channels, *spec.size), dtype=np.float32)
    for i, img in enumerate(images):
        try:
            out[i] = preprocess(img, spec)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"image {i}: {exc}") from exc
    return out


def unletterbox(heatmap: np.ndarray, hw: tuple[int, int], spec: PreprocessSpec) -> np.ndarray:
    """Map a heat map over the model input back onto the original (h, w) image.

    The map is resized to ``spec.size``, the letterbox box is cropped out (padding discarded)
    and the crop is resized to (h, w); for stretch mode the crop is the whole input.

    Args:
        heatmap: (h', w') float array over the model input, any value range (e.g. a CAM at the
            backbone's stride).
        hw: (h, w) of the original image.
        spec: the spec the model input was made with.

    Returns:
        float32 (h, w) aligned with the original image.

    Raises:
        TypeError: heatmap is not a numeric numpy array.
        ValueError: heatmap is not 2-D, is empty or has non-finite values; hw is invalid.

    """
    if not isinstance(heatmap, np.ndarray):
        raise TypeError(f"unletterbox expects a numpy array, got {type(heatmap).__name__}")
    if heatmap.dtype == np.bool_ or not np.issubdtype(heatmap.dtype, np.number):
        raise TypeError(f"unletterbox expects a numeric heat map, got dtype {heatmap.dtype}")
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"unletterbox expects a non-empty 2-D (h', w') heat map, got shape {heatmap.shape}")
    hmap = np.asarray(heatmap, dtype=np.float32)
    if not np.isfinite(hmap).all():
        raise ValueError("unletterbox got a heat map with NaN or infinite values")
    h, w = _check_size(hw)
    geo = letterbox_geometry((h, w), spec)
    full = resize(hmap, spec.size)
    crop = full[geo.top : geo.top + geo.new_h, geo.left : geo.left + geo.new_w]
    return resize(crop, (h, w))
