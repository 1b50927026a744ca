"""Building one image's result objects, where the node's result workers run it (another process or a thread).

:func:`build_files` turns a :class:`BuildJob` (the source header, the prediction, the heat map in
model space, and for an SC the radiograph at the SC's size) into encoded DICOM files: ``sr.dcm``
(:mod:`omsf2.serve.dicom_results`), ``pm.dcm`` and ``sc.dcm`` (:mod:`omsf2.serve.dicom_maps`), as
``--results`` asks. A job is small and picklable (no full-resolution pixels travel: the heat map
goes back onto the image here, with :func:`omsf2.data.preprocess.unletterbox`), so a process pool
builds results beside the inference without copying images around; the SR's per-model parts are
built once per worker (:class:`~omsf2.serve.dicom_results.SrTemplate`).
"""

from __future__ import annotations

import dataclasses
import time
from io import BytesIO
from typing import Any

import numpy as np

from omsf2.config import PreprocessSpec
from omsf2.serve.dicom_results import ModelInfo, SrTemplate, build_sr, result_uids

#: What ``--results`` may name: the SR (the finding; always), the Parametric Map, the Secondary Capture.
RESULT_KINDS = ("sr", "pm", "sc")
#: SOP Class UID of each result kind (what the forwarder proposes).
SOP_CLASSES = {
    "sr": "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "pm": "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
    "sc": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
}
#: The transfer syntax each kind's file is written in (the forwarder proposes exactly these).
FILE_SYNTAXES = {
    "sr": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "pm": "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "sc": "1.2.840.10008.1.2.4.50",  # JPEG baseline (8 bit)
}


@dataclasses.dataclass(frozen=True)
class BuildJob:
    """One image's prediction, as a result worker needs it.

    Attributes:
        uid: the source's SOP Instance UID.
        header: the source's header (a pydicom Dataset without pixel data).
        label: the predicted class.
        probabilities: class -> probability.
        heat: the heat map over the model input (h, w) float32.
        original_hw: the source image's (rows, columns).
        sc_image: the radiograph as the model saw it ([0, 1]) at the SC's size, or None without an SC.
    """

    uid: str
    header: Any
    label: str
    probabilities: dict[str, float]
    heat: np.ndarray
    original_hw: tuple[int, int]
    sc_image: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Built:
    """What a worker returns: the encoded files (name -> bytes), their UIDs and the seconds it took."""

    uid: str
    files: dict[str, bytes]
    uids: dict[str, str]
    build_s: float


_state: dict[str, Any] = {}


def init_worker(model: ModelInfo, spec: PreprocessSpec, kinds: tuple[str, ...], backend_key: str) -> None:
    """A worker's set-up: the model, the preprocessing spec and what to build (once per process)."""
    import warnings

    warnings.filterwarnings("ignore", module="highdicom")  # its notes on the source's names: not ours to fix
    _state.update(model=model, spec=spec, kinds=kinds, key=backend_key, template=SrTemplate(model))


def warm_up() -> bool:
    """Build every result kind once for a tiny synthetic image; True when it built.

    A worker has then imported (and highdicom loaded) everything before the first real image waits on it.
    """
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ds, kw, generate_uid())
    ds.SOPClassUID, ds.Modality, ds.Rows, ds.Columns = "1.2.840.10008.5.1.4.1.1.1.1", "DX", 16, 16
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "WARMUP", "Warm^Up", "", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "", "", "", "", ""
    ds.SeriesNumber, ds.InstanceNumber, ds.PatientOrientation = 1, 1, ["L", "F"]
    model: ModelInfo = _state["model"]
    probs = {c: 1.0 / len(model.classes) for c in model.classes}
    heat = np.zeros((4, 4), np.float32)
    job = BuildJob(str(ds.SOPInstanceUID), ds, model.classes[0], probs, heat, (16, 16), np.zeros((16, 16), np.float32))
    return bool(build_files(job).files)


def _encode(obj: Any) -> bytes:
    buf = BytesIO()
    obj.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _heat_at(job: BuildJob, spec: PreprocessSpec, hw: tuple[int, int]) -> np.ndarray:
    from omsf2.data.preprocess import unletterbox

    return np.asarray(unletterbox(job.heat, hw, spec), dtype=np.float32)


def build_files(job: BuildJob) -> Built:
    """Build and encode the result objects of ``job`` (see the module docstring).

    Raises:
        ValueError, TypeError, AttributeError, KeyError: a header highdicom cannot build on.
    """
    from omsf2.serve.dicom_maps import build_pm, build_sc

    t0 = time.perf_counter()
    model: ModelInfo = _state["model"]
    spec: PreprocessSpec = _state["spec"]
    kinds: tuple[str, ...] = _state["kinds"]
    uids = result_uids(job.uid, dataclasses.replace(model, digest=_state["key"]))
    files = {"sr.dcm": _encode(build_sr(job.header, job.label, job.probabilities, _state["template"], uids))}
    if "pm" in kinds:
        files["pm.dcm"] = _encode(build_pm(job.header, _heat_at(job, spec, job.original_hw), job.label, model, uids))
    if "sc" in kinds and job.sc_image is not None:
        heat = _heat_at(job, spec, job.sc_image.shape)
        p = float(job.probabilities[job.label])
        files["sc.dcm"] = _encode(build_sc(job.header, job.sc_image, heat, job.label, p, model, uids))
    wanted = {"sr": uids.sr, "pm": uids.pm, "sc": uids.sc}
    return Built(job.uid, files, {k: v for k, v in wanted.items() if f"{k}.dcm" in files}, time.perf_counter() - t0)
