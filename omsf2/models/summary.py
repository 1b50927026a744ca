"""Size and cost of the registered variants (``omsf2 models``)."""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from omsf2.models import create_model, list_models, model_description


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
    cfg = getattr(model, "cfg", None)
    s = int(getattr(cfg, "img_size", 224))
    x = torch.zeros(1, int(getattr(cfg, "in_chans", 1)), s, s)
    with FlopCounterMode(display=False) as counter:
        model(x)
    params = sum(p.numel() for p in model.parameters())
    return ModelSummary(name, params, s, counter.get_total_flops() / 1e9, model_description(name))


def model_summaries() -> list[ModelSummary]:
    """Summaries of every registered variant, sorted by name."""
    return [summarize(n) for n in list_models()]
