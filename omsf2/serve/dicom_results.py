"""What the DICOM node says about an image: a coded TID 1500 Structured Report, and the result identities.

:func:`build_sr` writes a ``Comprehensive3DSR`` with highdicom's classes (never tags by hand), in a
new series of the source's study, as IHE's AI Results (AIR) profile and viewers such as OHIF read
one: a TID 1500 measurement report whose image-level measurement groups (TID 1501) carry

- the finding, pneumoconiosis, at the lung, with the predicted stage as a coded qualitative
  evaluation and its probability as a numeric measurement (DCM 122157 "Probability", UCUM ``1``);
- one group per class with that class's probability (the same concept), so a reader gets every
  class's probability without knowing omsf2's private codes;
- the algorithm identification (DCM 111001 / 111003 / 111002: the bundle manifest's name and
  version, its sha256 and the backend as parameters), a device observer, and the source image.

Codes (:data:`CODES`): standard where a code exists, private (``99OMSF2``) where none does.

===========================  ==============================  =====================================
concept                      code                            why
===========================  ==============================  =====================================
finding                      SCT 40122008 Pneumoconiosis     SNOMED CT disorder
finding site                 SCT 39607008 Lung               SNOMED CT (DICOM CID 4)
procedure reported           SCT 399208008 Plain chest X-ray SNOMED CT procedure
class ``normal``             SCT 17621005 Normal             SNOMED CT qualifier
probability                  DCM 122157 Probability          DICOM (PS3.16)
heat map quantity (PM)       DCM 130402 Class activation     DICOM (PS3.16)
algorithm name / version     DCM 111001 / 111003 / 111002    DICOM (highdicom's TID 4019)
stage (the concept)          99OMSF2 stage                   private: no standard concept names a
                                                             pneumoconiosis stage
stages I, II, III            99OMSF2 C1, C2, C3              private: no standard codes for the
                                                             stages; DCM 111495 "Stage I" is a
                                                             cancer stage and is not reused
===========================  ==============================  =====================================

Result UIDs are derived from the source SOP Instance UID, the bundle digest and the backend
(:func:`result_uids`): the same image through the same bundle on the same backend always gives the
same SR, PM and SC instances, which makes re-delivery idempotent; a new bundle gives new ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any

CODING_SCHEME = "99OMSF2"
MANUFACTURER = "omsf2"
SR_SERIES_NUMBER = 9001
SC_SERIES_NUMBER = 9002
PM_SERIES_NUMBER = 9003
#: concept -> (code value, coding scheme, meaning): every code the node writes.
CODES: dict[str, tuple[str, str, str]] = {
    "finding": ("40122008", "SCT", "Pneumoconiosis"),
    "finding_site": ("39607008", "SCT", "Lung"),
    "procedure": ("399208008", "SCT", "Plain chest X-ray"),
    "normal": ("17621005", "SCT", "Normal"),
    "probability": ("122157", "DCM", "Probability"),
    "class_activation": ("130402", "DCM", "Class activation"),
    "stage": ("stage", CODING_SCHEME, "Pneumoconiosis stage"),
}
#: Class names (lower case) that have a standard code; any other class gets a private one (``C<index>``).
STANDARD_CLASSES = {"normal": "normal"}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The algorithm as the results name it: everything comes from the bundle's manifest.

    Attributes:
        name: the manifest's ``name`` (``omsf2 bundle --name``).
        version: the manifest's ``version``.
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
    pm_series: str = ""
    pm: str = ""


def result_uids(source_uid: str, model: ModelInfo) -> ResultUids:
    """Deterministic UIDs (pydicom's hash-derived UIDs) for the results of ``source_uid`` under ``model``."""
    from pydicom.uid import generate_uid

    def uid(kind: str) -> str:
        return str(generate_uid(entropy_srcs=["omsf2-dicom-node", model.digest, source_uid, kind]))

    return ResultUids(
        sr_series=uid("sr-series"),
        sr=uid("sr"),
        sc_series=uid("sc-series"),
        sc=uid("sc"),
        pm_series=uid("pm-series"),
        pm=uid("pm"),
    )


def code(concept: str) -> Any:
    """The highdicom ``CodedConcept`` of a :data:`CODES` entry."""
    from highdicom.sr import CodedConcept

    value, scheme, meaning = CODES[concept]
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def class_code(name: str, index: int) -> Any:
    """A class's code: standard where :data:`STANDARD_CLASSES` has one, else ``99OMSF2 C<index>`` (meaning = name)."""
    from highdicom.sr import CodedConcept

    standard = STANDARD_CLASSES.get(name.strip().lower())
    if standard is not None:
        return code(standard)
    return CodedConcept(value=f"C{index}", scheme_designator=CODING_SCHEME, meaning=name[:64])


def _has_library_descriptors(source: Any) -> bool:
    return len(source.get("PatientOrientation") or ()) == 2 and len(source.get("ImagerPixelSpacing") or ()) == 2


class SrTemplate:
    """The parts of a model's SR that are the same for every image, built once (highdicom is slow to build).

    Args:
        model: the algorithm identification.
    """

    def __init__(self, model: ModelInfo) -> None:
        import highdicom.sr as hsr
        from pydicom.sr.codedict import codes
        from pydicom.uid import generate_uid

        self.model = model
        self.algorithm = hsr.AlgorithmIdentification(
            name=model.name[:64],
            version=model.version[:64],
            parameters=[f"bundle sha256 {model.digest}", f"backend {model.backend}"],
            manufacturer=MANUFACTURER,
        )
        self.observer = hsr.ObservationContext(
            observer_device_context=hsr.ObserverContext(
                observer_type=codes.DCM.Device,
                observer_identifying_attributes=hsr.DeviceObserverIdentifyingAttributes(
                    uid=str(generate_uid(entropy_srcs=["omsf2-dicom-node", model.digest, "device"])),
                    name="omsf2",
                    manufacturer_name=MANUFACTURER,
                    model_name=model.name[:64],
                ),
            )
        )
        self.class_codes = [class_code(c, i) for i, c in enumerate(model.classes)]
        self.unit = codes.UCUM.NoUnits


def _group(t: SrTemplate, source: Any, uid: str, label: str, finding: Any, evaluations: list[Any], p: float) -> Any:
    """A TID 1501 group: the stage's carries the site, the algorithm and the source image; a class's its probability."""
    import highdicom.sr as hsr

    full = bool(evaluations)
    return hsr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hsr.TrackingIdentifier(uid=uid, identifier=label[:64]),
        finding_type=finding,
        finding_sites=[hsr.FindingSite(anatomic_location=code("finding_site"))] if full else None,
        algorithm_id=t.algorithm if full else None,
        qualitative_evaluations=evaluations or None,
        measurements=[hsr.Measurement(name=code("probability"), value=float(p), unit=t.unit)],
        source_images=[hsr.SourceImageForMeasurementGroup.from_source_image(source)] if full else None,
    )


def build_sr(
    source: Any, label: str, probabilities: dict[str, float], template: SrTemplate | ModelInfo, uids: ResultUids
) -> Any:
    """A ``Comprehensive3DSR`` with a coded TID 1500 report of one image's prediction (see the module docstring).

    Args:
        source: the source image's pydicom Dataset (pixel data not needed).
        label: the predicted class.
        probabilities: class -> probability.
        template: :class:`SrTemplate` of the model (or its :class:`ModelInfo`, built here).
        uids: the result UIDs (:func:`result_uids`).

    Raises:
        ValueError: ``label`` or a probability's class is not one of the model's classes.
    """
    import highdicom.sr as hsr
    from pydicom.uid import generate_uid

    t = template if isinstance(template, SrTemplate) else SrTemplate(template)
    model = t.model
    index = {c: i for i, c in enumerate(model.classes)}
    if label not in index or any(c not in index for c in probabilities):
        raise ValueError(f"label and probabilities must name the model's classes ({', '.join(model.classes)})")

    def tracking(kind: str) -> str:
        return str(generate_uid(entropy_srcs=[uids.sr, kind]))

    stage = hsr.QualitativeEvaluation(name=code("stage"), value=t.class_codes[index[label]])
    groups = [_group(t, source, tracking("stage"), f"omsf2 stage: {label}", code("finding"), [stage],
                     probabilities[label])]  # fmt: skip
    for c, p in probabilities.items():
        groups.append(_group(t, source, tracking(f"class {c}"), f"omsf2 probability of {c}", t.class_codes[index[c]],
                             [], p))  # fmt: skip
    report = hsr.MeasurementReport(
        observation_context=t.observer,
        procedure_reported=code("procedure"),
        imaging_measurements=groups,
        # highdicom's projection-radiography library entry needs both; without them the groups'
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
        series_description=f"omsf2 AI result: {model.name}"[:64],
    )


def read_stage(sr: Any, classes: tuple[str, ...] | list[str]) -> tuple[str, dict[str, float]]:
    """(stage, class -> probability) read back from an SR written by :func:`build_sr` (highdicom parses it).

    Args:
        sr: the SR dataset.
        classes: the model's classes, in logit order (their codes are looked up by :func:`class_code`).

    Raises:
        ValueError: the SR holds no omsf2 stage.
    """
    import highdicom.sr as hsr

    by_code = {
        (c.value, c.scheme_designator): name for name, c in ((n, class_code(n, i)) for i, n in enumerate(classes))
    }
    doc = hsr.Comprehensive3DSR.from_dataset(sr)
    report = hsr.MeasurementReport.from_sequence(doc.content)
    stage, probs = None, {}
    finding = CODES["finding"][:2]
    for group in report.get_image_measurement_groups():
        ft: Any = group.finding_type
        if ft is None:
            continue
        measured = [float(m.value) for m in group.get_measurements() if m.name.value == CODES["probability"][0]]
        if (ft.value, ft.scheme_designator) == finding:
            values: list[Any] = [
                e.value for e in group.get_qualitative_evaluations() if e.name.value == CODES["stage"][0]
            ]
            if values:
                stage = by_code.get((values[0].value, values[0].scheme_designator), values[0].meaning)
        elif (ft.value, ft.scheme_designator) in by_code and measured:
            probs[by_code[(ft.value, ft.scheme_designator)]] = measured[0]
    if stage is None:
        raise ValueError("the SR holds no omsf2 pneumoconiosis stage")
    return str(stage), probs
