"""Calibration and evaluation images for INT8: through exactly the checkpoint's preprocessing.

A folder is either ``DIR/<class>/*`` (class names must be the checkpoint's; the selection is then
stratified by class) or a flat ``DIR/*`` of images (calibration only: no labels, no strata).
Every image goes through :func:`omsf2.data.io.read_image` and
:func:`omsf2.data.preprocess.preprocess` with the checkpoint's :class:`PreprocessSpec`: the same
numpy code that training and the runtime use, so calibration sees what deployment sees.

The trade-off: an unreadable file is an error naming it, not a silently skipped image, because a
calibration set with foreign files in it is usually the wrong folder.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.config import PreprocessSpec
from omsf2.data import io as dio
from omsf2.data.preprocess import preprocess

# OP_TYPES: the op types whose inputs and outputs get activation ranges, i.e. those the quantizer
# may place Q/DQ on.
from omsf2.export.qdq_placement import OP_TYPES

log = logging.getLogger(__name__)

MIN_CALIB_IMAGES = 64
DEFAULT_CALIB_COUNT = 512
PERCENTILE = 99.999
MSE_BINS = 2048


class CalibMethod(str, enum.Enum):
    """How activation ranges are chosen from the calibration images.

    ``percentile`` (onnxruntime's, 99.999th of |x|) is the default: on the cxr-real checkpoint it
    lost the least accuracy of the four, where ``max`` let rare large activations stretch the
    ranges. ``mse`` picks, per tensor, the clipping threshold minimising the expected squared
    quantization error over the |x| histogram (onnxruntime has no MSE calibrator).
    """

    MAX = "max"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"
    MSE = "mse"


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """Preprocessed images, their labels (-1 where unknown) and where they came from.

    Attributes:
        images: float32 (N, C, H, W), through the checkpoint's preprocessing.
        labels: int64 (N,) class indices, -1 where unknown.
        paths: one file per image (the image's id).
        classes: class names of the labels.
        root: the folder the images came from.
        patients: one patient (or split-group) id per image where known, else empty
            (:func:`omsf2.export.gate_data.annotate` fills it in).
        attributes: per-image values of the DICOM attributes the gate groups by (``modality``,
            ``manufacturer``, ``photometric_interpretation``), each a tuple of N strings; empty
            for PNG/JPEG sets.
    """

    images: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...]
    classes: tuple[str, ...]
    root: str
    patients: tuple[str, ...] = ()
    attributes: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def per_class(self) -> dict[str, int]:
        """Images per class (empty for an unlabelled set)."""
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def subset(self, index: np.ndarray | list[int], root: str | None = None) -> ImageSet:
        """The images at ``index`` (in that order), with their labels, ids, patients and attributes."""
        idx = np.asarray(index, dtype=np.int64)
        return ImageSet(
            self.images[idx],
            self.labels[idx],
            tuple(self.paths[i] for i in idx),
            self.classes,
            self.root if root is None else root,
            tuple(self.patients[i] for i in idx) if self.patients else (),
            {k: tuple(v[i] for i in idx) for k, v in self.attributes.items()},
        )


@dataclasses.dataclass(frozen=True)
class CalibrationSpec:
    """Which calibration images :func:`load_calibration` takes.

    Attributes:
        root: ``DIR/<class>/*`` or a flat ``DIR/*`` of images.
        count: images to take (all when fewer are available, but at least ``min_count``).
        seed: seed of the per-class selection.
        min_count: fewer usable images than this is an error.
    """

    root: str
    count: int = DEFAULT_CALIB_COUNT
    seed: int = 0
    min_count: int = MIN_CALIB_IMAGES

    def __post_init__(self) -> None:
        if self.count < self.min_count:
            raise ValueError(f"--calib-count must be at least {self.min_count}, got {self.count}")


def _scan(root: str | os.PathLike[str], classes: tuple[str, ...], what: str, labelled: bool) -> dict[int, list[Path]]:
    """Image files by class index (-1 for a flat folder)."""
    r = Path(root)
    if not r.is_dir():
        raise ValueError(f"{what} folder '{r}' does not exist or is not a folder")
    subdirs = sorted(p for p in r.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        names = [p.name for p in subdirs]
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise ValueError(
                f"{what} folder '{r}' has class folder(s) {unknown} that the checkpoint does not know "
                f"(its classes: {', '.join(classes)})"
            )
        return {classes.index(p.name): dio.list_images(p) for p in subdirs}
    if labelled:
        raise ValueError(
            f"{what} folder '{r}' needs one sub-folder per class ({', '.join(classes)}) holding the images"
        )
    return {-1: dio.list_images(r)}


def _load(files: list[tuple[int, Path]], spec: PreprocessSpec, what: str) -> np.ndarray:
    out = np.empty((len(files), spec.channels, *spec.size), np.float32)
    for i, (_, f) in enumerate(files):
        try:
            out[i] = preprocess(dio.read_image(f), spec)
        except (TypeError, ValueError) as e:
            # read_image's message already names the file; preprocess's does not.
            msg = str(e) if str(f) in str(e) else f"'{f}': {e}"
            raise ValueError(f"{what} image {msg} (every file there must be a readable radiograph)") from e
    return out


def load_calibration(spec: CalibrationSpec, pre: PreprocessSpec, classes: tuple[str, ...] | list[str]) -> ImageSet:
    """Select and preprocess calibration images, stratified by class.

    Each class contributes ``count / n_classes`` images (a class with fewer gives all it has and
    the rest is filled from the others), chosen by a seeded shuffle.

    Raises:
        ValueError: missing folder, foreign class folders, an unreadable image, or fewer than
            ``spec.min_count`` images.
    """
    cls = tuple(classes)
    by_class = _scan(spec.root, cls, "calibration", labelled=False)
    total = sum(len(v) for v in by_class.values())
    if total < spec.min_count:
        raise ValueError(
            f"calibration folder '{spec.root}' holds {total} image(s); INT8 calibration needs at least "
            f"{spec.min_count} ({', '.join(dio.IMAGE_SUFFIXES)})"
        )
    rng = np.random.default_rng(spec.seed)
    pools = {k: [v[i] for i in rng.permutation(len(v))] for k, v in sorted(by_class.items())}
    want = min(spec.count, total)
    chosen: list[tuple[int, Path]] = []
    # Round-robin over classes: stratified, and classes that run out leave room for the others.
    pos = dict.fromkeys(pools, 0)
    while len(chosen) < want:
        for k, files in pools.items():
            if pos[k] < len(files) and len(chosen) < want:
                chosen.append((k, files[pos[k]]))
                pos[k] += 1
    chosen.sort(key=lambda kf: str(kf[1]))
    images = _load(chosen, pre, "calibration")
    log.info("calibration: %d images from %s", len(chosen), spec.root)
    return ImageSet(
        images,
        np.array([k for k, _ in chosen], np.int64),
        tuple(str(f) for _, f in chosen),
        cls if -1 not in pools else (),
        str(spec.root),
    )


def load_eval(root: str | os.PathLike[str], pre: PreprocessSpec, classes: tuple[str, ...] | list[str]) -> ImageSet:
    """Every image of a labelled ``DIR/<class>/*`` folder, preprocessed (the accuracy gate's data).

    Raises:
        ValueError: missing folder, no class sub-folders, foreign classes, no images, unreadable image.
    """
    cls = tuple(classes)
    by_class = _scan(root, cls, "eval", labelled=True)
    files = [(k, f) for k, fs in sorted(by_class.items()) for f in fs]
    if not files:
        raise ValueError(f"eval folder '{root}' holds no images ({', '.join(dio.IMAGE_SUFFIXES)})")
    images = _load(files, pre, "eval")
    return ImageSet(images, np.array([k for k, _ in files], np.int64), tuple(str(f) for _, f in files), cls, str(root))


def check_disjoint(calib: ImageSet, evaluation: ImageSet, what: str = "--eval-data") -> None:
    """The gate means nothing on images the ranges were fitted to.

    Raises:
        ValueError: the two sets share files.
    """
    shared = {os.path.realpath(p) for p in calib.paths} & {os.path.realpath(p) for p in evaluation.paths}
    if shared:
        raise ValueError(
            f"{what} shares {len(shared)} image(s) with --calib-data (e.g. '{sorted(shared)[0]}'); "
            "the accuracy gate needs images that calibration did not see"
        )


class _Reader:
    """onnxruntime CalibrationDataReader over preprocessed images (batches of 16)."""

    BATCH = 16

    def __init__(self, images: np.ndarray, input_name: str) -> None:
        self.images = images
        self.input_name = input_name
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.images):
            return None
        batch = self.images[self.pos : self.pos + self.BATCH]
        self.pos += self.BATCH
        return {self.input_name: np.ascontiguousarray(batch)}

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.BATCH)


def _mse_threshold(hist: np.ndarray, edges: np.ndarray, levels: int = 127) -> float:
    """Clipping threshold T over a histogram of |x| minimising E[(x - q(x))^2] for scale T / levels."""
    centers = (edges[:-1] + edges[1:]) / 2
    weights = hist.astype(np.float64)
    best_t, best_err = float(edges[-1]), math.inf
    for k in range(max(1, len(edges) // 64), len(edges), max(1, len(edges) // 256)):
        t = float(edges[k])
        if t <= 0:
            continue
        step = t / levels
        inside = centers <= t
        err = np.sum(weights[inside]) * step * step / 12 + np.sum(weights[~inside] * (centers[~inside] - t) ** 2)
        if err < best_err:
            best_t, best_err = t, float(err)
    return best_t


def calibrate_ranges(
    model_path: str, images: np.ndarray, method: CalibMethod, work: str, percentile: float = PERCENTILE
) -> Any:
    """Run onnxruntime's calibrator once; returns its ``TensorsData`` (MSE computed here from histograms).

    ``percentile`` is the share of |x| (in %) the ``percentile`` method keeps inside the range.
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorData,
        TensorsData,
        create_calibrator,
    )

    ort_method = {
        CalibMethod.MAX: CalibrationMethod.MinMax,
        CalibMethod.ENTROPY: CalibrationMethod.Entropy,
        CalibMethod.PERCENTILE: CalibrationMethod.Percentile,
        CalibMethod.MSE: CalibrationMethod.Percentile,  # collects the symmetric |x| histograms we need
    }[method]
    # Signed histograms: a post-ReLU tensor keeps its [0, T] range for the uint8 flavour; the
    # S8S8 flavour symmetrises it to [-T, T] in the quantizer anyway.
    extra: dict[str, Any] = {"percentile": percentile, "symmetric": False} if method is CalibMethod.PERCENTILE else {}
    if method is CalibMethod.MSE:
        extra = {"symmetric": True, "num_bins": MSE_BINS}
    calibrator = create_calibrator(
        Path(model_path),
        list(OP_TYPES),
        augmented_model_path=os.path.join(work, "augmented.onnx"),
        calibrate_method=ort_method,
        extra_options=extra,
    )
    # One batch per call: onnxruntime keeps every calibrated tensor of every image it was given until
    # the call ends (GiBs at 448 px), and its collectors merge ranges and histograms across calls.
    for i in range(0, len(images), _Reader.BATCH):
        calibrator.collect_data(_Reader(images[i : i + _Reader.BATCH], "image"))
    if method is not CalibMethod.MSE:
        return calibrator.compute_data()
    data = {}
    for name, (hist, edges, lo, hi) in calibrator.collector.histogram_dict.items():
        t = _mse_threshold(np.asarray(hist), np.asarray(edges))
        data[name] = TensorData(lowest=np.float32(max(float(lo), -t)), highest=np.float32(min(float(hi), t)))
    return TensorsData(CalibrationMethod.Percentile, data)
