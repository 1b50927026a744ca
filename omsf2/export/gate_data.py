"""The images an INT8 export searches on, and the images that judge it, which nothing chose on.

Mixed precision tries float groups until the gate passes, and NNCF validates its candidates on
labelled images: a figure measured on the images that made those choices is the best of several
tries, not an estimate. So the labelled images are cut in two (:func:`gate_data`):

- the **search part** (``--eval-data``, or its larger share): the mixed-precision trials and
  NNCF's validation run here;
- the **gate part** (``--gate-data``, or ``--gate-fraction`` of ``--eval-data``'s patients): each
  flavour's final configuration is judged here once, and only this figure decides.

The cut is by patient where the data names patients (``labels.csv`` beside or above the folder,
with ``split_group`` or ``patient_id``, as in cxr-real; else a DICOM's PatientID), stratified by
class, through :func:`omsf2.data.datasets.patient_split`, the project's one patient-level split;
without patient ids every image is its own patient. The trade-off: each part is smaller than the
whole (half of 150 images is 75, one image 1.33 points), so the gate's intervals widen, and the
gate says when its set is too small for its bounds (:func:`omsf2.export.gate.caveats`).

:func:`annotate` also reads, for DICOM images, the attributes the gate groups by (modality,
manufacturer, photometric interpretation; :mod:`omsf2.export.subgroups`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from omsf2.data.io import is_dicom_file
from omsf2.export.calibration import ImageSet
from omsf2.lineage import files_sha256

log = logging.getLogger(__name__)

DEFAULT_GATE_FRACTION = 0.5
SPLIT_SEED = 0
#: ImageSet attribute -> DICOM keyword: what the gate's subgroups are formed from for DICOM sets.
DICOM_GROUPS = {
    "modality": "Modality",
    "manufacturer": "Manufacturer",
    "photometric_interpretation": "PhotometricInterpretation",
}
MISSING = "(missing)"
_LABELS_UP = 2  # labels.csv is looked for in the folder and up to this many folders above it


@dataclasses.dataclass(frozen=True)
class GateData:
    """The search and gate parts of one export's labelled images.

    Attributes:
        search: the images the mixed-precision search and NNCF's validation run on.
        gate: the images that judge each flavour's final configuration; none of them was used by the search.
        record: what ``report.json`` says about the two parts (``gate_data``).
    """

    search: ImageSet
    gate: ImageSet
    record: dict[str, Any]


def dicom_header(path: str) -> dict[str, str] | None:
    """The grouping attributes and PatientID of a DICOM file (``(missing)`` where absent); None for other files."""
    if not is_dicom_file(path):
        return None
    import pydicom

    tags = [*DICOM_GROUPS.values(), "PatientID"]
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=tags)
    except Exception as e:  # read_image already accepted the file; a header oddity must not stop the gate
        log.warning("cannot read the DICOM header of '%s' (%s); its groups are '%s'", path, e, MISSING)
        return dict.fromkeys([*DICOM_GROUPS, "patient"], MISSING)
    out = {key: str(ds.get(kw, "") or "").strip() or MISSING for key, kw in DICOM_GROUPS.items()}
    out["patient"] = str(ds.get("PatientID", "") or "").strip() or MISSING
    return out


def _labels_csv_patients(root: Path, paths: tuple[str, ...]) -> tuple[dict[str, str], str | None]:
    """Each path's patient from the nearest ``labels.csv`` at or above ``root`` that names these files.

    Paths are matched as given and with symbolic links resolved (a folder of links into a dataset).
    """
    from omsf2.data.datasets import read_patients

    for folder in dict.fromkeys((root.absolute(), root.resolve())):
        for _ in range(_LABELS_UP + 1):
            table = read_patients(folder)
            found = {}
            for p in paths if table else ():
                for cand in (Path(p).absolute(), Path(os.path.realpath(p))):
                    if cand.is_relative_to(folder) and (rel := str(cand.relative_to(folder))) in table:
                        found[p] = table[rel]
                        break
            if found:
                return found, str(folder / "labels.csv")
            if folder.parent == folder:
                break
            folder = folder.parent
    return {}, None


def annotate(images: ImageSet) -> tuple[ImageSet, str]:
    """``images`` with patient ids (labels.csv, else DICOM PatientID, else the file) and DICOM group attributes.

    Returns:
        (the annotated set, where its patient ids came from).

    Raises:
        ValueError: a ``labels.csv`` that cannot be read.
    """
    table, csv_path = _labels_csv_patients(Path(images.root), images.paths)
    headers = [dicom_header(p) for p in images.paths]
    patients = []
    for p, h in zip(images.paths, headers, strict=True):
        pid = table.get(p) or (h["patient"] if h and h["patient"] != MISSING else None)
        patients.append(pid or f"file:{p}")
    attributes: dict[str, tuple[str, ...]] = {}
    if any(h is not None for h in headers):
        for key in DICOM_GROUPS:
            attributes[key] = tuple(h[key] if h else "(not DICOM)" for h in headers)
    how = (
        f"patient ids from {csv_path}"
        if csv_path
        else "DICOM PatientID"
        if any(not p.startswith("file:") for p in patients)
        else "no patient ids found: each image is its own patient"
    )
    log.info("gate images of %s: %s", images.root, how)
    return dataclasses.replace(images, patients=tuple(patients), attributes=attributes), how


def _split(images: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(search part, gate part): ``fraction`` of each class's patients go to the gate part."""
    from omsf2.config import Task
    from omsf2.data.datasets import LabeledSet, Sample, patient_split

    samples = tuple(Sample(p, int(y), None, pid) for p, y, pid in zip(images.paths, images.labels, images.patients,
                                                                          strict=True))  # fmt: skip
    ds = LabeledSet(samples, images.classes, Task.MULTICLASS, images.root)
    n_patients = len(set(images.patients))
    try:
        search, gate = patient_split(ds, fraction, seed)
    except ValueError:
        raise ValueError(
            f"--eval-data '{images.root}' has {n_patients} patient(s), too few to split into a search part and "
            f"a gate part (--gate-fraction {fraction:g}); give more images or a separate --gate-data DIR"
        ) from None
    index = {p: i for i, p in enumerate(images.paths)}
    return (
        images.subset([index[s.source] for s in search.samples]),
        images.subset([index[s.source] for s in gate.samples]),
    )


def _describe(part: ImageSet) -> dict[str, Any]:
    """The part's folder, counts and images; ``sha256`` over its images (:func:`omsf2.lineage.files_sha256`)."""
    root = Path(part.root)
    images = sorted(Path(os.path.relpath(p, root)).as_posix() for p in part.paths)
    return {
        "data_dir": part.root,
        "data_dir_resolved": str(root.resolve()),
        "n": len(part),
        "patients": len(set(part.patients)),
        "per_class": part.per_class(),
        "images": images,
        "sha256": files_sha256(root, images)["sha256"],
    }


def check_no_shared_patients(search: ImageSet, gate: ImageSet) -> None:
    """A gate set that shares files or patients with the search set would grade the search on itself.

    Raises:
        ValueError: shared files, or shared patient ids (other than per-file ids).
    """
    files = {os.path.realpath(p) for p in search.paths} & {os.path.realpath(p) for p in gate.paths}
    if files:
        raise ValueError(
            f"--gate-data shares {len(files)} image(s) with --eval-data (e.g. '{sorted(files)[0]}'); the gate "
            "needs images the search did not see"
        )
    shared = {p for p in search.patients if not p.startswith("file:")} & set(gate.patients)
    if shared:
        raise ValueError(
            f"--gate-data shares {len(shared)} patient(s) with --eval-data (e.g. {sorted(shared)[0]!r}); the gate "
            "needs patients the search did not see"
        )


def gate_data(
    evaluation: ImageSet, gate: ImageSet | None, fraction: float = DEFAULT_GATE_FRACTION, seed: int = SPLIT_SEED
) -> GateData:
    """The search and gate parts: ``gate`` when given (then all of ``evaluation`` is searched on), else a patient split.

    Raises:
        ValueError: too few patients to split, or a ``gate`` set sharing images or patients with ``evaluation``.
    """
    evaluation, how = annotate(evaluation)
    if gate is not None:
        gate, gate_how = annotate(gate)
        check_no_shared_patients(evaluation, gate)
        search, source = evaluation, "--gate-data (a separate set); all of --eval-data is the search part"
        how = f"search: {how}; gate: {gate_how}"
    else:
        search, gate = _split(evaluation, fraction, seed)
        source = f"--eval-data split by patient: {fraction:g} of each class's patients judge (seed {seed})"
    record = {
        "source": source,
        "patients_from": how,
        "search": {**_describe(search), "used_for": "mixed-precision trials and NNCF's validation"},
        "gate": {**_describe(gate), "used_for": "the gate's verdict and intervals; nothing chose on it"},
    }
    return GateData(search, gate, record)


def judge_only(images: ImageSet, option: str) -> GateData:
    """Gate images for an export that searches nothing (engines without ``--int8``): all of ``images`` judges."""
    images, how = annotate(images)
    record = {
        "source": f"{option}: nothing searches in this export, so all of it judges",
        "patients_from": how,
        "search": {**_describe(images.subset([])), "used_for": "nothing (no INT8 search in this export)"},
        "gate": {**_describe(images), "used_for": "the engines' gates"},
    }
    return GateData(images.subset([]), images, record)
