"""Per-step arithmetic of the training loop: seeds, the learning-rate schedule, the monitor.

Pure functions of the config and the step, so that a resumed run recomputes exactly what an
uninterrupted one used; :mod:`omsf2.train.loop` owns everything with state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from omsf2.config import ScheduleName, Task
from omsf2.train.config import TrainConfig


def epoch_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed derived from ``seed`` and ``keys`` (epoch, step): independent streams per key."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0].item())


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global step ``step`` (linear warm-up, then the schedule)."""
    total = cfg.epochs * steps_per_epoch
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule is ScheduleName.COSINE:
        t = (step - warm) / max(1, total - warm)
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))
    if cfg.schedule is ScheduleName.STEP:
        return cfg.lr * cfg.step_gamma ** ((step // steps_per_epoch) // cfg.step_epochs)
    return cfg.lr


def monitor(task: Task, metrics: dict[str, Any], val_loss: float) -> tuple[float, float]:
    """Key that chooses best.pt: accuracy (macro AUC for multi-label); higher is better, ties go to the lower loss."""
    key = metrics.get("macro_auc") if task is Task.MULTILABEL else metrics["accuracy"]
    return (float(key) if key is not None else 0.0, -val_loss)


def check_finite(loss: torch.Tensor) -> float:
    """The loss as a float; FloatingPointError when it is NaN or infinite (a diverged run)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(
            f"training diverged: the loss became {value}; lower the learning rate or clip gradients"
        )
    return value
