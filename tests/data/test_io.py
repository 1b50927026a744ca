"""Tests for omsf2.data.io: every fixture is generated into tmp_path or ships with pydicom-data."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from omsf2.data.io import IMAGE_SUFFIXES, ImageReadError, list_images, probe_image, read_image

LUMA = np.array([0.299, 0.587, 0.114])
RNG = np.random.default_rng(1234)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def write_dicom(
    path: Path,
    arr: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **elements: Any,
) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    if bits_stored is None:
        bits_stored = arr.dtype.itemsize * 8
    ds.set_pixel_data(arr, photometric, bits_stored)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def window_linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written independently of the implementation."""
    out = np.empty_like(x, dtype=np.float64)
    for i, v in np.ndenumerate(x):
        if v <= c - 0.5 - (w - 1) / 2:
            out[i] = 0.0
        elif v > c - 0.5 + (w - 1) / 2:
            out[i] = 1.0
        else:
            out[i] = (v - (c - 0.5)) / (w - 1) + 0.5
    return out


def ramp(h: int = 24, w: int = 32, hi: int = 4095) -> np.ndarray:
    return np.linspace(0, hi, h * w).round().astype(np.uint16).reshape(h, w)


def assert_clean(img: np.ndarray, shape: tuple[int, int] | None = None) -> None:
    assert img.dtype == np.float32
    assert img.ndim == 2
    assert img.flags.c_contiguous
    assert np.isfinite(img).all()
    assert img.min() >= 0.0 and img.max() <= 1.0
    if shape is not None:
        assert img.shape == shape


# --------------------------------------------------------------------------------------------
# PNG / JPEG
# --------------------------------------------------------------------------------------------


def test_png_8bit_exact(tmp_path: Path) -> None:
    a = RNG.integers(0, 256, (17, 23), dtype=np.uint8)
    a[0, 0], a[0, 1] = 0, 255
    Image.fromarray(a).save(tmp_path / "g8.png")
    img = read_image(tmp_path / "g8.png")
    assert_clean(img, (17, 23))
    np.testing.assert_allclose(img, a / 255.0, atol=1e-7)
    assert img[0, 0] == 0.0 and img[0, 1] == 1.0


def test_png_16bit_exact(tmp_path: Path) -> None:
    a = RNG.integers(0, 65536, (20, 12), dtype=np.uint16)
    a[0, :3] = [0, 32768, 65535]
    Image.fromarray(a).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")  # a true 16-bit PNG, not reduced to 8 bits
    img = read_image(tmp_path / "g16.png")
    assert_clean(img, (20, 12))
    assert img[0, 0] == 0.0 and img[0, 2] == 1.0
    assert img[0, 1] == pytest.approx(32768 / 65535, abs=1e-7)
    np.testing.assert_allclose(img, a / 65535.0, atol=1e-7)


def test_png_rgb_is_float_luma(tmp_path: Path) -> None:
    a = RNG.integers(0, 256, (16, 18, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "rgb.png")
    img = read_image(tmp_path / "rgb.png")
    assert_clean(img, (16, 18))
    np.testing.assert_allclose(img, (a @ LUMA) / 255.0, atol=1e-6)


def test_png_rgba_ignores_alpha(tmp_path: Path) -> None:
    a = RNG.integers(0, 256, (16, 18, 4), dtype=np.uint8)
    Image.fromarray(a, mode="RGBA").save(tmp_path / "rgba.png")
    img = read_image(tmp_path / "rgba.png")
    np.testing.assert_allclose(img, (a[..., :3] @ LUMA) / 255.0, atol=1e-6)


def test_png_palette(tmp_path: Path) -> None:
    idx = RNG.integers(0, 4, (12, 10), dtype=np.uint8)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255], [255, 255, 255]], dtype=np.uint8)
    p = Image.fromarray(idx, mode="P")
    p.putpalette(colours.ravel().tolist())
    p.save(tmp_path / "pal.png")
    img = read_image(tmp_path / "pal.png")
    np.testing.assert_allclose(img, (colours[idx] @ LUMA) / 255.0, atol=1e-6)


def test_png_gray_alpha_and_bilevel(tmp_path: Path) -> None:
    a = RNG.integers(0, 256, (10, 11, 2), dtype=np.uint8)
    Image.fromarray(a, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(read_image(tmp_path / "la.png"), a[..., 0] / 255.0, atol=1e-7)
    bits = RNG.random((9, 13)) > 0.5
    Image.fromarray(bits).convert("1").save(tmp_path / "bw.png")
    np.testing.assert_array_equal(read_image(tmp_path / "bw.png"), bits.astype(np.float32))


def test_jpeg_approximately(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:64, 0:80]
    a = ((yy + xx) * 255 / (63 + 79)).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "g.jpg", quality=95)
    img = read_image(tmp_path / "g.jpg")
    assert_clean(img, (64, 80))
    np.testing.assert_allclose(img, a / 255.0, atol=0.03)
    rgb = np.stack([a, a, a], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.JPEG", quality=95)
    np.testing.assert_allclose(read_image(tmp_path / "c.JPEG"), a / 255.0, atol=0.03)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_6_is_applied(tmp_path: Path, suffix: str) -> None:
    a = np.zeros((24, 40), dtype=np.uint8)
    a[:8, :8] = 255  # bright top-left corner of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / f"rot{suffix}"
    if suffix == ".jpg":
        Image.fromarray(a).save(path, exif=exif.tobytes(), quality=95)
    else:
        Image.fromarray(a).save(path, exif=exif.tobytes())
    img = read_image(path)
    expected = np.rot90(a, k=-1) / 255.0  # clockwise
    assert img.shape == (40, 24)
    np.testing.assert_allclose(img, expected, atol=0.05 if suffix == ".jpg" else 1e-7)
    assert img[:8, -8:].mean() > 0.9  # the corner is now top-right
    assert probe_image(path) == (40, 24)


def test_suffix_is_case_insensitive_and_unknown_suffixes_are_sniffed(tmp_path: Path) -> None:
    a = RNG.integers(0, 256, (12, 12), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "UPPER.PNG")
    Image.fromarray(a).save(tmp_path / "no_suffix", format="PNG")
    Image.fromarray(a).save(tmp_path / "odd.bin", format="PNG")
    for name in ("UPPER.PNG", "no_suffix", "odd.bin"):
        np.testing.assert_allclose(read_image(tmp_path / name), a / 255.0, atol=1e-7)
    dcm = write_dicom(tmp_path / "x.dcm", ramp())
    (tmp_path / "dicom_no_suffix").write_bytes(dcm.read_bytes())
    np.testing.assert_array_equal(read_image(tmp_path / "dicom_no_suffix"), read_image(dcm))
    assert probe_image(tmp_path / "dicom_no_suffix") == (24, 32)


def test_decompression_bomb_is_an_image_read_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageReadError, match="too large") as info:
        read_image(tmp_path / "big.png")
    assert isinstance(info.value.__cause__, Image.DecompressionBombError)
    with pytest.raises(ImageReadError, match="too large"):
        probe_image(tmp_path / "big.png")


# --------------------------------------------------------------------------------------------
# Real CR chest radiograph (pydicom-data)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cr_uncr() -> tuple[str, np.ndarray]:
    path = get_testdata_file("RG1_UNCR.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    return str(path), read_image(path)


def test_cr_chest_dicom(cr_uncr: tuple[str, np.ndarray]) -> None:
    path, img = cr_uncr
    assert_clean(img, (1955, 1841))
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    # Window 15000/30000, LINEAR, then MONOCHROME1 inversion; no rescale in this file.
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    stored = ds.pixel_array.astype(np.float64)
    not_inverted = np.clip((stored - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(img, 1.0 - not_inverted, atol=1e-6)
    # As displayed, the air-filled lungs are darker than the mediastinum/spine between them.
    right_lung = img[500:900, 350:650].mean()
    left_lung = img[500:900, 1200:1450].mean()
    mediastinum = img[500:900, 880:960].mean()
    assert mediastinum > right_lung + 0.1 and mediastinum > left_lung + 0.1
    assert probe_image(path) == (1955, 1841)


def test_cr_chest_jpeg2000(cr_uncr: tuple[str, np.ndarray]) -> None:
    path = get_testdata_file("RG1_J2KR.dcm")
    assert path is not None
    if get_decoder(JPEG2000Lossless).is_available:
        # Here Pillow's OpenJPEG decodes it; J2KR is reversible, so the result is identical.
        np.testing.assert_array_equal(read_image(path), cr_uncr[1])
    else:
        with pytest.raises(ImageReadError, match="needs a decoder"):
            read_image(path)


def test_missing_decoder_names_the_packages() -> None:
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    if path is None or get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed (or the file is missing)")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert "JPEG-LS" in msg and "needs a decoder" in msg and "pylibjpeg" in msg and "\n" not in msg
    assert probe_image(path) == (64, 64)  # the header alone is readable


# --------------------------------------------------------------------------------------------
# Generated DICOMs: the PS3.3 C.11 pipeline
# --------------------------------------------------------------------------------------------


def test_rescale_then_linear_window(tmp_path: Path) -> None:
    stored = ramp(hi=4095)
    slope, intercept, c, w = 2.0, -1000.0, 3000.0, 4001.0
    path = write_dicom(
        tmp_path / "m2.dcm",
        stored,
        bits_stored=12,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        WindowCenter=c,
        WindowWidth=w,
    )
    img = read_image(path)
    assert_clean(img, stored.shape)
    expected = window_linear(stored * slope + intercept, c, w)
    np.testing.assert_allclose(img, expected, atol=1e-6)
    assert (img == 0).any() and (img == 1).any() and ((img > 0) & (img < 1)).any()


def test_linear_window_edges_are_exact(tmp_path: Path) -> None:
    c, w = 100.0, 11.0  # ramp on (94.5, 105.5]: x <= 94.5 → 0, x > 105.5 → 1
    x = np.arange(68, 132, dtype=np.int16).reshape(8, 8)
    img = read_image(write_dicom(tmp_path / "e.dcm", x, WindowCenter=c, WindowWidth=w))
    np.testing.assert_allclose(img, window_linear(x.astype(float), c, w), atol=1e-6)
    assert img[x == 94].item() == 0.0
    assert img[x == 106].item() == 1.0
    # width 1 is a valid threshold at c - 0.5
    img1 = read_image(write_dicom(tmp_path / "t.dcm", x, WindowCenter=100, WindowWidth=1))
    np.testing.assert_array_equal(img1, (x > 99.5).astype(np.float32))


def test_multi_valued_window_uses_the_first(tmp_path: Path) -> None:
    stored = ramp()
    single = read_image(write_dicom(tmp_path / "a.dcm", stored, WindowCenter=1000, WindowWidth=800))
    multi = read_image(write_dicom(tmp_path / "b.dcm", stored, WindowCenter=[1000, 3000], WindowWidth=[800, 100]))
    np.testing.assert_array_equal(single, multi)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = ramp()
    kw = {"WindowCenter": 2000, "WindowWidth": 3000}
    m2 = read_image(write_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2", 12, **kw))
    m1 = read_image(write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", 12, **kw))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m1[0, 0] > m1[-1, -1]  # low stored value is bright in MONOCHROME1


def test_linear_exact_and_sigmoid(tmp_path: Path) -> None:
    stored = ramp(hi=1000)
    x = stored.astype(np.float64)
    c, w = 500.0, 300.0
    exact = read_image(
        write_dicom(tmp_path / "le.dcm", stored, WindowCenter=c, WindowWidth=w, VOILUTFunction="LINEAR_EXACT")
    )
    np.testing.assert_allclose(exact, np.clip((x - c) / w + 0.5, 0, 1), atol=1e-6)
    sig = read_image(write_dicom(tmp_path / "sg.dcm", stored, WindowCenter=c, WindowWidth=w, VOILUTFunction="SIGMOID"))
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-4 * (x - c) / w)), atol=1e-6)
    # LINEAR_EXACT accepts a width below 1 (only > 0 is required)
    narrow = read_image(
        write_dicom(tmp_path / "n.dcm", stored, WindowCenter=c, WindowWidth=0.5, VOILUTFunction="LINEAR_EXACT")
    )
    np.testing.assert_allclose(narrow, np.clip((x - c) / 0.5 + 0.5, 0, 1), atol=1e-6)


def test_invalid_window_falls_back_to_minmax(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stored = ramp(hi=3000) + 100
    with caplog.at_level(logging.WARNING, logger="omsf2.data.io"):
        img = read_image(write_dicom(tmp_path / "w.dcm", stored, WindowCenter=500, WindowWidth=0.5))
    x = stored.astype(np.float64)
    np.testing.assert_allclose(img, (x - x.min()) / (x.max() - x.min()), atol=1e-6)
    assert "invalid window" in caplog.text


def test_no_voi_is_minmax_and_constant_is_zero(tmp_path: Path) -> None:
    stored = ramp(hi=3000) + 100
    img = read_image(write_dicom(tmp_path / "mm.dcm", stored, bits_stored=12))
    x = stored.astype(np.float64)
    np.testing.assert_allclose(img, (x - x.min()) / (x.max() - x.min()), atol=1e-6)
    assert img.min() == 0.0 and img.max() == 1.0
    const = np.full((16, 16), 700, dtype=np.uint16)
    np.testing.assert_array_equal(read_image(write_dicom(tmp_path / "c2.dcm", const)), 0.0)
    np.testing.assert_array_equal(read_image(write_dicom(tmp_path / "c1.dcm", const, "MONOCHROME1")), 1.0)


def _lut_item(n: int, first: int, bits: int, data: np.ndarray, vr: str = "US") -> Dataset:
    """A LUT item; LUT Data written as US (a list) or OW (little-endian bytes)."""
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [n, first, bits])
    if vr == "US":
        item.add_new("LUTData", "US", [int(v) for v in data])
    else:
        item.add_new("LUTData", "OW", np.asarray(data, dtype="<u2").tobytes())
    return item


def test_voi_lut_sequence_wins_over_window(tmp_path: Path) -> None:
    stored = ramp(hi=4095)
    first, n = 1000, 2048
    lut = (np.sqrt(np.arange(n) / (n - 1)) * 65535).astype(np.int64)  # gamma curve, 16-bit output
    path = write_dicom(
        tmp_path / "voi.dcm",
        stored,
        bits_stored=12,
        VOILUTSequence=Sequence([_lut_item(n, first, 16, lut, vr="OW")]),
        WindowCenter=100,  # would give an all-white image if it were used
        WindowWidth=10,
    )
    img = read_image(path)
    idx = np.clip(stored.astype(np.int64) - first, 0, n - 1)
    np.testing.assert_allclose(img, lut[idx] / 65535.0, atol=1e-6)
    assert img.min() == 0.0 and img.max() == 1.0


def test_voi_lut_full_scale_follows_the_descriptor(tmp_path: Path) -> None:
    stored = ramp(hi=255).astype(np.uint8)
    half = np.arange(256) * 8  # 12-bit descriptor, entries reach 2040 of 4095
    img = read_image(write_dicom(tmp_path / "a.dcm", stored, VOILUTSequence=Sequence([_lut_item(256, 0, 12, half)])))
    np.testing.assert_allclose(img, half[stored] / 4095.0, atol=1e-6)
    # A descriptor that understates the entries (8 bits, values to 4080) uses the entries' bit depth.
    wrong = np.arange(256) * 16
    img2 = read_image(write_dicom(tmp_path / "b.dcm", stored, VOILUTSequence=Sequence([_lut_item(256, 0, 10, wrong)])))
    np.testing.assert_allclose(img2, wrong[stored] / 4095.0, atol=1e-6)


def test_modality_lut_sequence_feeds_the_window(tmp_path: Path) -> None:
    stored = ramp(hi=255).astype(np.uint16)
    item = _lut_item(256, 0, 16, np.arange(256) * 10)
    item.ModalityLUTType = "US"
    path = write_dicom(
        tmp_path / "ml.dcm",
        stored,
        bits_stored=8,
        ModalityLUTSequence=Sequence([item]),
        WindowCenter=1280,
        WindowWidth=1000,
    )
    np.testing.assert_allclose(read_image(path), window_linear(stored * 10.0, 1280, 1000), atol=1e-6)


def test_rgb_dicom_is_luma(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (12, 14, 3), dtype=np.uint8)
    img = read_image(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB", 8))
    np.testing.assert_allclose(img, (rgb @ LUMA) / 255.0, atol=1e-6)


def test_multi_frame_and_missing_pixel_data_are_rejected(tmp_path: Path) -> None:
    frames = np.stack([ramp()] * 3)
    path = write_dicom(tmp_path / "mf.dcm", frames, bits_stored=12)
    with pytest.raises(ImageReadError, match="3 frames"):
        read_image(path)
    with pytest.raises(ImageReadError, match="3 frames"):
        probe_image(path)
    ds = pydicom.dcmread(write_dicom(tmp_path / "np.dcm", ramp()))
    del ds.PixelData
    ds.save_as(tmp_path / "np.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match="no pixel data"):
        read_image(tmp_path / "np.dcm")


# --------------------------------------------------------------------------------------------
# Bad input: one clear, one-line ImageReadError naming the file
# --------------------------------------------------------------------------------------------


def _valid_png_bytes(tmp_path: Path) -> bytes:
    a = RNG.integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "valid.png")
    return (tmp_path / "valid.png").read_bytes()


def _make_bad(kind: str, tmp_path: Path) -> Path:
    if kind == "corrupt_bytes":
        p = tmp_path / "corrupt.png"
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    elif kind == "truncated_png":
        data = _valid_png_bytes(tmp_path)
        p = tmp_path / "truncated.png"
        p.write_bytes(data[: len(data) // 2])
    elif kind == "text_as_png":
        p = tmp_path / "notes.png"
        p.write_text("this is not an image\n")
    elif kind == "random_dcm":
        p = tmp_path / "random.dcm"
        p.write_bytes(RNG.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    elif kind == "truncated_dcm_pixels":
        full = write_dicom(tmp_path / "full.dcm", ramp(64, 64)).read_bytes()
        p = tmp_path / "cut.dcm"
        p.write_bytes(full[: len(full) - 3000])
    elif kind == "missing":
        p = tmp_path / "does_not_exist.png"
    elif kind == "unsupported_suffix":
        p = tmp_path / "table.txt"
        p.write_text("a,b\n1,2\n")
    elif kind == "no_suffix_garbage":
        p = tmp_path / "blob"
        p.write_bytes(b"\x00" * 300)
    elif kind == "too_small_png":
        p = tmp_path / "tiny.png"
        Image.fromarray(np.zeros((4, 20), dtype=np.uint8)).save(p)
    elif kind == "too_small_dcm":
        p = write_dicom(tmp_path / "tiny.dcm", np.zeros((7, 7), dtype=np.uint16))
    elif kind == "directory":
        p = tmp_path / "folder.png"
        p.mkdir()
    else:  # pragma: no cover
        raise AssertionError(kind)
    return p


BAD = {
    "corrupt_bytes": "not a valid PNG/JPEG image",
    "truncated_png": "not a valid PNG/JPEG image",
    "text_as_png": "not a valid PNG/JPEG image",
    "random_dcm": "not a DICOM file",
    "truncated_dcm_pixels": "pixel data",
    "missing": "no such file",
    "unsupported_suffix": "unsupported file type '.txt'; supported: .png, .jpg",
    "no_suffix_garbage": "unrecognised file type",
    "too_small_png": "at least 8x8",
    "too_small_dcm": "at least 8x8",
    "directory": "is a directory",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_raises_one_line_error(kind: str, tmp_path: Path) -> None:
    path = _make_bad(kind, tmp_path)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot read '{path}': ")
    assert BAD[kind] in msg
    assert info.value.path == str(path)
    assert isinstance(info.value, ValueError)
    if kind in ("corrupt_bytes", "truncated_png", "text_as_png", "random_dcm", "truncated_dcm_pixels"):
        assert info.value.__cause__ is not None  # the library's exception is chained


@pytest.mark.parametrize("kind", ["text_as_png", "random_dcm", "missing", "unsupported_suffix", "too_small_png"])
def test_probe_rejects_bad_input(kind: str, tmp_path: Path) -> None:
    path = _make_bad(kind, tmp_path)
    with pytest.raises(ImageReadError, match=BAD[kind]):
        probe_image(path)


def test_probe_matches_read_shape(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((30, 50), dtype=np.uint8)).save(tmp_path / "a.png")
    assert probe_image(tmp_path / "a.png") == read_image(tmp_path / "a.png").shape == (30, 50)
    path = write_dicom(tmp_path / "a.dcm", ramp(40, 20))
    assert probe_image(path) == read_image(path).shape == (40, 20)


def test_image_read_error_pickles() -> None:
    err = ImageReadError("x/a.png", "not a valid PNG/JPEG image (truncated)")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) == "cannot read 'x/a.png': not a valid PNG/JPEG image (truncated)"
    assert back.path == "x/a.png"


# --------------------------------------------------------------------------------------------
# list_images
# --------------------------------------------------------------------------------------------


def test_list_images_empty(tmp_path: Path) -> None:
    assert list_images(tmp_path) == []


def test_list_images_filters_and_sorts(tmp_path: Path) -> None:
    names = ["b.png", "a.dcm", "C.JPG", "d.jpeg", "e.dicom", "g.TIF", "h.bmp", "notes.txt", "f.png.bak",
             ".hidden.png", "noext"]  # fmt: skip
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    # A PACS export's file has no suffix: it is found by DICOM's preamble, a look-alike without one is not.
    (tmp_path / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    (tmp_path / "IM0002").write_bytes(b"\0" * 128 + b"DICX" + b"\0" * 16)
    (tmp_path / "sub.png").mkdir()
    (tmp_path / "sub.png" / "inner.png").write_bytes(b"x")
    got = [p.name for p in list_images(tmp_path)]
    assert got == sorted(["b.png", "a.dcm", "C.JPG", "d.jpeg", "e.dicom", "g.TIF", "h.bmp", "IM0001"])
    assert all(isinstance(p, Path) for p in list_images(str(tmp_path)))
    assert set(IMAGE_SUFFIXES) == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}


def test_list_images_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a directory"):
        list_images(tmp_path / "file.png")
