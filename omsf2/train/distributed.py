"""Multi-process training with PyTorch's own DistributedDataParallel: ranks, sharding, agreement.

``torchrun --nproc_per_node N -m omsf2 train ...`` (or ``omsf2 train --nproc N``, which runs
the same through ``torch.distributed.run``) starts N processes; each reads its rank from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``)
and joins one process group: gloo on CPU, NCCL on GPUs. What this module owns:

- **Sharding**: every rank computes the same global batch order from ``(seed, epoch)`` (the
  permutation, or the class-balanced draws of ``--balanced``) and takes its contiguous slice of
  each global batch. ``--batch-size`` therefore stays the global batch, and the union of the
  ranks' samples at a step is exactly the batch one process would use.
- **Agreement**: a stop request (Ctrl-C or SIGTERM on any rank) and a failed set-up on any rank
  are all-reduced, so every rank stops at the same step or refuses together; a rank that dies
  makes the others' next collective fail (or time out after ``timeout``), which surfaces as a
  one-line :class:`DistributedError`.
- **Validation on the full split**: each rank predicts a contiguous shard of the split and the
  logits are gathered in order, so the metrics are those of the whole split, not a mean of
  per-rank metrics.
- **Synchronised BatchNorm** (``--sync-bn``): ``torch.nn.SyncBatchNorm`` on GPUs; on CPU, where
  PyTorch's refuses to run, :class:`GlobalBatchNorm2d` all-reduces the per-channel sums (and
  their gradients in the backward pass, as ``SyncBatchNorm`` does), so the statistics and their
  gradients are those of the global batch.

The trade-off: only rank 0 writes (checkpoints, metrics, the output-folder lock), so the other
ranks send it their RNG states at each checkpoint; a run resumes exactly only with the world
size it was saved with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

DEFAULT_TIMEOUT_S = 300.0


class DistributedError(RuntimeError):
    """Another rank failed, died or stopped answering; this rank cannot go on."""


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the run.

    Attributes:
        rank: 0-based global rank (0 writes the files).
        size: number of processes (1 = not distributed).
        local_rank: rank on this node (picks the GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, metrics and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.size > 1


def world_from_env() -> World:
    """The :class:`World` torchrun describes in the environment (rank 0 of 1 without it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers: {e}") from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"invalid distributed environment: RANK={rank}, WORLD_SIZE={size}")
    return World(rank, size, local)


def rank_device(device: torch.device, world: World) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA with several processes (one GPU each)."""
    if device.type != "cuda" or not world.distributed:
        return device
    if device.index is not None:
        raise ValueError(f"with several processes each uses cuda:LOCAL_RANK; pass --device cuda, not {device}")
    n = torch.cuda.device_count()
    if world.local_rank >= n:
        raise ValueError(f"process {world.local_rank} on this node has no GPU: the node has {n}; start at most {n}")
    return torch.device("cuda", world.local_rank)


def init(world: World, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the process group (gloo for CPU, NCCL for CUDA); nothing to do for one process."""
    if not world.distributed or torch.distributed.is_initialized():
        return
    if not torch.distributed.is_available():
        raise ValueError("this PyTorch build has no torch.distributed; train with one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's object collectives use the current device
    kw: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    torch.distributed.init_process_group(
        backend, rank=world.rank, world_size=world.size, timeout=datetime.timedelta(seconds=timeout_s), **kw
    )


def shutdown() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _collective_error(e: BaseException, world: World) -> DistributedError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return DistributedError(
        f"rank {world.rank} of {world.size}: another rank failed, died or stopped answering ({first[:200]})"
    )


def all_true(flag: bool, world: World, device: torch.device) -> bool:
    """Whether ``flag`` holds on every rank (an all-reduce; ``flag`` itself for one process)."""
    if not world.distributed:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    try:
        torch.distributed.all_reduce(t)
    except (RuntimeError, torch.distributed.DistError) as e:
        raise _collective_error(e, world) from None
    return float(t.item()) == 0.0


def any_true(flag: bool, world: World, device: torch.device) -> bool:
    """Whether ``flag`` holds on some rank (a stop requested anywhere stops everyone)."""
    return not all_true(not flag, world, device)


def mean_over_ranks(value: float, world: World, device: torch.device) -> float:
    """The mean of ``value`` over ranks (the global batch's mean loss from the local means)."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    try:
        torch.distributed.all_reduce(t)
    except (RuntimeError, torch.distributed.DistError) as e:
        raise _collective_error(e, world) from None
    return float(t.item()) / world.size


def gather_objects(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    try:
        torch.distributed.all_gather_object(out, obj)
    except (RuntimeError, torch.distributed.DistError) as e:
        raise _collective_error(e, world) from None
    return out


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, world: World) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) now.

    DDP does the same at the start of the next forward; doing it right after a step lets
    whatever reads the buffers in between (the weight average) see the same values on every rank.
    """
    if not world.distributed:
        return
    try:
        for b in module.buffers():
            torch.distributed.broadcast(b, src=0)
    except (RuntimeError, torch.distributed.DistError) as e:
        raise _collective_error(e, world) from None


def shard_batches(order: Sequence[Sequence[int]], world: World) -> list[list[int]]:
    """This rank's contiguous slice of each global batch (the batch size must divide by the ranks)."""
    out = []
    for b in order:
        per = len(b) // world.size
        out.append(list(b[world.rank * per : (world.rank + 1) * per]))
    return out


def check_batch_size(batch_size: int, world: World) -> None:
    """Refuse a global batch that does not split evenly over the ranks (or leaves a rank < 2 images)."""
    if batch_size % world.size or batch_size // world.size < 2:
        raise ValueError(
            f"batch size {batch_size} must be a multiple of the {world.size} processes with at least 2 images "
            "per process (--batch-size is the global batch)"
        )


def val_shard(n: int, world: World) -> range:
    """The contiguous part of an ``n``-sample split that this rank predicts."""
    per = -(-n // world.size)
    return range(min(n, world.rank * per), min(n, (world.rank + 1) * per))


def rank_seed(base: int, rank: int) -> int:
    """Seed of a per-rank random stream: ``base`` on rank 0 (one process is unchanged), mixed for others."""
    if rank == 0:
        return base
    return int(np.random.SeedSequence([base, rank]).generate_state(1)[0].item())


class TrainForward(torch.nn.Module):
    """What DDP wraps: one training step's forward passes, so that every gradient is synchronised.

    DDP synchronises only what runs through its ``forward``, once per backward. The model's
    training pass is ``forward_train``, the centre loss has parameters of its own, and the
    attention-guided view is a second pass whose input depends on the first: all three run
    inside this one ``forward``.
    """

    def __init__(self, model: torch.nn.Module, center: torch.nn.Module | None) -> None:
        super().__init__()
        self.model = model
        self.center = center

    def forward(
        self, x: Tensor, y: Tensor, view: Callable[[Tensor, Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(logits, logits of the attention-guided view or None, centre loss or None)``.

        Args:
            x: the batch.
            y: its targets (for the centre loss).
            view: ``(x, attention) -> x_view`` to add an attention-guided pass (BatchNorm
                running statistics frozen during it), or None; ignored when the model has no
                attention maps.
        """
        from omsf2.train.augment import frozen_bn_stats

        out = self.model.forward_train(x)  # type: ignore[operator]
        closs = self.center(out.features, y) if self.center is not None else None
        la = None
        if view is not None and out.attention is not None:  # variants without attention maps: no view
            xa = view(x, out.attention)
            with frozen_bn_stats(self.model):
                la = self.model.forward_train(xa).logits  # type: ignore[operator]
        return out.logits, la, closs


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) with its gradient: the sum's gradient reaches every rank's input, summed."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        out = t.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(out)
        return out


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, on any device.

    The per-channel sum, sum of squares and count are all-reduced (with gradients) over the
    process group; with one process it is plain batch normalisation computed the same way
    (``E[x^2] - E[x]^2``), which is what lets a 1-process run match an N-process one.
    """

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if not self.training:
            return super().forward(x)
        dims = (0, 2, 3)
        xd = x.double()  # float64 sums: E[x^2] - E[x]^2 cancels, and ranks add partial sums in another order
        n_local = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        stats = torch.cat([xd.sum(dims), (xd * xd).sum(dims), n_local])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            stats = _SumOverRanks.apply(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                mom = self.momentum  # None: cumulative average, as BatchNorm2d
                if mom is None:
                    mom = 1.0 / float(self.num_batches_tracked) if self.num_batches_tracked is not None else 0.0
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - mom).add_(mean.detach() * mom)
                self.running_var.mul_(1 - mom).add_(unbiased.detach() * mom)
        shape = (1, c, 1, 1)
        mean, var = mean.to(x.dtype), var.to(x.dtype)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_global_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every ``BatchNorm2d`` of ``module`` by a :class:`GlobalBatchNorm2d` with the same state."""
    for name, child in module.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            new = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            ).to(next(iter(child.state_dict().values())).device)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_global_bn(child)
    return module


def sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``--sync-bn``: PyTorch's SyncBatchNorm on CUDA, :class:`GlobalBatchNorm2d` elsewhere."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return convert_global_bn(model)


def wrap(fwd: TrainForward, world: World, device: torch.device) -> torch.nn.Module:
    """``fwd`` in DistributedDataParallel when distributed, else as is."""
    if not world.distributed:
        return fwd
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" and device.index is not None else None
    # static_graph: the same parameters take part at every step (a few of the neck's never do).
    return DistributedDataParallel(fwd, device_ids=ids, static_graph=True)


@torch.no_grad()
def sharded_logits(
    model: torch.nn.Module, x_of: Any, n: int, batch_size: int, world: World, device: torch.device
) -> np.ndarray:
    """Logits of all ``n`` samples: each rank predicts its :func:`val_shard`, gathered in order.

    Args:
        model: the plain (unwrapped) model; returns ``(logits, heatmap)``.
        x_of: callable mapping a list of sample indices to their input batch.
        n: split size.
        batch_size: samples per forward pass.
        world: the ranks.
        device: where the model runs.
    """
    model.eval()
    part = val_shard(n, world)
    outs = []
    for i in range(part.start, part.stop, batch_size):
        logits, _ = model(x_of(list(range(i, min(part.stop, i + batch_size)))).to(device))
        outs.append(logits.float().cpu().numpy())
    k = int(getattr(model, "num_classes", 0))
    mine = np.concatenate(outs) if outs else np.zeros((0, k), np.float32)
    logits = np.concatenate(gather_objects(mine, world))
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise FloatingPointError(f"the model's logits are not finite (NaN or infinity) for {bad} of {n} images")
    return logits.astype(np.float32)


def launch(nproc: int, argv: Sequence[str], nnodes: str = "1", rdzv_endpoint: str | None = None) -> int:
    """Run ``python -m omsf2 <argv>`` under ``torch.distributed.run`` with ``nproc`` processes per node.

    Args:
        nproc: processes on this node (one per GPU, or CPU processes).
        argv: the omsf2 command line to run in every process (without ``--nproc``).
        nnodes: torchrun's ``--nnodes`` (e.g. ``"2"`` or ``"1:4"``).
        rdzv_endpoint: ``host:port`` of the rendezvous for several nodes; one node uses a free local port.

    Returns:
        torchrun's exit code (0 when every process succeeded), 130 after a Ctrl-C.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if rdzv_endpoint:
        cmd += [f"--nnodes={nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}"]
    else:
        cmd += ["--standalone", "--nnodes=1"]
    cmd += ["-m", "omsf2", *argv]
    proc = subprocess.Popen(cmd)  # the terminal's Ctrl-C reaches every rank through the process group
    interrupted = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal interrupted
        interrupted = True  # the ranks save and stop; wait for them
        if signum == signal.SIGTERM:
            # A SIGTERM sent to this launcher alone (a service manager) must reach torchrun, which passes
            # it to the ranks. SIGINT is not forwarded: a terminal's Ctrl-C already reached them, and a
            # second signal would make them abort instead of saving.
            proc.send_signal(signal.SIGTERM)

    # Own handlers rather than the inherited disposition: a shell starts background jobs with SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler, so a group-wide SIGINT would stop
    # the ranks while this launcher reported torchrun's exit code 1 instead of 130.
    main = threading.current_thread() is threading.main_thread()
    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        rc = proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return 130 if (interrupted and rc) else rc


def launch_cli(nproc: int, argv: Sequence[str]) -> int:
    """:func:`launch` for ``omsf2 ... train --nproc N ...``: the same command line without ``--nproc``."""
    if "WORLD_SIZE" in os.environ:
        raise ValueError("--nproc starts torchrun itself; under torchrun drop --nproc")
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    return launch(nproc, rest)


@contextlib.contextmanager
def claimed_on_main(world: World, device: torch.device, out: Path, run_id: str, overwrite: bool) -> Iterator[None]:
    """Rank 0 checks and locks the output folder (:func:`~omsf2.train.rundir.claim_run_dir`); all ranks agree.

    Rank 0 re-raises its own error; the others raise a :class:`DistributedError` pointing at rank 0.
    """
    from omsf2.train.rundir import claim_run_dir

    with contextlib.ExitStack() as stack:
        err: Exception | None = None
        if world.is_main:
            try:
                stack.enter_context(claim_run_dir(out, run_id, overwrite))
            except Exception as e:  # told to the other ranks first, then re-raised
                err = e
        ok = all_true(err is None, world, device)
        if err is not None:
            raise err
        if not ok:
            raise DistributedError(f"rank {world.rank} of {world.size}: rank 0 could not claim '{out}' (see its error)")
        yield
