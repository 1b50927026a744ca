"""What a checkpoint records about its data: counts per split and class, the split rule, the data's hash.

The export copies this record into ``report.json`` and the bundle's model card reports it
(:mod:`omsf2.runtime.model_card`); ``omsf2 trace`` recomputes the hash from the disk
(:mod:`omsf2.runtime.trace`). Every field is a fact of the run: the counts come from the splits
the loop trained on, the rule from the configuration that made them, the number of patients that two
splits share is counted, not assumed. The hash is :func:`omsf2.lineage.data_listing` of the source
(for phantoms, which are generated in memory, the hash of the generator's parameters).

The trade-off: the listing reads every file of a folder source once when a run starts or resumes
(about as much as one epoch reads); a resumed run records the data as it is at the resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omsf2.data.datasets import SYNTHETIC, LabeledSet, read_patients
from omsf2.lineage import data_listing, record_sha256
from omsf2.train.config import TrainConfig
from omsf2.train.splits import Splits

RECORD_VERSION = 1


def _counts(ds: LabeledSet) -> dict[str, Any]:
    return {
        "description": ds.description,
        "n": len(ds),
        "patients": len({s.patient for s in ds.samples}),
        "per_class": dict(zip(ds.classes, ds.class_counts(), strict=True)),
    }


def _shared(a: LabeledSet, b: LabeledSet) -> int:
    return len({s.patient for s in a.samples} & {s.patient for s in b.samples})


def _patients_from(source: str) -> str:
    if source == SYNTHETIC:
        return "each phantom is its own patient"
    root = Path(source)
    if root.is_file() or (root / "train.csv").is_file():
        return "the CSV's patientNNNNN path component (else the image's folder)"
    if read_patients(root):
        return "labels.csv (its split_group, else patient_id, column)"
    return "each image is its own patient (no labels.csv with patient ids)"


def split_rule(cfg: TrainConfig, splits: Splits) -> dict[str, str]:
    """How the splits were made: patients' source, val, and the set that chose ``best.pt``."""
    spec = cfg.data
    if "(patient split: val)" in splits.val.description:
        val = (
            f"{spec.val_fraction:g} of train's patients per class, moved to val by patient "
            f"(omsf2.data.datasets.patient_split, seed {spec.split_seed})"
        )
    else:
        val = "the source's own val split"
    if cfg.folds:
        select = f"held-out fold {cfg.fold} of {cfg.folds} patient-level folds of train (seed {spec.split_seed})"
    elif cfg.select_fraction > 0:
        select = f"{cfg.select_fraction:g} of train's patients per class, held out (seed {spec.split_seed})"
    else:
        select = "val"
    return {
        "level": "patient",
        "patients_from": _patients_from(spec.source),
        "val": val,
        "best_checkpoint_chosen_on": select,
    }


def _listing(cfg: TrainConfig) -> dict[str, Any]:
    spec = cfg.data
    if spec.source == SYNTHETIC:
        params = {"seed": spec.synthetic_seed, "train_n": spec.synthetic_n, "size": spec.synthetic_size}
        return {
            "kind": "synthetic",
            "path": None,
            "scope": "phantoms generated in memory from these parameters",
            "parameters": params,
            "sha256": record_sha256(params),
        }
    return data_listing(spec.source)


def data_record(cfg: TrainConfig, splits: Splits) -> dict[str, Any]:
    """The record of ``splits`` (made from ``cfg``) that a checkpoint carries as ``data_record``.

    Raises:
        OSError: a data file cannot be read for its hash.
    """
    parts = {"train": splits.train, "val": splits.val}
    if splits.select is not None:
        parts[splits.select_name] = splits.select
    source = cfg.data.source
    return {
        "version": RECORD_VERSION,
        "source": source if source == SYNTHETIC else str(Path(source).resolve()),
        "classes": list(splits.train.classes),
        "task": splits.train.task.value,
        "splits": {name: _counts(ds) for name, ds in parts.items()},
        "shared_patients": {
            f"train/{name}": _shared(splits.train, ds) for name, ds in parts.items() if name != "train"
        },
        "split_rule": split_rule(cfg, splits),
        "listing": _listing(cfg),
    }
