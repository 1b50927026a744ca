"""What the DICOM node sends back: a TID 1500 Structured Report and a heat-map Secondary Capture.

Both are built with highdicom's classes from the source image's header, never by setting tags by
hand, and go in new series (one for the SR, one for the SC) of the source's study:

- :func:`build_sr`: a ``Comprehensive3DSR`` holding a TID 1500 measurement report: one
  measurement group (TID 1501) with the predicted stage as a coded qualitative evaluation, one
  probability measurement per class (UCUM ``1``), the algorithm identification (omsf2, the bundle's
  model name and version, its sha256 and the backend as parameters) and the source image as the
  group's source image (and in the image library when its header has the orientation and pixel
  spacing an entry needs).
- :func:`build_sc`: a ``highdicom.sc.SCImage``: the radiograph as the model saw it (modality LUT,
  window and MONOCHROME1 inversion applied), 8-bit RGB, with the heat map blended over it.

The stage and the per-class probabilities are coded in a private scheme, ``99OMSF2`` (the model's
classes are its own; the code meaning is the class name). Result UIDs are derived from the source
SOP Instance UID and the bundle digest (:func:`result_uids`): the same image through the same
model always gives the same SR and SC instances, which is what makes re-delivery idempotent.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

CODING_SCHEME = "99OMSF2"
MANUFACTURER = "omsf2"
SR_SERIES_NUMBER = 9001
SC_SERIES_NUMBER = 9002
_STAGE_CONCEPT = ("stage", "Pneumoconiosis stage")
# SNOMED CT 40122008 |Pneumoconiosis (disorder)| and 399208008 |Plain chest X-ray (procedure)|.
_FINDING = ("40122008", "SCT", "Pneumoconiosis")
_PROCEDURE = ("399208008", "SCT", "Plain chest X-ray")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The algorithm as the SR names it.

    Attributes:
        name: the bundle's model name.
        version: the bundle's model version.
        digest: the bundle's sha256 (its id).
        backend: the runtime backend that ran it.
        classes: class names in logit order.
    """

    name: str
    version: str
    digest: str
    backend: str
    classes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ResultUids:
    """SOP Instance UIDs of one source image's results, and their series (one per object: a series has one modality)."""

    sr_series: str
    sr: str
    sc_series: str
    sc: str


def result_uids(source_uid: str, model: ModelInfo) -> ResultUids:
    """Deterministic UIDs (pydicom's hash-derived UIDs) for the results of ``source_uid`` under ``model``."""
    from pydicom.uid import generate_uid

    def uid(kind: str) -> str:
        return str(generate_uid(entropy_srcs=["omsf2-dicom-node", model.digest, source_uid, kind]))

    return ResultUids(sr_series=uid("sr-series"), sr=uid("sr"), sc_series=uid("sc-series"), sc=uid("sc"))


def _code(value: str, meaning: str, scheme: str = CODING_SCHEME) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning[:64])


def _has_library_descriptors(source: Any) -> bool:
    return len(source.get("PatientOrientation") or ()) == 2 and len(source.get("ImagerPixelSpacing") or ()) == 2


def build_sr(source: Any, label: str, probabilities: dict[str, float], model: ModelInfo, uids: ResultUids) -> Any:
    """A ``Comprehensive3DSR`` with a TID 1500 report of one image's prediction.

    Args:
        source: the source image's pydicom Dataset (pixel data not needed).
        label: the predicted class.
        probabilities: class -> probability.
        model: the algorithm identification.
        uids: the result UIDs (:func:`result_uids`).

    Raises:
        ValueError: ``label`` or a probability's class is not one of ``model.classes``.
    """
    import highdicom.sr as hsr
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    index = {c: i for i, c in enumerate(model.classes)}
    if label not in index or any(c not in index for c in probabilities):
        raise ValueError(f"label and probabilities must name the model's classes ({', '.join(model.classes)})")
    algorithm = hsr.AlgorithmIdentification(
        name=f"omsf2 {model.name}"[:64],
        version=model.version[:64],
        parameters=[f"bundle sha256 {model.digest}", f"backend {model.backend}"],
        manufacturer=MANUFACTURER,
    )
    observer = hsr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hsr.DeviceObserverIdentifyingAttributes(
            uid=str(generate_uid(entropy_srcs=["omsf2-dicom-node", model.digest, "device"])),
            name="omsf2",
            manufacturer_name=MANUFACTURER,
            model_name=model.name[:64],
        ),
    )
    group = hsr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hsr.TrackingIdentifier(uid=uids.sr, identifier=f"omsf2 stage of {source.SOPInstanceUID}"),
        finding_type=_code(_FINDING[0], _FINDING[2], scheme=_FINDING[1]),
        algorithm_id=algorithm,
        qualitative_evaluations=[
            hsr.QualitativeEvaluation(name=_code(*_STAGE_CONCEPT), value=_code(f"C{index[label]}", label))
        ],
        measurements=[
            hsr.Measurement(
                name=_code(f"P{index[c]}", f"Probability of {c}"),
                value=float(p),
                unit=codes.UCUM.NoUnits,
            )
            for c, p in probabilities.items()
        ],
        source_images=[hsr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    report = hsr.MeasurementReport(
        observation_context=hsr.ObservationContext(observer_device_context=observer),
        procedure_reported=_code(_PROCEDURE[0], _PROCEDURE[2], scheme=_PROCEDURE[1]),
        imaging_measurements=[group],
        # highdicom's projection-radiography library entry needs both; without them the group's
        # source image is the reference.
        referenced_images=[source] if _has_library_descriptors(source) else None,
    )
    return hsr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=uids.sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description="omsf2 AI result",
    )


def build_sc(source: Any, image: np.ndarray, heatmap: np.ndarray, label: str, uids: ResultUids) -> Any:
    """A ``highdicom.sc.SCImage``: the [0, 1] grayscale ``image`` with ``heatmap`` blended over it, RGB.

    The SC is in the ``PATIENT`` coordinate system, for which highdicom requires a patient
    orientation: the source's when it has one, else ``("L", "F")`` (rows toward the patient's
    left, columns toward the feet: a PA chest as displayed).
    """
    from highdicom.sc import SCImage

    from omsf2.runtime.overlay import overlay_rgb

    rgb = overlay_rgb(image, heatmap)
    orientation = tuple(str(v) for v in (source.get("PatientOrientation") or ()))
    return SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uids.sc_series,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=uids.sc,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=orientation if len(orientation) == 2 else ("L", "F"),
        series_description=f"omsf2 heat map: {label}"[:64],
    )


def read_stage(sr: Any) -> tuple[str, dict[str, float]]:
    """(stage, class -> probability) read back from an SR written by :func:`build_sr` (highdicom parses it).

    Raises:
        ValueError: the SR holds no omsf2 measurement group with a stage.
    """
    import highdicom.sr as hsr

    doc = hsr.Comprehensive3DSR.from_dataset(sr)
    report = hsr.MeasurementReport.from_sequence(doc.content)
    for group in report.get_image_measurement_groups():
        stages: list[Any] = [e.value for e in group.get_qualitative_evaluations() if e.name.value == _STAGE_CONCEPT[0]]
        if stages:
            probs = {m.name.meaning.removeprefix("Probability of "): float(m.value) for m in group.get_measurements()}
            return str(stages[0].meaning), probs
    raise ValueError("the SR holds no omsf2 pneumoconiosis stage")
