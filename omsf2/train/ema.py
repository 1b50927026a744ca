"""Exponential moving average of a model's weights, with the warm-up of TensorFlow/timm.

After every optimizer step ``ema = d_t * ema + (1 - d_t) * w`` with
``d_t = min(decay, (1 + t) / (10 + t))``, ``t`` the number of updates before this one. The
warm-up lets the average follow the fast early changes (``d_0 = 0.1``) and reach ``decay`` after
about ``10 / (1 - decay)`` steps, so short runs are not validated on weights still close to the
random initialisation.

What is averaged: every floating-point entry of the state dict, parameters *and* BatchNorm
running statistics (as timm's ``ModelEmaV3`` does by default); integer buffers
(``num_batches_tracked``) are copied. Averaging the running statistics keeps them matched to the
averaged weights: the statistics of step ``t`` describe the activations of the raw weights of
step ``t``, and the averaged weights are a mix of recent raw weights, so the same mix of their
statistics is the consistent choice. Copying the raw model's statistics would pair slow weights
with the fast weights' statistics. The trade-off: the averaged statistics are not exactly those
of the averaged weights (nothing short of a recalibration pass is); with a decay near 1 the
difference is small.

Under DDP the average is kept on the unwrapped module of every rank: the ranks hold the same
weights after each step (gradients are averaged, buffers broadcast from rank 0), so their
averages are equal without any communication.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

DEFAULT_DECAY = 0.999


def ema_decay_at(decay: float, step: int) -> float:
    """Decay of update number ``step`` (0-based): ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


class ModelEma:
    """An averaged copy of ``model`` (eval mode, no gradients), updated with :meth:`update`.

    Args:
        model: the model being trained (already on its device and memory format).
        decay: the decay reached after the warm-up, in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float = DEFAULT_DECAY) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights and buffers into the average (after an optimizer step)."""
        d = ema_decay_at(self.decay, self.updates)
        ema_state = self.module.state_dict()
        for name, v in model.state_dict().items():
            e = ema_state[name]
            if e.is_floating_point():
                e.lerp_(v.detach(), 1.0 - d)  # e = d * e + (1 - d) * v
            else:
                e.copy_(v)
        self.updates += 1

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the averaged weights (which go in as the model's)."""
        return {"decay": self.decay, "updates": self.updates}

    def load(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Restore the average from a checkpoint's weights and :meth:`state`."""
        from omsf2.models.checkpoint import load_strict

        name = getattr(getattr(self.module, "cfg", None), "name", type(self.module).__name__)
        load_strict(self.module, weights, f"model {name!r}")
        self.updates = int(state["updates"])
