"""Size and cost of the registered variants (``omsf2 models``)."""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from omsf2.models.registry import _REGISTRY, create_model, list_models


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """One variant: parameters and GFLOPs (2 x multiply-adds) of one image at its default size."""

    name: str
    params: int
    img_size: int
    gflops: float
    description: str


@torch.no_grad()
def summarize(name: str) -> ModelSummary:
    """Build variant ``name`` and count its parameters and forward FLOPs."""
    model = create_model(name).eval()
    s = model.cfg.img_size
    x = torch.zeros(1, model.cfg.in_chans, s, s)
    with FlopCounterMode(display=False) as counter:
        model(x)
    doc = (_REGISTRY[name].__doc__ or "").strip().splitlines()[0]
    return ModelSummary(name, sum(p.numel() for p in model.parameters()), s, counter.get_total_flops() / 1e9, doc)


def model_summaries() -> list[ModelSummary]:
    """Summaries of every registered variant, sorted by name."""
    return [summarize(n) for n in list_models()]
