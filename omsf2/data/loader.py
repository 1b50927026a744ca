"""Torch side of the data: a Dataset over :class:`LabeledSet` samples and in-memory caching.

Decoding and preprocessing happen in DataLoader workers (numpy code, the same as the runtime's);
the result is deterministic, so the training loop owns all randomness. A split that fits in
memory is materialised once into tensors (:func:`materialize`), which on a 2-core machine saves
re-decoding every epoch; larger ones stream through a DataLoader with a fixed batch order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from omsf2.config import PreprocessSpec, Task
from omsf2.data.datasets import LabeledSet, load_sample


@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch of model inputs and targets.

    Attributes:
        x: (N, C, H, W) float32 images.
        y: (N,) int64 class indices (multi-class) or (N, L) float32 targets (multi-label).
        mask: (N, L) bool label validity (multi-label) or None.
        index: (N,) int64 positions of the samples in their LabeledSet.
    """

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None
    index: torch.Tensor


def targets_of(ds: LabeledSet) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All targets of a set: (N,) int64, or (N, L) float32 with an (N, L) bool mask."""
    if ds.task is Task.MULTICLASS:
        return torch.tensor([int(s.target) for s in ds.samples], dtype=torch.int64), None  # type: ignore[arg-type]
    y = torch.tensor([list(s.target) for s in ds.samples], dtype=torch.float32)  # type: ignore[arg-type]
    m = torch.tensor([list(s.mask or ()) for s in ds.samples], dtype=torch.bool)
    return y, m


class SampleDataset(Dataset[tuple[torch.Tensor, int]]):
    """``ds[i] -> (image (C, H, W) float32, i)``; targets are looked up by index on the caller's side."""

    def __init__(self, ds: LabeledSet, spec: PreprocessSpec) -> None:
        self.ds = ds
        self.spec = spec

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(load_sample(self.ds.samples[i], self.spec)), i


def _loader(ds: LabeledSet, spec: PreprocessSpec, batches: Sequence[Sequence[int]], workers: int) -> DataLoader:
    return DataLoader(
        SampleDataset(ds, spec),
        batch_sampler=[list(b) for b in batches],
        num_workers=workers,
        # Workers must not inherit a random state that matters: loading is deterministic anyway.
        persistent_workers=False,
    )


class BatchSource:
    """Serves batches by index lists, from memory when materialised, else from a DataLoader.

    Args:
        ds: the samples.
        spec: preprocessing.
        workers: DataLoader worker processes (0 = load in the main process).
        cached: (N, C, H, W) tensor of all inputs, or None to stream.
    """

    def __init__(self, ds: LabeledSet, spec: PreprocessSpec, workers: int, cached: torch.Tensor | None) -> None:
        self.ds = ds
        self.spec = spec
        self.workers = workers
        self.cached = cached
        self.y, self.mask = targets_of(ds)

    def __len__(self) -> int:
        return len(self.ds)

    def batches(self, order: Sequence[Sequence[int]]) -> Iterator[Batch]:
        """Yield the batches whose sample indices are ``order`` (in that order)."""
        if not order:
            return
        if self.cached is not None:
            for b in order:
                idx = torch.as_tensor(list(b), dtype=torch.int64)
                yield self._make(self.cached[idx], idx)
            return
        for x, idx in _loader(self.ds, self.spec, order, self.workers):
            yield self._make(x, idx.to(torch.int64))

    def _make(self, x: torch.Tensor, idx: torch.Tensor) -> Batch:
        return Batch(x, self.y[idx], None if self.mask is None else self.mask[idx], idx)


def cache_bytes(ds: LabeledSet, spec: PreprocessSpec) -> int:
    """Bytes that materialising ``ds`` as float32 would take."""
    return len(ds) * spec.channels * spec.size[0] * spec.size[1] * 4


def materialize(
    ds: LabeledSet,
    spec: PreprocessSpec,
    workers: int,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Load and preprocess every sample once; returns (N, C, H, W) float32.

    Args:
        ds: the samples.
        spec: preprocessing.
        workers: parallel decoding processes.
        batch_size: samples per worker task.
        on_batch: called with the number of samples done after each batch (progress).
    """
    n = len(ds)
    out = torch.empty((n, spec.channels, *spec.size), dtype=torch.float32)
    order = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    for x, idx in _loader(ds, spec, order, workers):
        out[idx] = x
        if on_batch is not None:
            on_batch(len(idx))
    return out


def open_source(
    ds: LabeledSet,
    spec: PreprocessSpec,
    workers: int,
    max_cache_bytes: float,
    on_load: Callable[[], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> BatchSource:
    """A :class:`BatchSource` over ``ds``: materialised in memory when it fits ``max_cache_bytes``, else streamed.

    Args:
        ds: the samples.
        spec: preprocessing.
        workers: decoding processes.
        max_cache_bytes: memory budget for the cache (0 = always stream).
        on_load: called once before materialising (progress: a loading phase starts).
        on_batch: called with the number of samples loaded after each batch.
    """
    cached = None
    if cache_bytes(ds, spec) <= max_cache_bytes:
        if on_load is not None:
            on_load()
        cached = materialize(ds, spec, workers, on_batch=on_batch)
    return BatchSource(ds, spec, workers, cached)


def epoch_order(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    weights: np.ndarray | None = None,
    drop_last: bool = True,
) -> list[list[int]]:
    """The batches of one epoch: a random permutation, or class-balanced draws with replacement.

    Args:
        n: dataset size.
        batch_size: samples per batch.
        generator: the epoch's generator (seeded from the run seed and the epoch).
        weights: per-sample sampling weights for class-balanced sampling, or None.
        drop_last: drop a final incomplete batch (keeps BatchNorm statistics sane).
    """
    if weights is None:
        perm = torch.randperm(n, generator=generator)
    else:
        perm = torch.multinomial(
            torch.as_tensor(weights, dtype=torch.float64), n, replacement=True, generator=generator
        )
    idx = perm.tolist()
    stop = (n // batch_size) * batch_size if drop_last else n
    return [idx[i : i + batch_size] for i in range(0, stop, batch_size)]
