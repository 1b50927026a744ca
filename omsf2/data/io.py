"""Read one radiograph file (PNG, JPEG or DICOM) into a float32 (H, W) image in [0, 1].

This module owns the only path from bytes on disk to pixels: training, dataset validation and
the torch-free runtime all call :func:`read_image`, so a file looks the same everywhere. It
imports numpy, Pillow and pydicom only.

DICOM files go through the display pipeline of PS3.3 C.11 — stored values → Modality LUT
(rescale) → VOI (LUT or window) → MONOCHROME1 inversion — so the array is what a viewer shows,
not raw detector counts. The trade-off: the window written by the modality is trusted, which
makes images from different vendors comparable when the window is sensible and leaves a badly
chosen window baked in; files with no VOI information are min-max normalised instead.
Presentation LUT Shape is not applied: DX images restate MONOCHROME1 as INVERSE there, so
honouring both would invert twice.
pydicom is imported on first DICOM use (a noticeable import), so PNG-only callers never load it.

Every failure is an :class:`ImageReadError` (a ``ValueError``) whose message is one line naming
the file and the reason, with the library's own exception chained as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "find_images",
    "is_dicom_file",
    "is_image_file",
    "list_images",
    "probe_image",
    "read_image",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
"""File suffixes a folder scan picks up (compared case-insensitively); DICOM files are also found by content."""

_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_DICOM_SUFFIXES = (".dcm", ".dicom")
_MIN_SIDE = 8
# ITU-R BT.601-2 luma weights, the same that Pillow's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_EXIF_ORIENTATION = 0x0112


class ImageReadError(ValueError):
    """A file could not be read as an image.

    The message is one line: ``cannot read '<path>': <reason>``.

    Attributes:
        path: the file, as given by the caller.
        reason: why it could not be read.

    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = _one_line(reason)
        super().__init__(f"cannot read '{self.path}': {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


def _one_line(text: object, limit: int = 400) -> str:
    """Collapse whitespace (newlines included) and cut very long library messages."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    msg = _one_line(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG, JPEG or DICOM file into a grayscale image.

    The reader is chosen by suffix (case-insensitive); a file with no or another suffix is
    sniffed: DICOM when bytes 128:132 are ``b"DICM"``, else whatever Pillow recognises.

    PNG/JPEG: EXIF orientation is applied; 8-bit data is divided by 255, 16-bit data by 65535;
    colour (RGB, RGBA, palette, CMYK, ...) becomes ITU-R 601-2 luma computed in float; alpha is
    ignored (Pillow reduces 16-bit colour PNGs to 8 bits per channel). DICOM: see the module
    docstring.

    Args:
        path: the file.

    Returns:
        float32 array of shape (H, W), C-contiguous, finite, values in [0, 1].

    Raises:
        ImageReadError: the file is missing, of an unsupported type, corrupt, smaller than
            8x8 pixels, or its pixel data cannot be decoded.

    """
    label = os.fspath(path)
    kind = _kind(label)
    img = _read_dicom(label) if kind == "dicom" else _read_pil(label)
    _check_size(label, img.shape)
    out = np.clip(img, 0.0, 1.0)
    if not np.isfinite(out).all():  # NaN survives clip; e.g. a NaN rescale slope
        raise ImageReadError(label, "pixel values are not finite (NaN or infinity)")
    return np.ascontiguousarray(out, dtype=np.float32)


def probe_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return the (H, W) that :func:`read_image` would return, without decoding the pixels.

    PNG/JPEG: Pillow's header size, swapped when the EXIF orientation is a 90° rotation.
    DICOM: Rows and Columns of a header-only read.

    Args:
        path: the file.

    Returns:
        (H, W) in pixels.

    Raises:
        ImageReadError: as :func:`read_image` for a missing, unsupported, corrupt, multi-frame
            or too small file; pixel-data problems are only found by :func:`read_image`.

    """
    label = os.fspath(path)
    if _kind(label) == "dicom":
        with _quiet_pydicom(label):
            ds = _dcmread(label, stop_before_pixels=True)
            _check_frames(label, ds)
            try:
                hw = (int(ds.Rows), int(ds.Columns))
            except (AttributeError, TypeError, ValueError) as exc:
                raise ImageReadError(label, "DICOM has no valid Rows/Columns") from exc
    else:
        try:
            with Image.open(label) as img:
                w, h = img.size
                orientation = _exif_orientation(img)
        except Image.DecompressionBombError as exc:
            raise ImageReadError(label, f"image is too large to decode safely ({_one_line(exc)})") from exc
        except UnidentifiedImageError as exc:
            raise ImageReadError(label, "not a valid PNG/JPEG image (unrecognised format)") from exc
        except Exception as exc:
            raise ImageReadError(label, f"not a valid PNG/JPEG image ({_describe(exc)})") from exc
        hw = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    _check_size(label, hw)
    return hw


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether a folder scan takes ``path``: a regular file with an image suffix, or a DICOM file by content.

    PACS exports name files ``IM0001`` or ``1.2.840...`` without a suffix: a file whose suffix is not
    an image suffix is taken when it carries DICOM's preamble (``DICM`` at byte 128), which costs one
    132-byte read. A TIFF or BMP is taken as PNG and JPEG are (and read the same way when named).
    """
    p = Path(path)
    if not p.is_file():
        return False
    return p.suffix.lower() in IMAGE_SUFFIXES or is_dicom_file(p)


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is DICOM: a DICOM suffix (``.dcm``, ``.dicom``) or DICOM's preamble (``DICM`` at byte 128)."""
    p = Path(path)
    if p.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """List the image files directly inside a folder.

    Args:
        folder: the directory to list (not recursed into).

    Returns:
        Sorted paths of the regular files :func:`is_image_file` takes (an image suffix,
        case-insensitive, or DICOM content); hidden files (names starting with ".") are skipped.

    Raises:
        ValueError: the folder does not exist or is not a directory.

    """
    root = Path(folder)
    if not root.exists():
        raise ValueError(f"image folder '{os.fspath(folder)}' does not exist")
    if not root.is_dir():
        raise ValueError(f"image folder '{os.fspath(folder)}' is not a directory")
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and is_image_file(p))


def find_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files under a folder, recursively (:func:`is_image_file`), sorted; hidden files and folders skipped.

    Raises:
        ValueError: the folder does not exist or is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"image folder '{os.fspath(folder)}' does not exist or is not a directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames if not f.startswith(".") and is_image_file(Path(dirpath) / f)]
    return sorted(found)


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def _kind(label: str) -> str:
    """Return "dicom" or "pil" for an existing file, or raise ImageReadError."""
    p = Path(label)
    if not p.exists():
        raise ImageReadError(label, "no such file")
    if p.is_dir():
        raise ImageReadError(label, "is a directory, not an image file")
    suffix = p.suffix.lower()
    if suffix in _DICOM_SUFFIXES:
        return "dicom"
    if suffix in _PIL_SUFFIXES:
        return "pil"
    try:
        with open(label, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise ImageReadError(label, _describe(exc)) from exc
    if head[128:132] == b"DICM":
        return "dicom"
    try:
        with Image.open(label):
            return "pil"
    except Image.DecompressionBombError:
        return "pil"  # recognised; _read_pil reports it as too large
    except Exception as exc:
        what = f"unsupported file type '{suffix}'" if suffix else "unrecognised file type (no suffix)"
        raise ImageReadError(label, f"{what}; supported: {', '.join(IMAGE_SUFFIXES)}") from exc


def _check_size(label: str, hw: tuple[int, ...]) -> None:
    if len(hw) != 2 or min(hw) < _MIN_SIDE:
        shape = "x".join(str(s) for s in hw)
        raise ImageReadError(label, f"image is {shape} pixels; at least {_MIN_SIDE}x{_MIN_SIDE} is needed")


# --------------------------------------------------------------------------------------------
# PNG / JPEG (Pillow)
# --------------------------------------------------------------------------------------------


def _exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        return 1


def _read_pil(label: str) -> np.ndarray:
    try:
        with Image.open(label) as opened:
            opened.load()  # decode now so that truncated files fail here
            img: Image.Image = opened
            try:
                transposed = ImageOps.exif_transpose(opened)
                if transposed is not None:
                    img = transposed
            except Exception as exc:
                logger.warning("ignoring unreadable EXIF orientation of '%s': %s", label, _describe(exc))
            return _pil_to_gray(img, label)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(label, f"image is too large to decode safely ({_one_line(exc)})") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(label, "not a valid PNG/JPEG image (unrecognised format)") from exc
    except Exception as exc:  # OSError (truncated), SyntaxError (bad chunk), struct.error, ...
        raise ImageReadError(label, f"not a valid PNG/JPEG image ({_describe(exc)})") from exc


def _luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, >=3) → (H, W) float64 luma of the first three channels (alpha ignored)."""
    return np.asarray(rgb[..., :3], dtype=np.float64) @ _LUMA


def _pil_to_gray(img: Image.Image, label: str) -> np.ndarray:
    """Convert a decoded Pillow image to float64 (H, W) in [0, 1]."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.float64) / 255.0
    if mode == "LA":
        return np.asarray(img.getchannel(0), dtype=np.float64) / 255.0
    if mode == "La":  # premultiplied alpha: undo it first
        return np.asarray(img.convert("LA").getchannel(0), dtype=np.float64) / 255.0
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.float64) / 65535.0
    if mode == "I":
        arr = np.asarray(img).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            logger.warning(
                "'%s': 32-bit integer pixels span [%g, %g]; clipping to the 16-bit range [0, 65535]",
                label,
                arr.min(),
                arr.max(),
            )
            arr = np.clip(arr, 0, 65535)
        return arr / 65535.0
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ImageReadError(label, "floating-point image contains NaN or infinity")
        logger.warning("'%s': floating-point image, min-max normalising it to [0, 1]", label)
        return _minmax(arr)
    if mode in ("RGB", "RGBA", "RGBX"):
        return _luma(np.asarray(img)) / 255.0
    if mode in ("P", "PA"):
        return _luma(np.asarray(img.convert("RGBA"))) / 255.0
    # CMYK, YCbCr, LAB, HSV, RGBa and any other 8-bit mode: let Pillow bring it to RGB first.
    return _luma(np.asarray(img.convert("RGB"))) / 255.0


# --------------------------------------------------------------------------------------------
# DICOM (pydicom)
# --------------------------------------------------------------------------------------------


def _dcmread(label: str, stop_before_pixels: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(label, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise ImageReadError(label, "not a DICOM file") from exc
    except Exception as exc:
        raise ImageReadError(label, f"corrupt DICOM file ({_describe(exc)})") from exc


def _check_frames(label: str, ds: Any) -> None:
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        raise ImageReadError(label, f"multi-frame DICOM ({frames} frames); only single-frame images are supported")


def _first_number(value: Any) -> float:
    """Return the first value of a possibly multi-valued DS/IS element as a float."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _decode_dicom_pixels(label: str, ds: Any) -> tuple[np.ndarray, str, int]:
    """Decode the pixel data; return (array, photometric interpretation of it, bits stored)."""
    from pydicom.pixels import get_decoder

    file_meta = getattr(ds, "file_meta", None)
    ts = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if ts is None:
        raise ImageReadError(label, "DICOM has no Transfer Syntax UID in its file meta information")
    name = getattr(ts, "name", str(ts)) or str(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise ImageReadError(label, f"no decoder exists for {name} pixel data ({ts})") from exc
    as_array: Any = decoder.as_array  # pydicom annotates its **kwargs as the options TypedDict
    options = [_requirement(dep) for dep in decoder.missing_dependencies]
    options = [o for o in options if o]
    if not decoder.is_available:
        hint = f"install one of: {' | '.join(options)}" if options else "no plugin is available"
        raise ImageReadError(label, f"{name} pixel data needs a decoder that is not installed; {hint}")
    try:
        arr, meta = as_array(ds, as_rgb=True)
    except Exception as exc:
        hint = f" (another decoder may help: {' | '.join(options)})" if options else ""
        raise ImageReadError(label, f"cannot decode {name} pixel data: {_one_line(exc)}{hint}") from exc
    photometric = str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation", "")))
    bits = int(meta.get("bits_stored") or ds.get("BitsStored") or arr.dtype.itemsize * 8)
    return arr, photometric.strip().upper(), bits


def _requirement(dep: str) -> str:
    """Shorten 'pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1' to 'a + b'."""
    req = dep.split("requires", 1)[-1]
    parts = [p.strip() for p in re.split(r"\band\b|,", req)]
    return " + ".join(p for p in parts if p and p != "numpy")


@contextlib.contextmanager
def _quiet_pydicom(label: str) -> Iterator[None]:
    """Turn pydicom's warnings about malformed-but-readable headers into DEBUG logs naming the file.

    pydicom both warns and logs (on its own handler, at a level it sets when imported) while it
    parses lazily; on a terminal that buries the one line that matters, the image or the
    ImageReadError. Both are caught for the duration of the read and re-logged at DEBUG here.
    """

    def to_debug(record: logging.LogRecord) -> bool:
        logger.debug("%s: %s", label, record.getMessage(), exc_info=record.exc_info)
        return False

    # A logger's filters see only records logged on it, not those its children propagate, and
    # pydicom logs decoder failures (with a traceback) on "pydicom.pixels.decoders.base": filter
    # every pydicom logger, once pydicom's modules have imported and created them.
    import pydicom.pixels  # noqa: F401

    manager = logging.Logger.manager
    names = ["pydicom"] + [n for n in list(manager.loggerDict) if n.startswith("pydicom.")]
    pd_loggers = [lg for n in names if isinstance(lg := logging.getLogger(n), logging.Logger)]
    for lg in pd_loggers:
        lg.addFilter(to_debug)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for lg in pd_loggers:
                lg.removeFilter(to_debug)
            for w in caught:
                logger.debug("%s: %s", label, w.message)


def _read_dicom(label: str) -> np.ndarray:
    with _quiet_pydicom(label):
        return _read_dicom_pixels(label)


def _read_dicom_pixels(label: str) -> np.ndarray:
    ds = _dcmread(label)
    if "PixelData" not in ds:
        raise ImageReadError(label, "DICOM has no pixel data")
    _check_frames(label, ds)
    arr, photometric, bits = _decode_dicom_pixels(label, ds)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    try:
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            if arr.ndim != 2:
                raise ImageReadError(label, f"monochrome pixel data has shape {arr.shape}, expected 2-D")
            return _dicom_gray(label, ds, arr, invert=photometric == "MONOCHROME1")
        return _dicom_colour(label, ds, arr, photometric, bits)
    except ImageReadError:
        raise
    except Exception as exc:  # malformed LUTs or window values in an otherwise readable file
        raise ImageReadError(label, f"invalid DICOM value transforms ({_describe(exc)})") from exc


def _dicom_colour(label: str, ds: Any, arr: np.ndarray, photometric: str, bits: int) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, convert_color_space

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return _luma(rgb) / float(np.iinfo(rgb.dtype).max)
    if photometric in ("YBR_FULL", "YBR_FULL_422") and arr.dtype == np.uint8:
        arr = convert_color_space(arr, photometric, "RGB")  # only if the decoder left it as YCbCr
        photometric = "RGB"
    if photometric != "RGB" or arr.ndim != 3 or arr.shape[-1] != 3:
        raise ImageReadError(
            label,
            f"unsupported photometric interpretation {photometric!r} with pixel shape {arr.shape}; "
            "supported: MONOCHROME1, MONOCHROME2, RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR",
        )
    return _luma(arr) / float(2 ** max(1, bits) - 1)


def _dicom_gray(label: str, ds: Any, stored: np.ndarray, invert: bool) -> np.ndarray:
    """Map stored values through Modality LUT → VOI → [0, 1] (→ inverted for MONOCHROME1), float64."""
    from pydicom.pixels import apply_modality_lut

    x = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if not np.isfinite(x).all():
        raise ImageReadError(label, "the Modality LUT / rescale gives non-finite values")
    y = None
    if ds.get("VOILUTSequence"):
        y = _apply_voi_lut_sequence(label, ds, x)
    if y is None and ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        y = _apply_window(label, ds, x)
    if y is None:
        y = _minmax(x)
    return 1.0 - y if invert else y


def _apply_voi_lut_sequence(label: str, ds: Any, x: np.ndarray) -> np.ndarray | None:
    """Apply the first VOI LUT and scale its output to [0, 1]; None if the LUT is unusable.

    The output range is 0 .. 2**n - 1 with n the third LUT Descriptor value (PS3.3 C.11.2.1.1),
    as DCMTK does. When the LUT data exceed that range (a wrong descriptor), n is taken from the
    largest entry instead.
    """
    from pydicom.pixels import apply_voi_lut

    item = ds.VOILUTSequence[0]
    desc = item.get("LUTDescriptor")
    if desc is None or item.get("LUTData") is None or len(desc) < 3:
        logger.warning("'%s': VOI LUT Sequence without a complete LUT; ignoring it", label)
        return None
    n_entries = int(desc[0]) or 65536
    first = int(desc[1])
    bits = int(desc[2])
    # Values outside the LUT's input range map to its first/last entry; clip here so that the
    # integer conversion pydicom does cannot wrap around.
    idx = np.clip(np.rint(x), first, first + n_entries - 1).astype(np.int64)
    try:
        table = np.asarray(apply_voi_lut(np.arange(first, first + n_entries, dtype=np.int64), ds))
        out = np.asarray(apply_voi_lut(idx, ds, prefer_lut=True), dtype=np.float64)
    except Exception as exc:
        logger.warning("'%s': cannot apply the VOI LUT (%s); ignoring it", label, _describe(exc))
        return None
    top = float(2**bits - 1) if 1 <= bits <= 16 else 0.0
    lut_max = float(table.max()) if table.size else 0.0
    if lut_max > top:
        top = float(2 ** int(lut_max).bit_length() - 1)
        logger.warning(
            "'%s': VOI LUT entries reach %d but the descriptor declares %d bits; using %d as full scale",
            label,
            int(lut_max),
            bits,
            int(top),
        )
    if top <= 0:
        return np.zeros_like(out)
    return np.clip(out / top, 0.0, 1.0)


def _apply_window(label: str, ds: Any, x: np.ndarray) -> np.ndarray | None:
    """PS3.3 C.11.2.1.2 windowing straight to [0, 1]; None (→ min-max) for an invalid window."""
    try:
        c = _first_number(ds.WindowCenter)
        w = _first_number(ds.WindowWidth)
    except (TypeError, ValueError, IndexError) as exc:
        logger.warning("'%s': unreadable window (%s); min-max normalising instead", label, _describe(exc))
        return None
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        logger.warning("'%s': unknown VOI LUT Function %r; using LINEAR", label, function)
        function = "LINEAR"
    min_width = 1.0 if function == "LINEAR" else 0.0
    valid = np.isfinite(c) and np.isfinite(w) and (w >= min_width if function == "LINEAR" else w > 0)
    if not valid:
        logger.warning(
            "'%s': invalid window center %r / width %r for %s (width must be %s %g); min-max normalising instead",
            label,
            c,
            w,
            function,
            ">=" if function == "LINEAR" else ">",
            min_width,
        )
        return None
    if function == "LINEAR_EXACT":
        return np.clip((x - c) / w + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        # 1 / (1 + exp(-4 (x - c) / w)), written with tanh so large |x - c| cannot overflow.
        return 0.5 * (1.0 + np.tanh(2.0 * (x - c) / w))
    lo = c - 0.5 - (w - 1.0) / 2.0
    hi = c - 0.5 + (w - 1.0) / 2.0
    ramp = (x - (c - 0.5)) / max(w - 1.0, 1e-12) + 0.5
    return np.where(x <= lo, 0.0, np.where(x > hi, 1.0, np.clip(ramp, 0.0, 1.0)))


def _minmax(x: np.ndarray) -> np.ndarray:
    """Linearly map [min, max] to [0, 1]; a constant image becomes zeros."""
    if x.size == 0:
        return np.zeros_like(x, dtype=np.float64)
    lo = float(x.min())
    hi = float(x.max())
    if not hi > lo:
        return np.zeros_like(x, dtype=np.float64)
    return (x - lo) / (hi - lo)
