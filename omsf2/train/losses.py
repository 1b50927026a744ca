"""Training losses: task loss, MAG-SD soft distance, and an optional centre loss.

The soft distance ties an augmented view's prediction to the raw view's: the squared L2
distance between their probability vectors (softmax for one label per image, sigmoid for
independent labels), averaged over the batch. It is bounded (at most 2), smooth, and pulls
both predictions together rather than trusting a hard label that an augmentation such as
``drop`` may have made partly wrong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omsf2.config import Task


def task_loss(logits: Tensor, y: Tensor, mask: Tensor | None, task: Task, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy (multi-class) or masked binary cross-entropy (multi-label).

    Args:
        logits: (N, K).
        y: (N,) int64 class indices, or (N, K) float targets.
        mask: (N, K) bool label validity for multi-label, else None.
        task: which of the two.
        label_smoothing: for cross-entropy only.

    Returns:
        Scalar loss (masked mean over valid labels; zero when none is valid).
    """
    if task is Task.MULTICLASS:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    if mask is None:
        return per.mean()
    m = mask.to(per.dtype)
    return (per * m).sum() / m.sum().clamp_min(1.0)


def probabilities(logits: Tensor, task: Task) -> Tensor:
    """Softmax over classes (multi-class) or element-wise sigmoid (multi-label)."""
    return logits.softmax(dim=1) if task is Task.MULTICLASS else torch.sigmoid(logits)


def soft_distance(raw_logits: Tensor, aug_logits: Tensor, task: Task) -> Tensor:
    """MAG-SD soft distance: mean over the batch of ||p(raw) - p(aug)||^2. Both (N, K) -> scalar."""
    d = probabilities(raw_logits.float(), task) - probabilities(aug_logits.float(), task)
    return (d * d).sum(dim=1).mean()


class CenterLoss(nn.Module):
    """Centre loss (Wen et al., 2016): pulls each pooled feature towards its class centre.

    The centres are parameters, updated by the optimizer with the rest of the model.

    Args:
        num_classes: K.
        dim: feature size F.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.zeros(num_classes, dim))

    def forward(self, features: Tensor, y: Tensor) -> Tensor:
        """Features (N, F), y (N,) int64 -> scalar: mean of 0.5 * ||f - c_y||^2."""
        return 0.5 * (features.float() - self.centers[y]).pow(2).sum(dim=1).mean()
