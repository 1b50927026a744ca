"""The heat map as DICOM: a Parametric Map a viewer can window and overlay, and a Secondary Capture a reviewer can read.

:func:`build_pm` (highdicom ``ParametricMap``): the class-activation map at the source image's rows
and columns, pixel for pixel, as 16-bit stored values (0-255) with a real-world value mapping back
to the model's own values (DCM 130402 "Class activation", UCUM ``1``), a VOI window, and a palette
(``COLOR_RANGE`` with the palette below, an sRGB ICC profile and the stored value range it spans),
JPEG-LS lossless. It references its source image (derivation and referenced image). A Parametric
Map requires a frame of reference and plane geometry, which a projection radiograph does not have:
the map gets a frame of reference of its own (derived from the source UID), a plane at the origin
and the source's pixel spacing (ImagerPixelSpacing, else PixelSpacing, else 1 mm), so its geometry
is self-consistent and claims no relation to any other object.

:func:`build_sc` (highdicom ``SCImage``): what a reviewer wants on a PACS without PM support: the
radiograph at most :data:`SC_MAX_SIDE` pixels on its long side, the heat map blended where it is
high (transparent where it is low, so the film stays readable), a colour legend, the stage and
its probability, the algorithm's name and version, and "NOT FOR DIAGNOSTIC USE" burned in above
the image, encoded as JPEG baseline (the transfer syntax every PACS accepts). Its Burned In
Annotation is NO: nothing burned in identifies the patient.

One palette (:func:`palette`, the piecewise-linear "jet" of the overlays) colours both. The heat
map is min-max scaled per image for display; the PM's real-world value mapping keeps the values.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np

from omsf2.serve.dicom_results import MANUFACTURER, PM_SERIES_NUMBER, SC_SERIES_NUMBER, ModelInfo, ResultUids, code

#: Longest side of the SC in pixels: a reviewer's screen, not the detector.
SC_MAX_SIDE = 1024
#: JPEG quality of the SC (highdicom encodes through Pillow).
SC_JPEG_QUALITY = 90
#: Stored values of the PM: 0..PM_LEVELS-1 (16-bit allocated; the palette has one entry per level).
PM_LEVELS = 256
#: "jet" as piecewise-linear (position, value) knots per channel (matplotlib's segment data).
_JET = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


@functools.lru_cache(maxsize=1)
def palette() -> np.ndarray:
    """The heat-map palette: (PM_LEVELS, 3) uint8 RGB, low to high."""
    x = np.linspace(0.0, 1.0, PM_LEVELS)
    channels = [np.interp(x, [k for k, _ in knots], [v for _, v in knots]) for knots in _JET.values()]
    return np.asarray(np.rint(np.stack(channels, axis=1) * 255.0), dtype=np.uint8)


def _scaled(heat: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(heat min-max scaled to [0, 1], min, max); a flat map is all zeros."""
    h = np.asarray(heat, np.float64)
    lo, hi = float(h.min()), float(h.max())
    return ((h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)), lo, hi


def _spacing(source: Any) -> list[float]:
    for kw in ("ImagerPixelSpacing", "PixelSpacing"):
        try:
            values = [float(v) for v in source.get(kw) or ()]
        except (TypeError, ValueError):
            continue
        if len(values) == 2 and all(v > 0 for v in values):
            return values
    return [1.0, 1.0]


def _with_geometry(source: Any) -> Any:
    """A shallow copy of the source header with the frame of reference and plane a PM requires (see the module)."""
    from pydicom.uid import generate_uid

    ds = copy.copy(source)
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=["omsf2-pm-frame", str(source.SOPInstanceUID)])
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = _spacing(source)
    ds.SliceThickness = 1.0
    return ds


@functools.lru_cache(maxsize=1)
def _icc_profile() -> bytes:
    """Highdicom's bundled sRGB profile (the device class a DICOM palette needs)."""
    import importlib.resources

    return (importlib.resources.files("highdicom") / "_icc_profiles" / "sRGB_v4_ICC_preference.icc").read_bytes()


def _copy_series_context(obj: Any, source: Any) -> None:
    """Body part (so validators know Laterality may be absent) and the source's laterality, as the series has them."""
    for kw in ("BodyPartExamined", "Laterality"):
        value = source.get(kw)
        if value not in (None, ""):
            setattr(obj, kw, value)


def build_pm(source: Any, heatmap: np.ndarray, label: str, model: ModelInfo, uids: ResultUids) -> Any:
    """A ``highdicom.pm.ParametricMap`` of ``heatmap`` (float (rows, columns) of the source) over ``source``.

    Raises:
        ValueError: the heat map's shape is not the source's rows and columns.
    """
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes
    from pydicom.uid import JPEGLSLossless

    rows, cols = int(source.Rows), int(source.Columns)
    if heatmap.shape != (rows, cols):
        raise ValueError(f"heat map {heatmap.shape} does not match the source's {rows}x{cols} pixels")
    scaled, lo, hi = _scaled(heatmap)
    top = PM_LEVELS - 1
    stored = np.asarray(np.rint(scaled * top), dtype=np.uint16)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="omsf2 CAM",
        lut_explanation=f"class activation of {label} ({model.name}), arbitrary units"[:64],
        unit=codes.UCUM.NoUnits,
        value_range=(0, top),
        slope=(hi - lo) / top if hi > lo else 1.0,
        intercept=lo,
        quantity_definition=code("class_activation"),
    )
    lut16 = palette().astype(np.uint16) * 257  # 16-bit entries (the PM's palette descriptor)
    pm = hd.pm.ParametricMap(
        source_images=[_with_geometry(source)],
        pixel_array=stored,
        series_instance_uid=uids.pm_series,
        series_number=PM_SERIES_NUMBER,
        sop_instance_uid=uids.pm,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model.name[:64],
        software_versions=model.version[:64],
        device_serial_number=model.digest[:16],
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=top / 2.0, window_width=float(PM_LEVELS))],
        transfer_syntax_uid=JPEGLSLossless,
        content_label="OMSF2_CAM",
        content_description=f"omsf2 heat map: {label}"[:64],
        palette_color_lut_transformation=hd.PaletteColorLUTTransformation.from_combined_lut(lut16),
        icc_profile=_icc_profile(),
        series_description=f"omsf2 heat map (PM): {model.name}"[:64],
    )
    span = Dataset()
    span.MinimumStoredValueMapped, span.MaximumStoredValueMapped = 0.0, float(top)
    pm.SharedFunctionalGroupsSequence[0].StoredValueColorRangeSequence = [span]  # highdicom does not write it
    _copy_series_context(pm, source)
    return pm


# --------------------------------------------------------------------------- the secondary capture


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def render_sc(image: np.ndarray, heat: np.ndarray, lines: list[str]) -> np.ndarray:
    """The SC's RGB picture: ``image`` ([0, 1] gray) with ``heat`` (same shape) blended, a legend and ``lines`` above.

    Returns:
        uint8 (H, W, 3), H = image rows + a text band, W = image columns + a legend panel.
    """
    from PIL import Image, ImageDraw

    h, w = image.shape
    scaled, _, _ = _scaled(heat)
    colour = palette()[np.rint(scaled * (PM_LEVELS - 1)).astype(np.intp)].astype(np.float32)
    alpha = (0.6 * np.clip((scaled - 0.2) / 0.8, 0.0, 1.0))[..., None]  # low activation: the film as it is
    gray = np.clip(image, 0.0, 1.0)[..., None].astype(np.float32) * 255.0
    blended = np.asarray(np.rint((1.0 - alpha) * gray + alpha * colour), dtype=np.uint8)
    size = max(12, round(max(h, w) / 40))
    band, panel = len(lines) * (size + size // 2) + size, max(4 * size, w // 12)
    canvas = Image.new("RGB", (w + panel, h + band), (0, 0, 0))
    canvas.paste(Image.fromarray(blended, "RGB"), (0, band))
    draw = ImageDraw.Draw(canvas)
    font = _font(size)
    for k, text in enumerate(lines):
        fill = (255, 80, 80) if text.isupper() else (255, 255, 255)
        draw.text((size // 2, size // 2 + k * (size + size // 2)), text, fill=fill, font=font)
    bar_top = band + min(size * 2, h // 4)
    bar_bottom = max(bar_top + 1, h + band - min(size * 2, h // 4))
    bar_x0, bar_x1 = w + panel // 4, w + panel // 4 + max(6, panel // 4)
    ramp = palette()
    for y in range(bar_top, bar_bottom):
        level = min(PM_LEVELS - 1, max(0, round((bar_bottom - 1 - y) / max(1, bar_bottom - 1 - bar_top) * 255)))
        draw.line([(bar_x0, y), (bar_x1, y)], fill=tuple(int(c) for c in ramp[level]))
    draw.text((bar_x0, bar_top - size - 2), "high", fill=(255, 255, 255), font=font)
    draw.text((bar_x0, bar_bottom + 2), "low", fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def sc_size(rows: int, cols: int) -> tuple[int, int]:
    """The (rows, columns) the SC shows the image at: the source's, scaled so the long side is at most SC_MAX_SIDE."""
    scale = min(1.0, SC_MAX_SIDE / max(rows, cols))
    return max(8, round(rows * scale)), max(8, round(cols * scale))


def build_sc(source: Any, image: np.ndarray, heat: np.ndarray, label: str, p: float, model: ModelInfo,
             uids: ResultUids) -> Any:  # fmt: skip
    """A ``highdicom.sc.SCImage`` for a reviewer (see the module docstring).

    Args:
        source: the source image's header.
        image: the radiograph as the model saw it ([0, 1] gray), at :func:`sc_size`.
        heat: the heat map over ``image`` (same shape).
        label: the predicted stage.
        p: its probability.
        model: the algorithm.
        uids: the result UIDs.
    """
    from highdicom.sc import SCImage
    from pydicom.uid import JPEGBaseline8Bit

    lines = [
        f"AI result ({model.name} {model.version}): {label}, p = {p:.2f}",
        "NOT FOR DIAGNOSTIC USE",
    ]
    rgb = render_sc(image, heat, lines)
    orientation = tuple(str(v) for v in (source.get("PatientOrientation") or ()))
    sc = SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation="YBR_FULL_422",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uids.sc_series,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=uids.sc,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=orientation if len(orientation) == 2 else ("L", "F"),
        transfer_syntax_uid=JPEGBaseline8Bit,
        series_description=f"omsf2 heat map (SC): {label}"[:64],
    )
    sc.BurnedInAnnotation = "NO"  # the burned-in text names the algorithm and its result, not the patient
    _copy_series_context(sc, source)
    return sc
