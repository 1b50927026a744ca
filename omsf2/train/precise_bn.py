"""Precise BatchNorm: the evaluated weights' running statistics recomputed on un-augmented train images.

Before every validation (and so in every ``best.pt`` and ``last.pt``) the BatchNorm running means
and variances of the weights that are validated and saved (the exponential moving average when
kept, see :mod:`omsf2.train.ema`) are recomputed from scratch: a forward pass over a fixed random
subset of the train images, un-augmented, with BatchNorm in training mode and a cumulative average
over the batches (``momentum=None``), as fvcore's ``update_bn_stats`` (Wu & Johnson, "Rethinking
'Batch' in BatchNorm", 2021) and ``torch.optim.swa_utils.update_bn`` do.

Why: the averaged weights' running statistics are an average of the raw weights' statistics over
the same steps, which are taken on augmented batches. Neither is the statistics of the averaged
weights on the images a deployed model sees. On the phantoms this mismatch alone moved validation
by up to 41 points between neighbouring epochs late in the schedule (``bench/phantom_diagnosis.py``:
worst dip after the first third 41.3 / 29.8 / 33.2 points over seeds 0-2 as kept, 12.2 / 10.5 / 8.7
with the statistics recomputed). Training itself is unchanged: the raw model's forward in training
mode normalises with batch statistics, and no training step reads the running ones.

The recomputation runs in place on the evaluated module, so it is part of the state a checkpoint
saves and an exact resume restores. Only BatchNorm layers switch to training mode: dropout stays
off, fake-quantization observers (``--qat``) do not update, and no random number is drawn.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from omsf2.train import distributed as ddp

if TYPE_CHECKING:
    from omsf2.data.loader import BatchSource
    from omsf2.train.config import TrainConfig
    from omsf2.train.distributed import World
    from omsf2.train.reporter import Reporter

DEFAULT_IMAGES = 256  # TrainConfig.precise_bn's default: a few seconds per epoch on 2 CPU cores at 224 px


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]  # fmt: skip


def probe_indices(n_train: int, n_images: int, seed: int) -> list[int]:
    """A fixed random subset of the train set, in random order, as batches (the same on every rank).

    Args:
        n_train: train set size.
        n_images: how many images to use (at most ``n_train``).
        seed: the run's seed (the subset is fixed for the whole run).

    Returns:
        Train indices in random order, so that a batch cut from them mixes classes and its variance
        includes the between-class part, as a training batch's does.
    """
    g = torch.Generator().manual_seed(seed + 7919)  # a stream of its own: the batch order's is untouched
    return torch.randperm(n_train, generator=g)[: min(n_images, n_train)].tolist()


def batched(indices: list[int], batch_size: int) -> list[list[int]]:
    """``indices`` cut into consecutive batches of ``batch_size`` (the last may be shorter, >= 2)."""
    out = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    if len(out) > 1 and len(out[-1]) < 2:  # BatchNorm needs two samples for a variance
        out[-2].extend(out.pop())
    return out


def probe_batches(n_train: int, n_images: int, batch_size: int, seed: int, whole: bool = False) -> list[list[int]]:
    """The run's fixed probe (:func:`probe_indices`) cut into batches of ``batch_size``.

    Args:
        n_train: train set size.
        n_images: how many images to use.
        batch_size: the training batch size.
        seed: the run's seed.
        whole: only whole batches (at least one), for sharding over ranks as training does.
    """
    if not whole:
        return batched(probe_indices(n_train, n_images, seed), batch_size)
    idx = probe_indices(n_train, max(n_images, batch_size), seed)
    return [b for b in batched(idx, batch_size) if len(b) == batch_size] or [idx]


def recalibrate(
    model: nn.Module, source: BatchSource, cfg: TrainConfig, world: World, device: torch.device, reporter: Reporter
) -> int:
    """The training loop's step: :func:`recompute_bn_stats` on the run's probe of ``source`` (un-augmented).

    With ``--sync-bn`` over several ranks each rank takes its slice of every whole batch, as in training,
    so the ranks together compute one process's statistics. Without it every rank runs the same whole
    batches and rank 0's result is kept everywhere, so GPU non-determinism cannot leave the ranks apart.

    Returns:
        The number of images this rank saw.
    """
    sharded = cfg.sync_bn and world.distributed
    batches = probe_batches(len(source), cfg.precise_bn, cfg.batch_size, cfg.seed, sharded)
    if sharded:
        batches = ddp.shard_batches(batches, world)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    reporter.on_task("recomputing BatchNorm statistics", sum(len(b) for b in batches))

    def inputs() -> Iterator[torch.Tensor]:
        for b in source.batches(batches):
            yield b.x.contiguous(memory_format=fmt).to(device, non_blocking=True)
            reporter.on_advance(len(b.index))

    seen = recompute_bn_stats(model, inputs())
    ddp.broadcast_buffers(model, world)
    return seen


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, inputs: Iterable[torch.Tensor]) -> int:
    """Replace ``model``'s BatchNorm running statistics by their average over ``inputs``.

    Args:
        model: the module to recalibrate, in place; left in eval mode.
        inputs: (N, C, H, W) batches on the model's device and memory format, N >= 2 each.

    Returns:
        The number of images seen (0 leaves the statistics as they were).
    """
    bns = bn_layers(model)
    if not bns:
        return 0
    saved = {b: (b.running_mean.clone(), b.running_var.clone(), b.momentum, b.num_batches_tracked.clone()) for b in bns}  # type: ignore[union-attr]
    model.eval()
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # a cumulative average over the batches
        b.train()
    seen, done = 0, False
    try:
        for x in inputs:
            model(x)
            seen += int(x.shape[0])
        done = True
    finally:
        for b, (mean, var, momentum, tracked) in saved.items():
            b.momentum = momentum
            b.eval()
            b.num_batches_tracked.copy_(tracked)  # type: ignore[union-attr]  # it counts training steps
            if not done or seen == 0:  # an error or no input: the statistics stay as they were
                b.running_mean.copy_(mean)  # type: ignore[union-attr]
                b.running_var.copy_(var)  # type: ignore[union-attr]
    return seen
