"""Losses: values and masking."""

from __future__ import annotations

import pytest
import torch

from omsf2.config import Task
from omsf2.train.losses import CenterLoss, soft_distance, task_loss


def test_soft_distance_bounds() -> None:
    a = torch.tensor([[30.0, -30.0], [0.0, 0.0]])
    assert float(soft_distance(a, a, Task.MULTICLASS)) == 0.0
    b = torch.tensor([[-30.0, 30.0], [0.0, 0.0]])
    # Row 1 flips a one-hot (distance 2), row 2 is unchanged: mean 1.
    assert float(soft_distance(a, b, Task.MULTICLASS)) == pytest.approx(1.0, abs=1e-6)
    assert float(soft_distance(a, b, Task.MULTILABEL)) == pytest.approx(1.0, abs=1e-6)


def test_masked_bce_ignores_masked_labels() -> None:
    logits = torch.tensor([[5.0, -5.0]])
    y = torch.tensor([[1.0, 1.0]])
    full = task_loss(logits, y, torch.tensor([[True, True]]), Task.MULTILABEL)
    masked = task_loss(logits, y, torch.tensor([[True, False]]), Task.MULTILABEL)
    assert float(masked) < 0.01 < float(full)
    none = task_loss(logits, y, torch.tensor([[False, False]]), Task.MULTILABEL)
    assert float(none) == 0.0


def test_center_loss_is_zero_at_the_centres() -> None:
    cl = CenterLoss(3, 2)
    with torch.no_grad():
        cl.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]))
    f = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    assert float(cl(f, torch.tensor([1, 2]))) == 0.0
    assert float(cl(f, torch.tensor([0, 0]))) == pytest.approx(0.5 * (2 + 4) / 2)
