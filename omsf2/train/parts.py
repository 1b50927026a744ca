"""What a training run is made of once set up: data, model, average, optimisation, constants."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from omsf2.config import PreprocessSpec, Task
from omsf2.data.datasets import LabeledSet
from omsf2.data.loader import BatchSource
from omsf2.models import OMSF2
from omsf2.train.ema import ModelEma
from omsf2.train.losses import CenterLoss
from omsf2.train.splits import Splits


@dataclasses.dataclass
class RunParts:
    """What a run is made of once set up: data, model, optimisation, and per-step constants."""

    splits: Splits
    model: OMSF2
    pre: PreprocessSpec
    task: Task
    center: CenterLoss | None
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: no autocast
    train_src: BatchSource
    val_src: BatchSource
    steps: int
    weights: np.ndarray | None  # class-balanced sampling weights
    mean: torch.Tensor
    std: torch.Tensor
    aug_gen: torch.Generator
    fwd: torch.nn.Module  # the training forward (in DDP when distributed)
    sel_src: BatchSource | None  # the set that chooses best.pt, when it is not val
    ema: ModelEma | None
    data_record: dict[str, Any] = dataclasses.field(default_factory=dict)  # train.data_record, in checkpoints

    @property
    def train_ds(self) -> LabeledSet:
        """The set trained on."""
        return self.splits.train

    @property
    def val_ds(self) -> LabeledSet:
        """The set evaluated every epoch."""
        return self.splits.val

    @property
    def eval_model(self) -> OMSF2:
        """What is validated and saved as the checkpoint's weights: the average when there is one."""
        return self.model if self.ema is None else self.ema.module  # type: ignore[return-value]
