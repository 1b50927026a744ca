"""The Predictor: radiographs in; stage, class probabilities and heat map out. No torch.

Files are read by :func:`omsf2.data.io.read_image` and preprocessed by
:func:`omsf2.data.preprocess.preprocess`, the code training used, with the spec recorded in the
bundle; the heat map comes back through :func:`omsf2.data.preprocess.unletterbox`, so it lies
over the original image. One session per predictor (:mod:`omsf2.runtime.sessions`) is created
once and shared: :meth:`Predictor.predict` may be called from several threads at once (reading
and preprocessing run in the caller's thread, the backend sessions are thread-safe), and splits
its input into batches of at most the bundle's ``max_batch``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.data.io import ImageReadError, read_image
from omsf2.data.preprocess import preprocess, unletterbox
from omsf2.runtime.bundle import Bundle, load_model_folder
from omsf2.runtime.sessions import AUTO_ORDER, BACKEND_NAMES, BackendUnavailable, Session, backend_row

log = logging.getLogger(__name__)

#: DICOM modalities of projection radiographs (CR computed, DX digital radiography; DR as some devices write it).
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR"})
_DICOM_SUFFIXES = (".dcm", ".dicom")

ImageInput = str | os.PathLike[str] | np.ndarray


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's result.

    Attributes:
        source: the file, or ``array[i]`` for an in-memory image.
        label: the predicted class.
        probabilities: class -> probability (softmax; sigmoid per class for multilabel models).
        heatmap: float32 (h, w) class-activation map over the original image, letterbox undone.
        timing: seconds spent on ``read``, ``preprocess`` and ``infer`` (the batch's share).
    """

    source: str
    label: str
    probabilities: dict[str, float]
    heatmap: np.ndarray = dataclasses.field(repr=False)
    timing: dict[str, float]


@dataclasses.dataclass(frozen=True)
class FileResult:
    """A file's outcome in :meth:`Predictor.predict_files`: a prediction or the reason it failed."""

    source: str
    prediction: Prediction | None = None
    error: str | None = None


def dicom_modality_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a DICOM file is not a projection radiograph (its Modality), or None (also for non-DICOM files)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return None  # read_image reports unreadable files with their reason
    if p.suffix.lower() not in _DICOM_SUFFIXES and head[128:132] != b"DICM":
        return None
    try:
        import pydicom

        ds = pydicom.dcmread(p, stop_before_pixels=True, force=True, specific_tags=["Modality"])
    except Exception:
        return None  # a corrupt file: read_image says why
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality not in RADIOGRAPH_MODALITIES:
        return (
            f"DICOM modality {modality or 'missing'!r} is not a projection radiograph "
            f"({', '.join(sorted(RADIOGRAPH_MODALITIES))}); pass --any-modality to run it anyway"
        )
    return None


def activation(task: str, logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits ``(N, K)``: softmax per row, or a sigmoid per finding for multi-label."""
    x = logits.astype(np.float64)
    if task == "multilabel":
        return 1.0 / (1.0 + np.exp(-x))
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """Runs one verified bundle on one backend; see the module docstring.

    Build it with :meth:`from_bundle` (a bundle or an export folder); ``backend`` picks the session:
    ``auto`` (TensorRT where an engine, TensorRT and a GPU are present, else onnxruntime FP32),
    ``ort``, ``ort-int8``, ``openvino``, ``openvino-int8``, ``tensorrt`` or ``ort-cuda``.
    """

    def __init__(self, bundle: Bundle, session: Session) -> None:
        self.bundle = bundle
        self.session = session
        self.classes = bundle.classes
        self.spec = bundle.preprocess
        self.max_batch = max(1, min(bundle.max_batch, session.max_batch or bundle.max_batch))

    @property
    def backend(self) -> str:
        """The backend the predictor runs on."""
        return self.session.name

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], backend: str = "auto", threads: int = 0) -> Predictor:
        """Verify a bundle (or an ``omsf2 export`` folder) and open a session on it.

        Args:
            path: the bundle folder (``manifest.json``) or export folder (``report.json``).
            backend: one of :data:`omsf2.runtime.sessions.BACKEND_NAMES`.
            threads: CPU threads for onnxruntime/OpenVINO (0: the backend's default).

        Raises:
            ValueError: unknown backend, a tampered bundle (:class:`BundleError`), or a backend
                whose file is not in the bundle or whose stack is not installed (one line each).
        """
        if backend not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
        if not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be a non-negative integer, got {threads!r}")
        bundle = load_model_folder(path)
        return cls(bundle, open_session(bundle, backend, threads))

    # ------------------------------------------------------------------ prediction

    def predict(self, images: Sequence[ImageInput]) -> list[Prediction]:
        """Predict each image (paths are read, arrays must be read_image-style [0, 1] floats).

        Raises:
            ImageReadError, ValueError, TypeError: the first image that cannot be read or preprocessed.
            FloatingPointError: the model produced non-finite logits or heat map.
        """
        out: list[Prediction] = []
        for i in range(0, len(images), self.max_batch):
            chunk = images[i : i + self.max_batch]
            loaded = [self._load(img, i + k) for k, img in enumerate(chunk)]
            out += self._infer(loaded)
        return out

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        any_modality: bool = False,
        on_result: Callable[[FileResult], None] | None = None,
    ) -> list[FileResult]:
        """Predict files one batch at a time; a file that fails is reported, the rest go on.

        Args:
            paths: image files (PNG, JPEG, DICOM).
            any_modality: accept DICOMs whatever their Modality (default: CR, DX, DR only).
            on_result: called with each file's result as it is ready (progress, streaming output).

        Returns:
            One :class:`FileResult` per path, in order.
        """
        results: list[FileResult] = []
        for i in range(0, len(paths), self.max_batch):
            good: list[tuple[str, np.ndarray, np.ndarray, float, float]] = []
            slot: list[FileResult | None] = []
            for p in paths[i : i + self.max_batch]:
                try:
                    why = None if any_modality else dicom_modality_problem(p)
                    if why:
                        raise ValueError(why)
                    good.append(self._load(p, 0))
                    slot.append(None)
                except (ImageReadError, ValueError, TypeError, OSError, MemoryError) as e:
                    msg = " ".join(str(e).split()) or type(e).__name__
                    slot.append(FileResult(os.fspath(p), error=msg.replace(f"cannot read '{os.fspath(p)}': ", "")))
            preds = iter(self._infer(good))
            for r in slot:
                if r is None:
                    pred = next(preds)
                    r = FileResult(pred.source, prediction=pred)
                results.append(r)
                if on_result is not None:
                    on_result(r)
        return results

    def _load(self, image: ImageInput, index: int) -> tuple[str, np.ndarray, np.ndarray, float, float]:
        """(source, original image, model input, read seconds, preprocess seconds)."""
        t0 = time.perf_counter()
        if isinstance(image, np.ndarray):
            source, img = f"array[{index}]", image
        else:
            source, img = os.fspath(image), read_image(image)
        t1 = time.perf_counter()
        x = preprocess(img, self.spec)
        return source, img, x, t1 - t0, time.perf_counter() - t1

    def _infer(self, loaded: list[tuple[str, np.ndarray, np.ndarray, float, float]]) -> list[Prediction]:
        if not loaded:
            return []
        batch = np.stack([x for _, _, x, _, _ in loaded])
        t0 = time.perf_counter()
        logits, heat = self.session.run(batch)
        infer_s = (time.perf_counter() - t0) / len(loaded)
        logits = np.asarray(logits, dtype=np.float32)
        heat = np.asarray(heat, dtype=np.float32)
        if logits.shape != (len(loaded), len(self.classes)):
            raise ValueError(
                f"the model returned logits of shape {logits.shape}; expected ({len(loaded)}, "
                f"{len(self.classes)}) for the bundle's classes"
            )
        if not (np.isfinite(logits).all() and np.isfinite(heat).all()):
            raise FloatingPointError(
                f"the model ({self.backend}) produced non-finite logits or heat map; the model file or backend is "
                "broken (re-export, or try another --backend)"
            )
        probs = activation(self.bundle.task, logits)
        out = []
        for k, (source, img, _, read_s, pre_s) in enumerate(loaded):
            hm = heat[k].reshape(heat[k].shape[-2:]) if heat[k].ndim > 2 else heat[k]
            out.append(
                Prediction(
                    source=source,
                    label=self.classes[int(probs[k].argmax())],
                    probabilities={c: float(p) for c, p in zip(self.classes, probs[k], strict=True)},
                    heatmap=unletterbox(hm, img.shape, self.spec),
                    timing={"read": read_s, "preprocess": pre_s, "infer": infer_s},
                )
            )
        return out


def open_session(bundle: Bundle, backend: str = "auto", threads: int = 0) -> Session:
    """A session for ``backend`` on the bundle's matching file (``auto``: the first of AUTO_ORDER that opens).

    ``auto`` moves on, with a logged warning, past a backend that is missing or whose file cannot
    run here (an engine built for another GPU); an explicit backend raises instead.

    Raises:
        ValueError: the bundle has no file for the backend, or the backend cannot run here.
    """
    names = AUTO_ORDER if backend == "auto" else (backend,)
    reasons = []
    for name in names:
        row = backend_row(name)
        files = [bundle.artifacts[a] for a in row.artifact if a in bundle.artifacts]
        if not files:
            reasons.append(
                f"{name}: the bundle has no {' or '.join(row.artifact)} (it has {', '.join(bundle.artifacts)})"
            )
            continue
        try:
            session: Any = row.make(files[0], bundle.root, threads)
        except BackendUnavailable as e:
            reasons.append(f"{name}: {e}")
            continue
        except (ValueError, RuntimeError) as e:  # e.g. an engine built for another GPU or TensorRT
            if backend != "auto":
                raise
            log.warning("backend %s cannot run %s here (%s); trying the next one", name, files[0].name, e)
            reasons.append(f"{name}: {e}")
            continue
        session.max_batch = min(int(session.max_batch or bundle.max_batch), bundle.max_batch)
        log.info("backend %s runs %s", name, files[0].name)
        return session
    raise ValueError("no backend can run this bundle here: " + "; ".join(reasons))
