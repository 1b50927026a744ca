"""The Predictor: radiographs in; stage, class probabilities and heat map out. No torch.

Files are read by :func:`omsf2.data.io.read_image` and preprocessed by
:func:`omsf2.data.preprocess.preprocess`, the code training used, with the spec recorded in the
bundle; the heat map comes back through :func:`omsf2.data.preprocess.unletterbox`, so it lies
over the original image. One session per predictor (:mod:`omsf2.runtime.sessions`) is created
once and shared: :meth:`Predictor.predict` may be called from several threads at once (reading
and preprocessing run in the caller's thread, the backend sessions are thread-safe).

:meth:`Predictor.run_batch` is the runtime's one inference call, for everything that runs a model
(``omsf2 predict``, the DICOM node, ``omsf2 serve triton``, ``omsf2 bench``): it splits a batch into
chunks of at most the bundle's ``max_batch``, checks every output's shape and finiteness
(:func:`check_outputs`) and applies the task's activation (softmax, or a sigmoid per finding for
multi-label models; :mod:`omsf2.runtime.rules`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from omsf2.data.io import ImageReadError, read_image
from omsf2.data.preprocess import preprocess, unletterbox
from omsf2.runtime.bundle import Bundle, BundleError, load_model_folder
from omsf2.runtime.errors import InferenceError
from omsf2.runtime.gating import GatePolicy, dicom_not_applicable
from omsf2.runtime.rules import AUTO_ORDER, activate, backend_rule
from omsf2.runtime.sessions import (
    BACKEND_NAMES,
    BackendUnavailable,
    Session,
    SessionContext,
    SessionOptions,
    make_session,
)
from omsf2.runtime.trust import TrustPolicy

log = logging.getLogger(__name__)

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


def check_outputs(
    logits: np.ndarray, heat: np.ndarray, n: int, classes: tuple[str, ...] | list[str], backend: str
) -> tuple[np.ndarray, np.ndarray]:
    """The model's outputs of a batch of ``n`` as float32 logits (n, K) and heat maps (n, h, w), checked.

    The one output check of the runtime: :meth:`Predictor.run_batch` and the Triton repository's
    postprocessing model call it.

    Raises:
        ValueError: logits or heat maps of the wrong shape for ``n`` images and the bundle's classes.
        FloatingPointError: non-finite logits or heat map (a broken model file or backend).
    """
    logits = np.asarray(logits, dtype=np.float32)
    heat = np.asarray(heat, dtype=np.float32)
    if logits.shape != (n, len(classes)):
        raise ValueError(
            f"the model returned logits of shape {logits.shape}; expected ({n}, {len(classes)}) for the bundle's "
            "classes"
        )
    if heat.ndim == 4 and heat.shape[1] == 1:
        heat = heat[:, 0]
    if heat.ndim != 3 or heat.shape[0] != n:
        raise ValueError(f"the model returned a heat map of shape {heat.shape}; expected ({n}, h, w)")
    if not (np.isfinite(logits).all() and np.isfinite(heat).all()):
        raise FloatingPointError(
            f"the model ({backend}) produced non-finite logits or heat map; the model file or backend is "
            "broken (re-export, or try another --backend)"
        )
    return logits, heat


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
        #: The bundle's export target the session runs (``onnx_int8_cpu`` ...); None where the file
        #: is not local (``triton``: the server's).
        self.artifact: str | None = getattr(session, "artifact", None)

    @property
    def backend(self) -> str:
        """The backend the predictor runs on."""
        return self.session.name

    @classmethod
    def from_bundle(
        cls,
        path: str | os.PathLike[str],
        backend: str = "auto",
        threads: int = 0,
        *,
        artifact: str | None = None,
        options: SessionOptions | None = None,
        trust: TrustPolicy | None = None,
    ) -> Predictor:
        """Verify a bundle (or an ``omsf2 export`` folder) and open a session on it.

        Args:
            path: the bundle folder (``manifest.json``) or export folder (``report.json``).
            backend: one of :data:`omsf2.runtime.sessions.BACKEND_NAMES`.
            threads: CPU threads for onnxruntime/OpenVINO (0: the backend's default).
            artifact: run this export target (for example ``onnx_int8``, the TensorRT contract, on
                ``ort-int8``) instead of the backend's first choice; it must be one the backend runs.
            options: session options beyond ``threads`` (profiling, GPU timing); its ``threads`` wins.
            trust: signing keys and/or a pinned manifest digest the bundle must satisfy, checked
                before any model file is read (``TrustPolicy.from_options(["signer.pub"], digest)``);
                an export folder is refused under a configured policy (it is not signed).

        Raises:
            ValueError: unknown backend or artifact, a tampered bundle, one whose manifest does not
                match its model files or that the trust policy refuses (:class:`BundleError`), or a
                backend whose file is not in the bundle or whose stack is not installed (one line each).
        """
        if backend not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
        if not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be a non-negative integer, got {threads!r}")
        opts = dataclasses.replace(options or SessionOptions(), threads=threads or (options.threads if options else 0))
        bundle = load_model_folder(path, trust)
        return cls(bundle, open_session(bundle, backend, opts, artifact=artifact))

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

    def gate_policy(self, *, any_modality: bool = False, allow_missing: Sequence[str] = ()) -> GatePolicy:
        """The clinical input gating of this bundle (its ``accepts``) with a site's settings.

        Raises:
            ValueError: ``allow_missing`` names something other than ``body-part`` or ``view``.
        """
        return GatePolicy(self.bundle.accepts, frozenset(allow_missing), any_modality)

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        policy: GatePolicy | None = None,
        any_modality: bool = False,
        on_result: Callable[[FileResult], None] | None = None,
    ) -> list[FileResult]:
        """Predict files one batch at a time; a file that fails or is not applicable is reported, the rest go on.

        Args:
            paths: image files (PNG, JPEG, TIFF, BMP, DICOM).
            policy: the clinical input gating DICOMs must pass (:mod:`omsf2.runtime.gating`; default:
                :meth:`gate_policy`, what the bundle accepts); a refused file's error is the reason.
            any_modality: with the default policy, skip its Modality rule.
            on_result: called with each file's result as it is ready (progress, streaming output).

        Returns:
            One :class:`FileResult` per path, in order.
        """
        policy = policy or self.gate_policy(any_modality=any_modality)
        results: list[FileResult] = []
        for i in range(0, len(paths), self.max_batch):
            good: list[tuple[str, np.ndarray, np.ndarray, float, float]] = []
            slot: list[FileResult | None] = []
            for p in paths[i : i + self.max_batch]:
                try:
                    why = dicom_not_applicable(p, policy)
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

    def run_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The one inference call: probabilities and heat maps of preprocessed images.

        Splits ``x`` into chunks of :attr:`max_batch`, runs each through the session, checks every
        output (:func:`check_outputs`) and applies the task's activation. ``omsf2 predict``, the
        DICOM node, ``omsf2 serve triton`` and ``omsf2 bench`` all call this.

        Args:
            x: float32 (N, C, H, W), as :func:`omsf2.data.preprocess.preprocess` makes them.

        Returns:
            (probabilities (N, K) float64, heat maps (N, h, w) float32 over the model input).

        Raises:
            ValueError: ``x`` is not (N, C, H, W) of the bundle's input size, or the model's outputs
                have the wrong shape.
            FloatingPointError: non-finite logits or heat map.
            InferenceError: the backend failed (whatever its own exception type).
        """
        logits, heats = self.run_logits(x)
        return activate(self.bundle.task, logits), heats

    def run_logits(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`run_batch` without the activation: checked logits (N, K) float32 and heat maps.

        What ``omsf2 serve triton``'s tensor model returns to a remote ``triton`` session, which
        checks and activates them again in its own :meth:`run_batch`.

        Raises:
            ValueError, FloatingPointError, InferenceError: as :meth:`run_batch`.
        """
        x = np.asarray(x)
        c, (h, w) = self.spec.channels, self.spec.size
        if x.ndim != 4 or x.shape[1:] != (c, h, w):
            raise ValueError(f"expected a batch of shape (N, {c}, {h}, {w}) for this bundle, got {x.shape}")
        logits, heats = [], []
        for i in range(0, len(x), self.max_batch):
            chunk = np.ascontiguousarray(x[i : i + self.max_batch], dtype=np.float32)
            checked, heat = check_outputs(*self._run_session(chunk), len(chunk), self.classes, self.backend)
            logits.append(checked)
            heats.append(heat)
        if not logits:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros((0, 0, 0), np.float32)
        return np.concatenate(logits), np.concatenate(heats)

    def _run_session(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The session's outputs; any backend exception (not out-of-memory) becomes one InferenceError."""
        try:
            return self.session.run(chunk)
        except (InferenceError, MemoryError):
            raise
        except Exception as e:  # onnxruntime's Fail / InvalidArgument derive from Exception only
            msg = " ".join(str(e).split())[:300] or type(e).__name__
            raise InferenceError(f"backend {self.backend} failed on a batch of {len(chunk)}: {msg}") from e

    def _infer(self, loaded: list[tuple[str, np.ndarray, np.ndarray, float, float]]) -> list[Prediction]:
        if not loaded:
            return []
        batch = np.stack([x for _, _, x, _, _ in loaded])
        t0 = time.perf_counter()
        probs, heat = self.run_batch(batch)
        infer_s = (time.perf_counter() - t0) / len(loaded)
        out = []
        for k, (source, img, _, read_s, pre_s) in enumerate(loaded):
            out.append(
                Prediction(
                    source=source,
                    label=self.classes[int(probs[k].argmax())],
                    probabilities={c: float(p) for c, p in zip(self.classes, probs[k], strict=True)},
                    heatmap=unletterbox(heat[k], img.shape, self.spec),
                    timing={"read": read_s, "preprocess": pre_s, "infer": infer_s},
                )
            )
        return out


def open_session(
    bundle: Bundle, backend: str = "auto", options: SessionOptions | None = None, *, artifact: str | None = None
) -> Session:
    """A session for ``backend`` on the bundle's matching file (``auto``: the first of AUTO_ORDER that opens).

    The file is read once and its sha256 checked (:meth:`Bundle.read_artifact`); the session is
    built from those bytes. ``auto`` moves on, with a logged warning, past a backend that is missing
    or whose file cannot run here (an engine built for another GPU); an explicit backend raises.

    Raises:
        ValueError: the bundle has no file for the backend, an artifact the backend does not run,
            or the backend cannot run here.
    """
    options = options or SessionOptions()
    if backend == "triton":
        return _triton_session(bundle, options, artifact)
    names = AUTO_ORDER if backend == "auto" else (backend,)
    reasons = []
    for name in names:
        rule = backend_rule(name)
        if artifact is not None and artifact not in rule.artifacts:
            raise ValueError(f"backend {name} does not run {artifact!r} (it runs {', '.join(rule.artifacts)})")
        wanted = (artifact,) if artifact is not None else rule.artifacts
        targets = [a for a in wanted if a in bundle.artifacts]
        if not targets:
            reasons.append(f"{name}: the bundle has no {' or '.join(wanted)} (it has {', '.join(bundle.artifacts)})")
            continue
        path = bundle.artifacts[targets[0]]
        ctx = SessionContext(rule, path, bundle.root, (bundle.preprocess.channels, *bundle.preprocess.size),
                             bundle.max_batch, options)  # fmt: skip
        try:
            session: Any = make_session(bundle.read_artifact(targets[0]), ctx)
        except BackendUnavailable as e:
            reasons.append(f"{name}: {e}")
            continue
        except BundleError:
            raise
        except (ValueError, RuntimeError) as e:  # e.g. an engine built for another GPU or TensorRT
            if backend != "auto":
                raise
            log.warning("backend %s cannot run %s here (%s); trying the next one", name, path.name, e)
            reasons.append(f"{name}: {e}")
            continue
        session.max_batch = min(int(session.max_batch or bundle.max_batch), bundle.max_batch)
        session.artifact = targets[0]
        log.info("backend %s runs %s", name, path.name)
        return session
    raise ValueError("no backend can run this bundle here: " + "; ".join(reasons))


def _triton_session(bundle: Bundle, options: SessionOptions, artifact: str | None) -> Session:
    """The ``triton`` backend: the model on an ``omsf2 serve triton`` server that runs this very bundle."""
    from omsf2.runtime.triton_client import TritonSession

    if artifact is not None:
        raise ValueError("backend triton runs what the server holds; --artifact does not apply")
    if not options.triton_url:
        raise ValueError("--backend triton needs --triton-url HOST:PORT (the gRPC port of omsf2 serve triton)")
    chw = (bundle.preprocess.channels, *bundle.preprocess.size)
    session = TritonSession(options.triton_url, bundle.digest, chw, len(bundle.classes), bundle.max_batch,
                            model=options.triton_model)  # fmt: skip
    log.info("backend triton runs %s on %s", bundle.digest[:16], options.triton_url)
    return session
