"""Exponential moving average of a model's weights, with a warm-up and a span tied to the schedule.

After every optimizer step ``ema = d_t * ema + (1 - d_t) * w`` with
``d_t = min(decay, 1 - (1 + t) ** -0.75)``, ``t`` the number of updates before this one: the
power warm-up of @crowsonkb's notes, used by timm's ``ModelEmaV3`` and diffusers' ``EMAModel``
(power 3/4 is their choice for runs far shorter than a million steps). The average of step ``t``
spans about ``1 / (1 - d_t) = (1 + t) ** 0.75`` recent steps, so it follows the fast early
changes and widens as training settles.

``decay`` defaults to a value tied to the schedule's length (:func:`schedule_decay`): the average
spans at most :data:`SPAN` of all steps. A fixed decay such as 0.999 spans 1000 steps, more than
a whole short run; on a 540-step run the old ``(1 + t) / (10 + t)`` warm-up never reached it and
the average spanned only ~1.3 epochs mid-schedule, while on the 300-step demo a wide average lags
the still-improving weights. Checkpoints saved with that older warm-up keep it when resumed
(:meth:`ModelEma.load`), so resumes stay exact.

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

SPAN = 0.1  # the average spans at most this share of the run's optimizer steps
POWER = 0.75  # warm-up power: the span after t updates is (1 + t) ** POWER steps
WARMUP = "power"  # the warm-up of new runs
LEGACY = "ratio"  # the warm-up (1 + t) / (10 + t) of checkpoints saved before the power warm-up
WARMUPS = (WARMUP, LEGACY)


def schedule_decay(total_steps: int) -> float:
    """The decay whose average spans :data:`SPAN` of ``total_steps`` (at least 2 steps)."""
    return 1.0 - 1.0 / max(2.0, SPAN * total_steps)


def ema_decay_at(decay: float, step: int, warmup: str = WARMUP) -> float:
    """Decay of update number ``step`` (0-based), warmed up and capped by ``decay``."""
    if warmup == LEGACY:
        return min(decay, (1.0 + step) / (10.0 + step))
    return min(decay, 1.0 - (1.0 + step) ** -POWER)


class ModelEma:
    """An averaged copy of ``model`` (eval mode, no gradients), updated with :meth:`update`.

    Args:
        model: the model being trained (already on its device and memory format).
        decay: the decay reached after the warm-up, in (0, 1) (see :func:`schedule_decay`).
        warmup: ``"power"``, or ``"ratio"`` for the warm-up of older checkpoints.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: str = WARMUP) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        if warmup not in WARMUPS:
            raise ValueError(f"EMA warm-up must be one of {WARMUPS}, got {warmup!r}")
        self.decay, self.warmup = decay, warmup
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights and buffers into the average (after an optimizer step)."""
        d = ema_decay_at(self.decay, self.updates, self.warmup)
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
        return {"decay": self.decay, "updates": self.updates, "warmup": self.warmup}

    def load(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Restore the average from a checkpoint's weights and :meth:`state`."""
        from omsf2.models.checkpoint import load_strict

        name = getattr(getattr(self.module, "cfg", None), "name", type(self.module).__name__)
        load_strict(self.module, weights, f"model {name!r}")
        self.updates = int(state["updates"])
        self.warmup = str(state.get("warmup", LEGACY))  # saved before the power warm-up: keep its own
