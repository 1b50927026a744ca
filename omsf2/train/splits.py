"""The data splits of one training run: train, val, and the set that chooses ``best.pt``.

Three ways to choose ``best.pt``: on val (the default), on a selection set carved out of train
by patient (``select_fraction``; val then reports a figure nothing was chosen on), or, in
patient-level cross-validation, on the held-out fold (``folds``/``fold``; val is still
evaluated, as a second, independent figure). Every carve-out goes through
:func:`omsf2.data.datasets.patient_split`, so all of them are patient-disjoint and stratified
by each patient's main class in the same way; the folds are carved one after the other
(fold ``i`` takes ``1 / (K - i)`` of what is left), which gives every class's patients to the
folds in near-equal shares. The trade-off: a class with fewer patients than folds cannot be in
every fold, and the splitter keeps such a class's last patient in the part that remains.
"""

from __future__ import annotations

import dataclasses

from omsf2.data.datasets import LabeledSet, load_split, patient_split
from omsf2.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Splits:
    """The sets of one run.

    Attributes:
        train: what the model trains on.
        val: evaluated every epoch; chooses ``best.pt`` when ``select`` is None.
        select: chooses ``best.pt`` when present (selection set or held-out fold).
        select_name: what ``select`` is: "select" or "fold".
    """

    train: LabeledSet
    val: LabeledSet
    select: LabeledSet | None = None
    select_name: str = "val"

    @property
    def selected_on(self) -> str:
        """Which set chooses ``best.pt``: "val", "select" or "fold"."""
        return "val" if self.select is None else self.select_name


def _renamed(ds: LabeledSet, what: str) -> LabeledSet:
    return dataclasses.replace(ds, description=f"{ds.description.rsplit(' (patient split', 1)[0]} ({what})")


def selection_split(train: LabeledSet, fraction: float, seed: int) -> tuple[LabeledSet, LabeledSet]:
    """Carve ``fraction`` of ``train``'s patients (per class) out as a selection set.

    Returns:
        (the rest of train, the selection set), patient-disjoint.

    Raises:
        ValueError: too few patients to carve a non-empty set out and keep a non-empty train.
    """
    rest, sel = patient_split(train, fraction, seed)
    return _renamed(rest, "train without the selection set"), _renamed(sel, "selection set")


def patient_folds(ds: LabeledSet, k: int, seed: int) -> list[LabeledSet]:
    """Partition ``ds`` into ``k`` patient-disjoint folds, stratified by class.

    Every patient is in exactly one fold. Fold ``i`` takes ``1 / (k - i)`` of each class's
    remaining patients; the last fold is what remains.

    Raises:
        ValueError: ``k`` < 2, or too few patients for ``k`` non-empty folds.
    """
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    folds: list[LabeledSet] = []
    rest = ds
    for i in range(k - 1):
        try:
            rest, held = patient_split(rest, 1.0 / (k - i), seed + i)
        except ValueError as e:
            n = len({s.patient for s in ds.samples})
            raise ValueError(f"cannot make {k} patient-level folds of {n} patient(s); use fewer folds") from e
        folds.append(_renamed(held, f"fold {i}"))
    folds.append(_renamed(rest, f"fold {k - 1}"))
    return folds


def fold_split(ds: LabeledSet, k: int, fold: int, seed: int) -> tuple[LabeledSet, LabeledSet]:
    """(every fold but ``fold`` joined, fold ``fold``) of :func:`patient_folds`."""
    folds = patient_folds(ds, k, seed)
    held = folds[fold]
    ids = {s.patient for s in held.samples}
    rest = tuple(s for s in ds.samples if s.patient not in ids)
    return dataclasses.replace(ds, samples=rest, description=f"{ds.description} (all folds but {fold})"), held


def load_splits(cfg: TrainConfig) -> Splits:
    """The splits ``cfg`` trains, evaluates and selects on (a pure function of the config and data).

    Raises:
        ValueError: the classes of train and val differ, or train has fewer images than one batch.
    """
    train = load_split(cfg.data, "train")
    val = load_split(cfg.data, "val")
    if list(val.classes) != list(train.classes):
        raise ValueError(f"val classes {val.classes} differ from train classes {train.classes}")
    select, name = None, "val"
    if cfg.folds:
        train, select = fold_split(train, cfg.folds, cfg.fold, cfg.data.split_seed)
        name = "fold"
    elif cfg.select_fraction > 0:
        train, select = selection_split(train, cfg.select_fraction, cfg.data.split_seed)
        name = "select"
    if len(train) < cfg.batch_size:
        raise ValueError(f"train split has {len(train)} images, fewer than one batch of {cfg.batch_size}")
    return Splits(train, val, select, name)
