"""Labelled datasets: image folders, CheXpert-style CSVs and the in-memory phantom generator.

Every source becomes a :class:`LabeledSet`: a list of :class:`Sample` (where the pixels come from,
the target, the patient) plus class names and the task. Loading a sample is deterministic (read,
then the shared numpy preprocessing); all randomness lives in the training loop, so a resumed
run sees exactly the batches an uninterrupted one would. Patient-level splits keep every image
of a patient (or ``split_group``) in one split.

Layouts:
- folder: ``root/<split>/<class>/*.png|jpg|jpeg|dcm`` (classes in sorted order); an optional
  ``root/labels.csv`` with ``file`` and ``patient_id`` (or ``split_group``) columns gives patients.
  Without ``root/val``, val is split off ``root/train`` by patient.
- CheXpert: a folder with ``train.csv`` (and ``valid.csv``) or one CSV file; the five
  competition labels, with the uncertain label (-1) mapped by an :class:`UncertainPolicy`.
- ``synthetic``: phantoms from :mod:`omsf2.data.synthetic`, generated on the fly.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.config import PreprocessSpec, Task, UncertainPolicy, parse_enum
from omsf2.data import io as dio
from omsf2.data import synthetic
from omsf2.data.preprocess import preprocess

log = logging.getLogger(__name__)

CHEXPERT_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
SYNTHETIC = "synthetic"
SPLIT_NAMES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One labelled image.

    Attributes:
        source: a file path, or ``synthetic:<seed>:<split>:<index>:<size>``.
        target: class index (multi-class) or per-label 0/1 values (multi-label).
        mask: per-label validity (multi-label only), None for multi-class.
        patient: patient (or split-group) id; samples of one patient never cross splits.
    """

    source: str
    target: int | tuple[float, ...]
    mask: tuple[bool, ...] | None
    patient: str


@dataclasses.dataclass(frozen=True)
class LabeledSet:
    """A split of a dataset: samples, class (or label) names and the task."""

    samples: tuple[Sample, ...]
    classes: tuple[str, ...]
    task: Task
    description: str

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> list[int]:
        """Samples per class (multi-class) or positives per label (multi-label)."""
        counts = np.zeros(len(self.classes), np.int64)
        for s in self.samples:
            if isinstance(s.target, int):
                counts[s.target] += 1
            else:
                counts += np.asarray(s.target) > 0.5
        return counts.tolist()


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where training data comes from; recorded in the checkpoint so eval can rebuild the splits.

    Attributes:
        source: ``"synthetic"``, an image-folder root, or a CheXpert folder / CSV.
        synthetic_n: phantoms in the synthetic train split (val and test get a quarter each).
        synthetic_seed: seed of the synthetic dataset.
        synthetic_size: phantom size in pixels.
        uncertain: CheXpert uncertain-label policy.
        val_fraction: share of patients moved to val when the source has no val split.
        split_seed: seed of that patient-level split.
    """

    source: str
    synthetic_n: int = 1600
    synthetic_seed: int = 0
    synthetic_size: int = 256
    uncertain: UncertainPolicy = UncertainPolicy.ONES
    val_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "uncertain", parse_enum(UncertainPolicy, self.uncertain, "uncertain-label policy"))
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val fraction must lie in (0, 1), got {self.val_fraction}")
        if self.synthetic_n < 4:
            raise ValueError(f"synthetic dataset needs at least 4 images (one per stage), got {self.synthetic_n}")
        if not 64 <= self.synthetic_size <= synthetic.MAX_SIZE:
            raise ValueError(f"phantom size must lie in [64, {synthetic.MAX_SIZE}] pixels, got {self.synthetic_size}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["uncertain"] = self.uncertain.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def load_split(spec: DataSpec, split: str) -> LabeledSet:
    """Load one split of the data that ``spec`` names.

    Args:
        spec: the data source.
        split: "train", "val" or "test".

    Returns:
        The split's :class:`LabeledSet`.

    Raises:
        ValueError: missing or empty folders, unknown layout, bad CSV (one-line messages).
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
    if spec.source == SYNTHETIC:
        return synthetic_split(spec, split)
    root = Path(spec.source)
    if not root.exists():
        raise ValueError(
            f"data path '{root}' does not exist (give an image folder, a CheXpert CSV/folder or 'synthetic')"
        )
    if root.is_file() or (root / "train.csv").is_file():
        return chexpert_split(spec, split)
    if not root.is_dir():
        raise ValueError(f"data path '{root}' is neither a folder nor a CSV file")
    return folder_split(spec, split)


def synthetic_split(spec: DataSpec, split: str) -> LabeledSet:
    """The in-memory phantom split (train: ``synthetic_n``; val and test: a quarter of it each)."""
    n = spec.synthetic_n if split == "train" else synthetic.held_out_count(spec.synthetic_n)
    samples = tuple(
        Sample(
            f"synthetic:{spec.synthetic_seed}:{split}:{i}:{spec.synthetic_size}",
            synthetic.stage_of(i),
            None,
            f"phantom-{spec.synthetic_seed}-{split}-{i:06d}",
        )
        for i in range(n)
    )
    return LabeledSet(
        samples, synthetic.STAGES, Task.MULTICLASS, f"synthetic phantoms (seed {spec.synthetic_seed}) {split}"
    )


def read_patients(root: Path) -> dict[str, str]:
    """``root/labels.csv`` as file (relative to ``root``) -> patient (``split_group``, else ``patient_id``).

    Returns:
        The mapping; empty when there is no such file or it names no patients.

    Raises:
        ValueError: the CSV cannot be read.
    """
    path = root / "labels.csv"
    if not path.is_file():
        return {}
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            key = "split_group" if "split_group" in fields else "patient_id" if "patient_id" in fields else None
            if "file" not in fields or key is None:
                log.warning("%s has no 'file' and 'patient_id' columns; treating every image as its own patient", path)
                return {}
            return {str(Path(row["file"])): row[key] for row in reader if row.get("file") and row.get(key)}
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"cannot read '{path}': not a valid CSV file ({' '.join(str(e).split())[:200]})") from None


def _folder_classes(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_folder(root: Path, split_dir: Path, patients: dict[str, str], classes: Sequence[str] | None) -> LabeledSet:
    class_dirs = _folder_classes(split_dir)
    if not class_dirs:
        raise ValueError(f"'{split_dir}' holds no class folders; expected {split_dir}/<class>/*.png|jpg|dcm")
    names = [p.name for p in class_dirs]
    if classes is not None and list(classes) != names:
        raise ValueError(
            f"classes of '{split_dir}' ({', '.join(names)}) differ from the train split's ({', '.join(classes)})"
        )
    if len(names) < 2:
        raise ValueError(f"'{split_dir}' has {len(names)} class folder; classification needs at least 2")
    samples = []
    for label, cdir in enumerate(class_dirs):
        files = dio.list_images(cdir)
        if not files:
            raise ValueError(f"class folder '{cdir}' holds no images ({', '.join(dio.IMAGE_SUFFIXES)})")
        for f in files:
            rel = str(f.relative_to(root))
            samples.append(Sample(str(f), label, None, patients.get(rel, rel)))
    return LabeledSet(tuple(samples), tuple(names), Task.MULTICLASS, f"folder '{root}' {split_dir.name}")


def folder_split(spec: DataSpec, split: str) -> LabeledSet:
    """``root/<split>/<class>/*`` split; val is carved out of train by patient when absent.

    A split that has its own folder needs only that folder (``test`` alone evaluates); its
    classes must then match ``train``'s when there is one.
    """
    root = Path(spec.source)
    if not any(root.iterdir()):
        raise ValueError(f"data folder '{root}' is empty; expected {root}/train/<class>/*.png|jpg|dcm")
    train_dir = root / "train"
    split_dir = root / split
    patients = read_patients(root)
    own_folder = split_dir.is_dir() and not (split == "train" and not (root / "val").is_dir())
    if own_folder and split != "train":
        classes = [p.name for p in _folder_classes(train_dir)] if train_dir.is_dir() else None
        out = _scan_folder(root, split_dir, patients, classes)
        if patients and train_dir.is_dir():
            _warn_shared_patients(_scan_folder(root, train_dir, patients, None), out, split, root)
        return out
    if not train_dir.is_dir():
        found = ", ".join(p.name for p in sorted(root.iterdir()) if p.is_dir()) or "none"
        need = "train" if split != "test" else "test"
        raise ValueError(
            f"no '{need}' split in '{root}': expected {root}/{need}/<class>/*.png|jpg|dcm (folders found: {found})"
        )
    train = _scan_folder(root, train_dir, patients, None)
    if split == "train":
        return train if (root / "val").is_dir() else patient_split(train, spec.val_fraction, spec.split_seed)[0]
    if split == "val":
        return patient_split(train, spec.val_fraction, spec.split_seed)[1]
    raise ValueError(f"no '{split}' split in '{root}': expected {split_dir}/<class>/*")


def _warn_shared_patients(train: LabeledSet, out: LabeledSet, split: str, root: Path) -> None:
    shared = {s.patient for s in train.samples} & {s.patient for s in out.samples}
    if shared:
        log.warning(
            "%d patient(s) appear in both train and %s of '%s': the split is not patient-level",
            len(shared),
            split,
            root,
        )


def patient_split(ds: LabeledSet, val_fraction: float, seed: int) -> tuple[LabeledSet, LabeledSet]:
    """Split ``ds`` so that no patient is in both parts, stratified by each patient's main class.

    Args:
        ds: the set to split.
        val_fraction: share of each class's patients that go to the second part.
        seed: shuffling seed (the split is a pure function of ``ds``, fraction and seed).

    Returns:
        (train, val).
    """
    by_patient: dict[str, list[Sample]] = {}
    for s in ds.samples:
        by_patient.setdefault(s.patient, []).append(s)
    strata: dict[int, list[str]] = {}
    for pid, ss in sorted(by_patient.items()):
        first = ss[0].target
        key = first if isinstance(first, int) else int(np.argmax(first)) if any(first) else -1
        strata.setdefault(key, []).append(pid)
    rng = np.random.default_rng(seed)
    val_patients: set[str] = set()
    for key in sorted(strata):
        pids = strata[key]
        order = rng.permutation(len(pids))
        # Round to the nearest count, but never move a stratum's last patient out of train.
        k = min(math.floor(len(pids) * val_fraction + 0.5), len(pids) - 1)
        val_patients.update(pids[i] for i in order[:k])
    tr = tuple(s for s in ds.samples if s.patient not in val_patients)
    va = tuple(s for s in ds.samples if s.patient in val_patients)
    if not tr or not va:
        raise ValueError(f"cannot split {len(by_patient)} patient(s) into train and val with fraction {val_fraction}")
    return (
        dataclasses.replace(ds, samples=tr, description=ds.description + " (patient split: train)"),
        dataclasses.replace(ds, samples=va, description=ds.description + " (patient split: val)"),
    )


def _chexpert_value(raw: str, policy: UncertainPolicy) -> tuple[float, bool]:
    raw = raw.strip()
    if raw == "":
        return 0.0, policy is not UncertainPolicy.IGNORE  # blank = not mentioned = negative
    try:
        v = float(raw)
    except ValueError:
        raise ValueError(f"label value {raw!r} is not one of 1, 0, -1 or blank") from None
    if v == -1:
        if policy is UncertainPolicy.IGNORE:
            return 0.0, False
        return (1.0 if policy is UncertainPolicy.ONES else 0.0), True
    if v not in (0.0, 1.0):
        raise ValueError(f"label value {raw!r} is not one of 1, 0, -1 or blank")
    return v, True


def read_chexpert_csv(path: Path, policy: UncertainPolicy) -> LabeledSet:
    """Read a CheXpert-style CSV (``Path`` column plus the five competition labels).

    Image paths are resolved against the CSV's folder or its parent (CheXpert's own paths start
    with ``CheXpert-v1.0-small/``). The patient id is the ``patientNNNNN`` path component when
    present, else the file's folder.
    """
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        missing = [c for c in ("Path", *CHEXPERT_LABELS) if c not in fields]
        if missing:
            raise ValueError(
                f"CSV '{path}' lacks column(s) {missing}; a CheXpert CSV needs Path and {list(CHEXPERT_LABELS)}"
            )
        rows = list(reader)
    if not rows:
        raise ValueError(f"CSV '{path}' has no rows")
    bases = [path.parent, path.parent.parent]
    base = next((b for b in bases if (b / rows[0]["Path"]).exists()), None)
    if base is None:
        raise ValueError(f"image '{rows[0]['Path']}' of '{path}' is found neither under '{bases[0]}' nor '{bases[1]}'")
    samples = []
    for i, row in enumerate(rows, start=2):
        vals = []
        for c in CHEXPERT_LABELS:
            try:
                vals.append(_chexpert_value(row[c] or "", policy))
            except ValueError as e:
                raise ValueError(f"'{path}' line {i}, column {c!r}: {e}") from None
        rel = Path(row["Path"])
        patient = next((p for p in rel.parts if p.startswith("patient")), str(rel.parent))
        samples.append(Sample(str(base / rel), tuple(v for v, _ in vals), tuple(m for _, m in vals), patient))
    return LabeledSet(tuple(samples), CHEXPERT_LABELS, Task.MULTILABEL, f"CheXpert CSV '{path}'")


def chexpert_split(spec: DataSpec, split: str) -> LabeledSet:
    """CheXpert split: ``train.csv`` / ``valid.csv`` / ``test.csv`` in a folder, or one CSV split by patient."""
    root = Path(spec.source)
    if root.is_file():
        full = read_chexpert_csv(root, spec.uncertain)
        if split == "test":
            raise ValueError(f"a single CSV '{root}' has no test split")
        return patient_split(full, spec.val_fraction, spec.split_seed)[0 if split == "train" else 1]
    name = {"train": "train.csv", "val": "valid.csv", "test": "test.csv"}[split]
    csv_path = root / name
    if split == "val" and not csv_path.is_file():
        return patient_split(read_chexpert_csv(root / "train.csv", spec.uncertain), spec.val_fraction, spec.split_seed)[
            1
        ]
    if split == "train" and not (root / "valid.csv").is_file():
        return patient_split(read_chexpert_csv(csv_path, spec.uncertain), spec.val_fraction, spec.split_seed)[0]
    if not csv_path.is_file():
        raise ValueError(f"no {split} split: '{csv_path}' does not exist")
    return read_chexpert_csv(csv_path, spec.uncertain)


def load_image(source: str) -> np.ndarray:
    """Pixels of a sample source: float32 (H, W) in [0, 1] (files through :mod:`omsf2.data.io`)."""
    if source.startswith("synthetic:"):
        _, seed, split, index, size = source.split(":")
        return synthetic.generate_phantom(int(seed), int(index), split, int(size)).image
    return dio.read_image(source)


def load_sample(sample: Sample, spec: PreprocessSpec) -> np.ndarray:
    """Model input of one sample: float32 (C, H, W), exactly what the runtime computes."""
    return preprocess(load_image(sample.source), spec)
