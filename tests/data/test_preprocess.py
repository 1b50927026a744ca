"""Tests for omsf2.data.preprocess (numpy-only resize, letterbox, normalisation, unletterbox)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omsf2.config import PreprocessSpec, ResizeMode
from omsf2.data.preprocess import (
    LetterboxGeometry,
    letterbox_geometry,
    preprocess,
    preprocess_batch,
    resize,
    unletterbox,
)

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(7)


def pil_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out_h, out_w = size
    return np.asarray(Image.fromarray(img.astype(np.float32)).resize((out_w, out_h), Image.Resampling.BILINEAR))


def blob(h: int, w: int, cy: float, cx: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# resize
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hw", "size"),
    [
        ((640, 512), (224, 224)),  # downscale, non-integer factors
        ((1000, 1000), (100, 100)),  # integer factor
        ((37, 53), (224, 160)),  # upscale
        ((300, 40), (77, 160)),  # down in y, up in x
        ((97, 61), (97, 30)),  # one axis unchanged
        ((64, 64), (63, 65)),  # near-identity
        ((9, 1), (20, 3)),  # single column
        ((1, 1), (4, 5)),  # single pixel
    ],
)
def test_resize_matches_pil_bilinear(hw: tuple[int, int], size: tuple[int, int]) -> None:
    img = RNG.random(hw, dtype=np.float32)
    out = resize(img, size)
    assert out.shape == size and out.dtype == np.float32 and out.flags.c_contiguous
    # Borders included: PIL drops out-of-image taps and renormalises, and so does resize().
    np.testing.assert_allclose(out, pil_resize(img, size), atol=1e-5)


def test_resize_constant_and_range() -> None:
    const = np.full((123, 77), 0.37, dtype=np.float32)
    for size in [(31, 200), (224, 224), (5, 5)]:
        np.testing.assert_allclose(resize(const, size), 0.37, atol=1e-6)
    img = RNG.random((211, 157), dtype=np.float32) * 0.5 + 0.2
    for size in [(50, 40), (400, 300)]:
        out = resize(img, size)
        assert out.min() >= img.min() - 1e-6 and out.max() <= img.max() + 1e-6


def test_resize_identity_is_a_copy_and_inputs_are_flexible() -> None:
    img = RNG.random((40, 30), dtype=np.float32)
    same = resize(img, (40, 30))
    np.testing.assert_array_equal(same, img)
    assert not np.shares_memory(same, img)
    # non-contiguous float64 views are fine
    base = RNG.random((80, 90))
    view = base[::2, ::3].T  # (30, 40), strided, float64
    np.testing.assert_allclose(resize(view, (12, 17)), pil_resize(view, (12, 17)), atol=1e-5)


@pytest.mark.parametrize(
    ("image", "size", "exc"),
    [
        (np.zeros((4, 4, 3), np.float32), (2, 2), ValueError),
        (np.zeros((0, 4), np.float32), (2, 2), ValueError),
        (np.zeros((4, 4), np.float32), (0, 2), ValueError),
        (np.zeros((4, 4), np.float32), (2.5, 2), ValueError),
        (np.zeros((4, 4), np.float32), (2,), ValueError),
        ([[0.0, 1.0]], (2, 2), TypeError),
    ],
)
def test_resize_rejects_bad_input(image: object, size: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        resize(image, size)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# letterbox geometry
# --------------------------------------------------------------------------------------------


def test_letterbox_geometry_portrait_landscape_square() -> None:
    spec = PreprocessSpec(size=(224, 224))
    assert letterbox_geometry((2000, 1000), spec) == LetterboxGeometry(0.112, 0.112, 0, 56, 224, 112)
    assert letterbox_geometry((1000, 2000), spec) == LetterboxGeometry(0.112, 0.112, 56, 0, 112, 224)
    assert letterbox_geometry((512, 512), spec) == LetterboxGeometry(0.4375, 0.4375, 0, 0, 224, 224)
    # odd padding goes to the bottom/right; new size rounds half up and is >= 1
    g = letterbox_geometry((100, 31), spec)  # 31 * 2.24 = 69.44
    assert (g.new_h, g.new_w, g.top, g.left) == (224, 69, 0, 77)
    assert 224 - g.left - g.new_w == 78
    assert letterbox_geometry((448, 5), spec).new_w == 3  # 2.5 rounds up, not to even
    g = letterbox_geometry((10000, 8), spec)
    assert (g.new_h, g.new_w) == (224, 1)


def test_letterbox_geometry_rectangular_input_and_stretch() -> None:
    spec = PreprocessSpec(size=(256, 192))
    g = letterbox_geometry((1000, 1000), spec)
    assert (g.top, g.left, g.new_h, g.new_w) == (32, 0, 192, 192)
    stretch = PreprocessSpec(size=(256, 192), resize=ResizeMode.STRETCH)
    assert letterbox_geometry((1000, 500), stretch) == LetterboxGeometry(0.256, 0.384, 0, 0, 256, 192)
    with pytest.raises(ValueError, match="two positive integers"):
        letterbox_geometry((0, 10), spec)


# --------------------------------------------------------------------------------------------
# preprocess
# --------------------------------------------------------------------------------------------


def test_preprocess_letterbox_pads_and_normalises() -> None:
    spec = PreprocessSpec(size=(64, 64), mean=(0.5,), std=(0.25,), pad_value=0.1)
    img = np.full((200, 100), 0.7, dtype=np.float32)
    x = preprocess(img, spec)
    assert x.shape == (1, 64, 64) and x.dtype == np.float32
    g = letterbox_geometry((200, 100), spec)
    assert (g.left, g.new_w) == (16, 32)
    np.testing.assert_allclose(x[0, :, g.left : g.left + g.new_w], (0.7 - 0.5) / 0.25, atol=1e-5)
    np.testing.assert_allclose(x[0, :, : g.left], (0.1 - 0.5) / 0.25, atol=1e-6)
    np.testing.assert_allclose(x[0, :, g.left + g.new_w :], (0.1 - 0.5) / 0.25, atol=1e-6)


def test_preprocess_content_is_the_resized_image() -> None:
    spec = PreprocessSpec(size=(48, 48), mean=(0.0,), std=(1.0,))
    img = RNG.random((120, 90), dtype=np.float32)
    g = letterbox_geometry((120, 90), spec)
    x = preprocess(img, spec)
    inner = x[0, g.top : g.top + g.new_h, g.left : g.left + g.new_w]
    np.testing.assert_allclose(inner, pil_resize(img, (g.new_h, g.new_w)), atol=1e-5)


def test_preprocess_stretch_has_no_padding() -> None:
    spec = PreprocessSpec(size=(32, 48), resize=ResizeMode.STRETCH, mean=(0.0,), std=(1.0,), pad_value=1.0)
    img = RNG.random((100, 37), dtype=np.float32) * 0.5
    x = preprocess(img, spec)
    np.testing.assert_allclose(x[0], pil_resize(img, (32, 48)), atol=1e-5)
    assert x.max() <= 0.5 + 1e-5


def test_preprocess_three_channels() -> None:
    img = RNG.random((50, 70), dtype=np.float32)
    gray = preprocess(img, PreprocessSpec(size=(32, 32), mean=(0.5,), std=(0.25,), channels=1))
    rep = preprocess(img, PreprocessSpec(size=(32, 32), mean=(0.5,), std=(0.25,), channels=3))
    assert rep.shape == (3, 32, 32)
    for c in range(3):
        np.testing.assert_array_equal(rep[c], gray[0])
    spec = PreprocessSpec(size=(32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channels=3)
    per = preprocess(img, spec)
    raw = preprocess(img, PreprocessSpec(size=(32, 32), mean=(0.0,), std=(1.0,)))[0]
    for c in range(3):
        np.testing.assert_allclose(per[c], (raw - spec.mean[c]) / spec.std[c], atol=1e-5)


def test_preprocess_accepts_float64_and_float16_views() -> None:
    spec = PreprocessSpec(size=(32, 32))
    img = RNG.random((90, 60))
    ref = preprocess(img.astype(np.float32), spec)
    np.testing.assert_allclose(preprocess(img, spec), ref, atol=1e-5)
    np.testing.assert_allclose(preprocess(img.astype(np.float16), spec), ref, atol=5e-3)
    np.testing.assert_allclose(preprocess(np.asfortranarray(img), spec), ref, atol=1e-5)  # layout does not matter


def test_preprocess_batch() -> None:
    spec = PreprocessSpec(size=(32, 32), channels=3, mean=(0.5,), std=(0.5,))
    imgs = [RNG.random((50, 70), dtype=np.float32), RNG.random((90, 30), dtype=np.float32)]
    batch = preprocess_batch(imgs, spec)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(batch[i], preprocess(img, spec))
    assert preprocess_batch([], spec).shape == (0, 3, 32, 32)
    with pytest.raises(TypeError, match=r"^image 1: .*read_image"):
        preprocess_batch([imgs[0], np.zeros((20, 20), np.uint8)], spec)


@pytest.mark.parametrize(
    ("image", "exc", "match"),
    [
        (np.zeros((20, 20), np.uint8), TypeError, "read_image"),
        (np.zeros((20, 20), np.uint16), TypeError, "read_image"),
        (np.zeros((20, 20), bool), TypeError, "float image"),
        (np.zeros((20, 20), np.complex64), TypeError, "float image"),
        ([[0.0] * 20] * 20, TypeError, "numpy array"),
        (np.zeros((3, 20, 20), np.float32), ValueError, "2-D"),
        (np.zeros((0, 20), np.float32), ValueError, "empty"),
        (np.full((20, 20), np.nan, np.float32), ValueError, "NaN"),
        (np.full((20, 20), np.inf, np.float32), ValueError, "NaN or infinite"),
        (np.full((20, 20), 255.0, np.float32), ValueError, r"\[0, 1\]"),
        (np.full((20, 20), -0.2, np.float32), ValueError, r"\[0, 1\]"),
    ],
)
def test_preprocess_rejects_bad_input(image: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match) as info:
        preprocess(image, PreprocessSpec(size=(32, 32)))  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# unletterbox
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
@pytest.mark.parametrize("hw", [(300, 200), (180, 320), (256, 256)])
def test_unletterbox_round_trip(mode: str, hw: tuple[int, int]) -> None:
    h, w = hw
    spec = PreprocessSpec(size=(64, 64), resize=ResizeMode(mode), mean=(0.0,), std=(1.0,), pad_value=0.0)
    cy, cx = 0.3 * h, 0.65 * w
    img = blob(h, w, cy, cx, sigma=0.08 * min(h, w))
    x = preprocess(img, spec)[0]
    heat = resize(x, (16, 16))  # e.g. a CAM at stride 4
    back = unletterbox(heat, hw, spec)
    assert back.shape == hw and back.dtype == np.float32
    peak = np.unravel_index(np.argmax(back), back.shape)
    assert abs(peak[0] - cy) <= 0.06 * h and abs(peak[1] - cx) <= 0.06 * w
    assert np.corrcoef(back.ravel(), img.ravel())[0, 1] > 0.9
    # at full model resolution the round trip is close pixel for pixel
    full = unletterbox(x, hw, spec)
    assert np.abs(full - img).max() < 0.1


def test_unletterbox_discards_padding() -> None:
    spec = PreprocessSpec(size=(64, 64))
    g = letterbox_geometry((400, 100), spec)
    heat = np.zeros((64, 64), np.float32)
    heat[:, : g.left] = 100.0  # activation in the pad only
    heat[:, g.left + g.new_w :] = 100.0
    back = unletterbox(heat, (400, 100), spec)
    assert back.shape == (400, 100)
    assert np.abs(back[:, 10:-10]).max() < 1e-6  # border columns may pick up one-tap bleed


@pytest.mark.parametrize(
    ("heat", "hw", "exc"),
    [
        (np.zeros((4, 4, 1), np.float32), (10, 10), ValueError),
        (np.zeros((0, 4), np.float32), (10, 10), ValueError),
        (np.full((4, 4), np.nan, np.float32), (10, 10), ValueError),
        (np.zeros((4, 4), np.float32), (0, 10), ValueError),
        (np.zeros((4, 4), bool), (10, 10), TypeError),
        ([[0.0]], (10, 10), TypeError),
    ],
)
def test_unletterbox_rejects_bad_input(heat: object, hw: tuple[int, int], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        unletterbox(heat, hw, PreprocessSpec())  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# the runtime must not need torch
# --------------------------------------------------------------------------------------------


def test_modules_do_not_import_torch() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    code = "import omsf2.data.io, omsf2.data.preprocess, sys; assert 'torch' not in sys.modules, 'torch'"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
