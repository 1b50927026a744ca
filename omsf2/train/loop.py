"""The training loop: exact resume, atomic checkpoints, validation each epoch, early stopping.

Determinism is by construction: every epoch re-seeds the batch order, the augmentation
generator and torch's global RNG (dropout) from ``(seed, epoch)``; the data pipeline has no
randomness; mid-epoch checkpoints store the RNG states and the step reached. Resuming from any
``last.pt`` therefore replays exactly the steps an uninterrupted run takes (on the same device
and thread count). Ctrl-C is caught between steps: the state is saved to ``last.pt`` and the
run can be resumed; a second Ctrl-C aborts at once.

Progress goes to a :class:`Reporter` so that the library never prints: the CLI passes a rich
progress bar, the default logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from omsf2.config import OptimizerName, PreprocessSpec, ScheduleName, Task
from omsf2.data.datasets import LabeledSet, load_split
from omsf2.data.loader import BatchSource, epoch_order, open_source
from omsf2.evaluate import compute_metrics, predict_logits, resolve_device
from omsf2.fileio import write_json
from omsf2.models.checkpoint import checkpoint_info, load_checkpoint, load_init_weights, save_checkpoint
from omsf2.models.omsf2 import OMSF2
from omsf2.models.registry import model_config
from omsf2.train.augment import apply_attention_aug, geometric, intensity
from omsf2.train.config import TrainConfig
from omsf2.train.losses import CenterLoss, soft_distance, task_loss

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Receives progress; the CLI renders it, tests may act on it (e.g. interrupt a run)."""

    def on_start(self, info: dict[str, Any]) -> None:
        """The run starts: model, data sizes, device, epochs."""

    def on_task(self, name: str, total: int) -> None:
        """A sub-task of ``total`` items starts (loading, validating)."""

    def on_advance(self, n: int) -> None:
        """``n`` more items of the current sub-task are done."""

    def on_epoch_start(self, epoch: int, steps: int, start_step: int) -> None:
        """Epoch ``epoch`` (1-based) of ``steps`` steps starts at ``start_step`` (> 0 when resumed)."""

    def on_step(self, epoch: int, step: int, loss: float, lr: float) -> None:
        """Step ``step`` (1-based) finished with this loss at this learning rate."""

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """An epoch finished; ``record`` holds its losses and validation metrics."""


class LogReporter:
    """Default reporter: one log line per epoch (the :class:`Reporter` methods, documented there)."""

    def on_start(self, info: dict[str, Any]) -> None:  # noqa: D102
        log.info("training %s", info)

    def on_task(self, name: str, total: int) -> None:  # noqa: D102
        log.debug("%s (%d)", name, total)

    def on_advance(self, n: int) -> None:  # noqa: D102
        pass

    def on_epoch_start(self, epoch: int, steps: int, start_step: int) -> None:  # noqa: D102
        pass

    def on_step(self, epoch: int, step: int, loss: float, lr: float) -> None:  # noqa: D102
        pass

    def on_epoch_end(self, record: dict[str, Any]) -> None:  # noqa: D102
        log.info("epoch %s", record)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        out_dir: where best.pt, last.pt and metrics.json are.
        best_epoch: 1-based epoch of best.pt (0 when no epoch completed).
        best: validation metrics of best.pt.
        history: one record per completed epoch.
        interrupted: the run was stopped (Ctrl-C) and can be resumed from last.pt.
        stopped_early: early stopping ended the run.
        wall_s: wall time of this invocation.
    """

    out_dir: Path
    best_epoch: int
    best: dict[str, Any]
    history: list[dict[str, Any]]
    interrupted: bool
    stopped_early: bool
    wall_s: float


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0].item())


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


class _StopFlag:
    """SIGINT -> flag checked between steps; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.set = False

    def request(self) -> None:
        self.set = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.set:
                raise KeyboardInterrupt
            self.set = True

        old = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def frozen_bn_stats(model: torch.nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics but do not update their running ones.

    Attention-guided views (zoomed crops, erased regions) are not what the model sees at
    inference; letting them into the running statistics made validation swing wildly between
    epochs. Momentum 0 keeps ``running = (1 - 0) * running``.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom


def _monitor(task: Task, metrics: dict[str, Any], val_loss: float) -> tuple[float, float]:
    # Higher is better; ties go to the lower validation loss.
    key = metrics.get("macro_auc") if task is Task.MULTILABEL else metrics["accuracy"]
    return (float(key) if key is not None else 0.0, -val_loss)


class Trainer:
    """One training run. Build with a config (new run) or a checkpoint (resume), then :meth:`run`.

    Args:
        cfg: the run's configuration.
        out_dir: where checkpoints and metrics go (created when the first file is written).
        reporter: progress sink.
        resume: a ``last.pt`` (or any omsf2 checkpoint with training state) to continue.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path,
        reporter: Reporter | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.rep: Reporter = reporter or LogReporter()
        self.stop = _StopFlag()
        self.device = resolve_device(cfg.device)
        self._resume = resume

    def request_stop(self) -> None:
        """Stop after the current step and save a resumable ``last.pt`` (what Ctrl-C does)."""
        self.stop.request()

    # -- set-up --------------------------------------------------------------------------------
    def _load_data(self) -> tuple[LabeledSet, LabeledSet]:
        train = load_split(self.cfg.data, "train")
        val = load_split(self.cfg.data, "val")
        if list(val.classes) != list(train.classes):
            raise ValueError(f"val classes {val.classes} differ from train classes {train.classes}")
        if len(train) < self.cfg.batch_size:
            raise ValueError(f"train split has {len(train)} images, fewer than one batch of {self.cfg.batch_size}")
        return train, val

    def _source(self, ds: LabeledSet, pre: PreprocessSpec, name: str) -> BatchSource:
        budget = self.cfg.cache_gb * (1 << 30) if self.cfg.cache else -1.0
        return open_source(
            ds, pre, self.cfg.workers, budget, lambda: self.rep.on_task(f"loading {name}", len(ds)), self.rep.on_advance
        )

    def _build(self, train: LabeledSet) -> tuple[OMSF2, PreprocessSpec, Task]:
        cfg = self.cfg
        if self._resume is not None:
            mcfg, classes, task, pre = checkpoint_info(self._resume)
            if classes != list(train.classes):
                raise ValueError(f"checkpoint classes {classes} differ from the data's {list(train.classes)}")
            model = OMSF2(mcfg)
            model.load_state_dict(self._resume["model"])
            return model, pre, task
        torch.manual_seed(cfg.seed)
        mcfg = model_config(
            cfg.model,
            num_classes=len(train.classes),
            in_chans=cfg.in_chans,
            dropout=cfg.dropout,
            bap=cfg.bap,
            **({"img_size": cfg.img_size} if cfg.img_size else {}),
        )
        model = OMSF2(mcfg)
        if cfg.init:
            load_init_weights(model, cfg.init)
        size = (mcfg.img_size, mcfg.img_size)
        pre = PreprocessSpec(size=size, resize=cfg.resize, channels=cfg.in_chans)
        return model, pre, train.task

    def _optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        cfg = self.cfg
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]  # norms and biases: decay hurts, helps nothing
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if cfg.optimizer is OptimizerName.SGD:
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
        return torch.optim.AdamW(groups, lr=cfg.lr)

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train; returns when all epochs ran, early stopping triggered, or a stop was requested."""
        t0 = time.perf_counter()
        cfg = self.cfg
        train_ds, val_ds = self._load_data()
        model, pre, task = self._build(train_ds)
        if cfg.center_loss > 0 and task is not Task.MULTICLASS:
            raise ValueError("the centre loss needs one label per image (multi-class data)")
        dev = self.device
        model.to(dev)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs lack it
        center = CenterLoss(model.num_classes, model.head.num_features).to(dev) if cfg.center_loss > 0 else None
        params = [p for p in model.parameters()] + ([] if center is None else list(center.parameters()))
        opt = self._optimizer(params)
        use_amp = cfg.amp and dev.type == "cuda"
        amp_dtype = torch.bfloat16 if (use_amp and torch.cuda.is_bf16_supported()) else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype is torch.float16)

        state = self._resume.get("train_state", {}) if self._resume else {}
        epoch0 = int(state.get("epoch", 0))
        step0 = int(state.get("step", 0))
        history: list[dict[str, Any]] = list(state.get("history", []))
        best_key = tuple(state.get("best_key", (-math.inf, -math.inf)))
        best_epoch = int(state.get("best_epoch", 0))
        best_metrics: dict[str, Any] = dict(state.get("best_metrics", {}))
        if self._resume:
            opt.load_state_dict(self._resume["optimizer"])
            if center is not None and "center" in self._resume:
                center.load_state_dict(self._resume["center"])
            if "scaler" in self._resume:
                scaler.load_state_dict(self._resume["scaler"])

        train_src = self._source(train_ds, pre, "train")
        val_src = self._source(val_ds, pre, "val")
        steps = len(train_src) // cfg.batch_size
        weights = None
        if cfg.balanced and task is Task.MULTICLASS:
            counts = np.bincount(train_src.y.numpy(), minlength=model.num_classes).astype(np.float64)
            weights = 1.0 / counts[train_src.y.numpy()]
        mean = torch.tensor(pre.mean * (pre.channels // len(pre.mean)))
        std = torch.tensor(pre.std * (pre.channels // len(pre.std)))
        info = {
            "model": model.cfg.name,
            "params": sum(p.numel() for p in model.parameters()),
            "train": len(train_ds),
            "val": len(val_ds),
            "classes": list(train_ds.classes),
            "device": str(dev),
            "epochs": cfg.epochs,
            "start_epoch": epoch0 + 1,
            "steps_per_epoch": steps,
        }
        self.rep.on_start(info)
        stopped_early = False
        interrupted = False
        aug_gen = torch.Generator()
        loss_sum, loss_n = 0.0, 0

        def payload(epoch: int, step: int, full: bool) -> dict[str, Any]:
            p: dict[str, Any] = {
                "model_config": model.cfg.to_dict(),
                "classes": list(train_ds.classes),
                "task": task.value,
                "preprocess": pre.to_dict(),
                "data": cfg.data.to_dict(),
                "model": {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                "train_config": cfg.to_dict(),
                "metrics": best_metrics if not full else (history[-1] if history else {}),
            }
            if full:
                p["optimizer"] = opt.state_dict()
                p["scaler"] = scaler.state_dict()
                if center is not None:
                    p["center"] = center.state_dict()
                p["rng"] = {"torch": torch.get_rng_state(), "aug": aug_gen.get_state()}
                if dev.type == "cuda":
                    p["rng"]["cuda"] = torch.cuda.get_rng_state(dev)
                p["train_state"] = {
                    "epoch": epoch,
                    "step": step,
                    "history": history,
                    "best_key": list(best_key),
                    "best_epoch": best_epoch,
                    "best_metrics": best_metrics,
                    # The epoch's running loss, so a mid-epoch resume reports the same train loss.
                    "loss_sum": loss_sum,
                    "loss_n": loss_n,
                }
            return p

        def write_metrics(interrupted: bool, stopped_early: bool) -> None:
            write_json(
                self.out / "metrics.json",
                {
                    "model": model.cfg.name,
                    "params": sum(p.numel() for p in model.parameters()),
                    "classes": list(train_ds.classes),
                    "train_data": train_ds.description,
                    "train_size": len(train_ds),
                    "val_data": val_ds.description,
                    "val_size": len(val_ds),
                    "device": str(dev),
                    "torch_threads": torch.get_num_threads(),
                    "best_epoch": best_epoch,
                    "best": best_metrics,
                    "history": history,
                    "interrupted": interrupted,
                    "stopped_early": stopped_early,
                    "wall_s": time.perf_counter() - t0,
                    "config": cfg.to_dict(),
                },
            )

        with self.stop.installed():
            for epoch in range(epoch0, cfg.epochs):
                es = _epoch_seed(cfg.seed, epoch)
                order = epoch_order(len(train_src), cfg.batch_size, torch.Generator().manual_seed(es), weights)
                start = step0 if epoch == epoch0 else 0
                loss_sum, loss_n = 0.0, 0
                if start and self._resume and "rng" in self._resume:
                    loss_sum, loss_n = float(state.get("loss_sum", 0.0)), int(state.get("loss_n", 0))
                    torch.set_rng_state(self._resume["rng"]["torch"])
                    aug_gen.set_state(self._resume["rng"]["aug"])
                    if dev.type == "cuda" and "cuda" in self._resume["rng"]:
                        torch.cuda.set_rng_state(self._resume["rng"]["cuda"], dev)
                else:
                    torch.manual_seed(es + 1)
                    aug_gen.manual_seed(es + 2)
                self.rep.on_epoch_start(epoch + 1, steps, start)
                model.train()
                te = time.perf_counter()
                step = start
                for step, batch in enumerate(train_src.batches(order[start:]), start=start):
                    if self.stop.set:
                        break
                    gstep = epoch * steps + step
                    lr = lr_at(cfg, gstep, steps)
                    for gr in opt.param_groups:
                        gr["lr"] = lr
                    loss = self._step(model, batch, task, mean, std, aug_gen, center, opt, scaler, use_amp, amp_dtype)
                    loss_sum += loss
                    loss_n += 1
                    self.rep.on_step(epoch + 1, step + 1, loss, lr)
                    if cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0 and step + 1 < steps:
                        save_checkpoint(self.out / "last.pt", payload(epoch, step + 1, True))
                else:
                    step = steps
                if self.stop.set:
                    # Save exactly where we are: the next step to run is `step`.
                    save_checkpoint(self.out / "last.pt", payload(epoch, step, True))
                    interrupted = True
                    break
                # Validation.
                self.rep.on_task("validating", len(val_src))
                logits = predict_logits(model, val_src, max(64, cfg.batch_size), dev, self.rep.on_advance)
                metrics = compute_metrics(task, val_src, logits, train_ds.classes)
                lt = torch.from_numpy(logits)
                val_loss = float(task_loss(lt, val_src.y, val_src.mask, task))
                record = {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / max(1, loss_n),
                    "val_loss": val_loss,
                    "accuracy": metrics["accuracy"],
                    "macro_f1": metrics["macro_f1"],
                    "qwk": metrics.get("qwk"),
                    "macro_auc": metrics.get("macro_auc"),
                    "lr": lr_at(cfg, (epoch + 1) * steps - 1, steps),
                    "epoch_s": time.perf_counter() - te,
                }
                history.append(record)
                key = _monitor(task, metrics, val_loss)
                improved = key > best_key
                if improved:
                    best_key, best_epoch = key, epoch + 1
                    best_metrics = {**metrics, "epoch": epoch + 1, "val_loss": val_loss}
                    save_checkpoint(self.out / "best.pt", payload(epoch + 1, 0, False))
                save_checkpoint(self.out / "last.pt", payload(epoch + 1, 0, True))
                self.rep.on_epoch_end({**record, "best_epoch": best_epoch, "improved": improved})
                write_metrics(False, False)
                if cfg.patience and epoch + 1 - best_epoch >= cfg.patience:
                    stopped_early = True
                    break
        if history:
            write_metrics(interrupted, stopped_early)
        return TrainResult(
            self.out, best_epoch, best_metrics, history, interrupted, stopped_early, time.perf_counter() - t0
        )

    def _step(
        self,
        model: OMSF2,
        batch: Any,
        task: Task,
        mean: torch.Tensor,
        std: torch.Tensor,
        g: torch.Generator,
        center: CenterLoss | None,
        opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        use_amp: bool,
        amp_dtype: torch.dtype,
    ) -> float:
        cfg = self.cfg
        dev = self.device
        x = intensity(geometric(batch.x, cfg.aug, g), mean, std, cfg.aug, g)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.to(dev, non_blocking=True)
        y = batch.y.to(dev)
        mask = None if batch.mask is None else batch.mask.to(dev)
        ctx = torch.autocast(dev.type, dtype=amp_dtype) if use_amp else contextlib.nullcontext()
        with ctx:
            out = model.forward_train(x)
            loss = task_loss(out.logits.float(), y, mask, task, cfg.label_smoothing)
            if center is not None:
                loss = loss + cfg.center_loss * center(out.features, y)
        names = cfg.aug.attention
        # Draw whether (and which) attention view to add, always consuming the generator the same way.
        draw = torch.rand(2, generator=g)
        if names and float(draw[0]) < cfg.aug.attention_prob:
            name = names[int(draw[1] * len(names)) % len(names)]
            xa = apply_attention_aug(name, x, out.attention, g)
            with ctx, frozen_bn_stats(model):
                out_a = model.forward_train(xa)
                la = out_a.logits.float()
                loss = loss + cfg.aug_ce * task_loss(la, y, mask, task, cfg.label_smoothing)
                loss = loss + cfg.soft_distance * soft_distance(out.logits, la, task)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip_grad > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        scaler.step(opt)
        scaler.update()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value}; lower --lr or enable --clip-grad")
        return value


def train(cfg: TrainConfig, out_dir: str | Path, reporter: Reporter | None = None) -> TrainResult:
    """Train a new model per ``cfg``, writing ``best.pt``, ``last.pt`` and ``metrics.json`` to ``out_dir``."""
    return Trainer(cfg, out_dir, reporter).run()


def resume(
    path: str | Path,
    out_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    epochs: int | None = None,
    device: str | None = None,
    workers: int | None = None,
) -> TrainResult:
    """Continue a run from its ``last.pt`` with the configuration stored in it.

    Args:
        path: the checkpoint (must hold training state: ``last.pt``, not ``best.pt``).
        out_dir: where to write; default the checkpoint's folder.
        reporter: progress sink.
        epochs: extend the run to this many epochs (changes the schedule from that point on).
        device: override the device (exactness holds only on the same device).
        workers: override the loader workers (does not affect results).
    """
    ckpt = load_checkpoint(path)
    if "train_state" not in ckpt or "optimizer" not in ckpt:
        raise ValueError(f"'{path}' holds no training state; resume from a last.pt, not a best.pt")
    cfg = TrainConfig.from_dict(ckpt["train_config"])
    changes: dict[str, Any] = {}
    if epochs is not None:
        if epochs < cfg.epochs:
            raise ValueError(f"--epochs {epochs} is below the run's {cfg.epochs}; resume can only extend a run")
        changes["epochs"] = epochs
    if device is not None:
        changes["device"] = device
    if workers is not None:
        changes["workers"] = workers
    cfg = dataclasses.replace(cfg, **changes)
    return Trainer(cfg, out_dir or Path(path).parent, reporter, resume=ckpt).run()
