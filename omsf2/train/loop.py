"""The training loop: exact resume, atomic checkpoints, validation each epoch, early stopping.

Determinism is by construction: every epoch re-seeds the batch order, the augmentation
generator and torch's global RNG (dropout) from ``(seed, epoch)``; the data pipeline has no
randomness; mid-epoch checkpoints store the RNG states and the step reached. Resuming from any
``last.pt`` therefore replays exactly the steps an uninterrupted run takes (on the same device
and thread count). Ctrl-C (or SIGTERM) is caught between steps: the state is saved to
``last.pt`` and the run can be resumed; a second signal (after a grace of 2 s, see
:mod:`omsf2.train.stop`) aborts at once.

Under torchrun the same loop runs in every process (:mod:`omsf2.train.distributed` owns the
ranks): each takes its slice of the global batch, DDP averages the gradients, the stop request
is agreed between steps, and only rank 0 writes. Whether to add an attention-guided view is
drawn from ``(seed, epoch, step)``, not from a rank's stream, so every rank runs the same graph.

Progress goes to a :class:`Reporter` so that the library never prints: the CLI passes a rich
progress bar, the default logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from omsf2.config import OptimizerName, PreprocessSpec, SettingError, Task
from omsf2.data.datasets import LabeledSet
from omsf2.data.loader import BatchSource, epoch_order, open_source
from omsf2.evaluate import compute_metrics, predict_logits, resolve_device
from omsf2.fileio import write_json
from omsf2.models import OMSF2, create_model
from omsf2.models.checkpoint import (
    checkpoint_info,
    load_checkpoint,
    load_init_weights,
    model_from_checkpoint,
    save_checkpoint,
)
from omsf2.train import distributed as ddp
from omsf2.train import precise_bn, qat
from omsf2.train.augment import apply_attention_aug, frozen_bn_stats, geometric, intensity
from omsf2.train.config import TrainConfig
from omsf2.train.data_record import data_record
from omsf2.train.ema import ModelEma, schedule_decay
from omsf2.train.losses import CenterLoss, soft_distance, task_loss
from omsf2.train.parts import RunParts as _Parts
from omsf2.train.reporter import LogReporter, Reporter
from omsf2.train.schedule import check_finite, epoch_seed, lr_at, monitor
from omsf2.train.splits import load_splits
from omsf2.train.state import RunState
from omsf2.train.stop import StopFlag

__all__ = [
    "LogReporter",
    "Reporter",
    "RunState",
    "TrainResult",
    "Trainer",
    "frozen_bn_stats",
    "lr_at",
    "resume",
    "train",
]


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
        selected_on: the set that chose best.pt: "val", "select" or "fold".
    """

    out_dir: Path
    best_epoch: int
    best: dict[str, Any]
    history: list[dict[str, Any]]
    interrupted: bool
    stopped_early: bool
    wall_s: float
    selected_on: str = "val"


class Trainer:
    """One training run. Build with a config (new run) or a checkpoint (resume), then :meth:`run`.

    Args:
        cfg: the run's configuration.
        out_dir: where checkpoints and metrics go (checked, created and locked before any work).
        reporter: progress sink.
        resume: a ``last.pt`` (or any omsf2 checkpoint with training state) to continue.
        overwrite: replace another run's files in ``out_dir`` instead of refusing.
        resume_any_world: resume with another number of processes than the run saved (not exact).
        dist_timeout_s: how long a rank waits for the others before giving up.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path,
        reporter: Reporter | None = None,
        resume: dict[str, Any] | None = None,
        overwrite: bool = False,
        resume_any_world: bool = False,
        dist_timeout_s: float = ddp.DEFAULT_TIMEOUT_S,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.rep: Reporter = reporter or LogReporter()
        self.stop = StopFlag()
        if not dist_timeout_s > 0:
            raise SettingError(f"the timeout between processes must be > 0 s, got {dist_timeout_s}", "dist_timeout")
        self.world = ddp.world_from_env()
        self.device = ddp.rank_device(resolve_device(cfg.device), self.world)
        self._resume = resume
        self._overwrite = overwrite
        self._any_world = resume_any_world
        self._timeout = dist_timeout_s
        self._qat: qat.QatHandle | None = None  # fake quantization, with --qat

    def request_stop(self) -> None:
        """Stop after the current step and save a resumable ``last.pt`` (what Ctrl-C does)."""
        self.stop.request()

    # -- the run: an outline ---------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train; returns when all epochs ran, early stopping triggered, or a stop was requested."""
        t0 = time.perf_counter()
        saved = self._resume.get("train_state", {}) if self._resume else {}
        st = RunState.from_dict(saved) if self._resume else RunState(run_id=uuid.uuid4().hex)
        interrupted = stopped_early = False
        if self.cfg.init and not self._resume and not Path(self.cfg.init).is_file():
            raise ValueError(f"init weights '{self.cfg.init}' do not exist")  # before any work
        self._check_world(st)
        ddp.init(self.world, self.device, self._timeout)
        with contextlib.ExitStack() as stack:
            stack.callback(ddp.shutdown)
            stack.enter_context(ddp.claimed_on_main(self.world, self.device, self.out, st.run_id, self._overwrite))
            p = self._setup()
            self._restore(p)
            if self.cfg.qat:  # on the model and its average; checkpoints keep plain float weights
                self._qat = qat.prepare_run(p.model, p.eval_model if p.ema else None, (self._resume or {}).get("qat"))
                stack.callback(qat.strip, self._qat)
            self.rep.on_start(self._info(p, st))
            rng = self._rank_rng() if (self._resume and st.step) else None
            with self.stop.installed():
                while st.epoch < self.cfg.epochs:
                    te = time.perf_counter()
                    if not self._train_epoch(p, st, rng):
                        self._save_last(p, st)  # exactly where we are: the next step to run is st.step
                        interrupted = True
                        break
                    rng = None
                    self._end_epoch(p, st, self._validate(p, st, te), t0)
                    if self.cfg.patience and st.epoch - st.best_epoch >= self.cfg.patience:
                        stopped_early = True
                        break
            if st.history:
                self._write_metrics(p, st, interrupted, stopped_early, t0)
        wall = time.perf_counter() - t0
        return TrainResult(
            self.out, st.best_epoch, st.best_metrics, st.history, interrupted, stopped_early, wall,
            str(st.best_metrics.get("selected_on", "val")),
        )  # fmt: skip

    # -- set-up and restore ------------------------------------------------------------------------
    def _check_world(self, st: RunState) -> None:
        """A resume keeps its number of processes (unless allowed); the global batch splits over them."""
        n = self.world.size
        if self._resume and st.world_size != n and not self._any_world:
            raise SettingError(
                f"the checkpoint was saved by a run of {st.world_size} process(es), this one has {n}: "
                "the resume would not be exact; use the same number or allow another one",
                "resume_any_world",
            )
        st.world_size = n
        if self.world.distributed:
            ddp.check_batch_size(self.cfg.batch_size, self.world)

    def _rank_rng(self) -> dict[str, Any] | None:
        """This rank's saved RNG states (None: saved by another number of processes)."""
        ck = self._resume or {}
        ranks = ck.get("rng_ranks") or [ck.get("rng")]
        return ranks[self.world.rank] if len(ranks) == self.world.size else None

    def _source(self, ds: LabeledSet, pre: PreprocessSpec, name: str) -> BatchSource:
        budget = self.cfg.cache_gb * (1 << 30) if self.cfg.cache else -1.0
        return open_source(
            ds, pre, self.cfg.workers, budget, lambda: self.rep.on_task(f"loading {name}", len(ds)), self.rep.on_advance
        )

    def _build(self, train: LabeledSet) -> tuple[OMSF2, PreprocessSpec, Task]:
        cfg = self.cfg
        if self._resume is not None:
            _, classes, task, pre = checkpoint_info(self._resume)
            if classes != list(train.classes):
                raise ValueError(f"checkpoint classes {classes} differ from the data's {list(train.classes)}")
            # The raw weights train on; "model" holds the average when the run keeps one.
            raw = {**self._resume, "model": self._resume.get("raw_model", self._resume["model"])}
            return model_from_checkpoint(raw), pre, task  # strict: weights must fit exactly
        torch.manual_seed(cfg.seed)
        model = create_model(
            cfg.model,
            num_classes=len(train.classes),
            in_chans=cfg.in_chans,
            dropout=cfg.dropout,
            **({} if cfg.bap else {"bap": False}),  # on: the variant's own (plain baselines have none)
            **({"img_size": cfg.img_size} if cfg.img_size else {}),
        )
        if not isinstance(model, OMSF2):
            raise TypeError(f"model {cfg.model!r} is a {type(model).__name__}; training needs an OMSF2 network")
        if cfg.init:
            load_init_weights(model, cfg.init)
        size = (model.cfg.img_size, model.cfg.img_size)
        return model, PreprocessSpec(size=size, resize=cfg.resize, channels=cfg.in_chans), train.task

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

    def _setup(self) -> _Parts:
        cfg, dev = self.cfg, self.device
        splits = load_splits(cfg)
        train_ds = splits.train
        model, pre, task = self._build(train_ds)
        if cfg.center_loss > 0 and task is not Task.MULTICLASS:
            raise ValueError("the centre loss needs one label per image (multi-class data)")
        model.to(dev)
        if cfg.sync_bn:
            ddp.sync_batchnorm(model, dev)  # replaces the BatchNorm children in place
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs lack it
        center = CenterLoss(model.num_classes, model.head.num_features).to(dev) if cfg.center_loss > 0 else None
        params = list(model.parameters()) + ([] if center is None else list(center.parameters()))
        use_amp = cfg.amp and dev.type == "cuda"
        amp_dtype = torch.bfloat16 if (use_amp and torch.cuda.is_bf16_supported()) else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype is torch.float16)
        train_src = self._source(train_ds, pre, "train")
        weights = None
        if cfg.balanced and task is Task.MULTICLASS:
            counts = np.bincount(train_src.y.numpy(), minlength=model.num_classes).astype(np.float64)
            weights = 1.0 / counts[train_src.y.numpy()]
        reps = pre.channels // len(pre.mean), pre.channels // len(pre.std)
        # The average starts as a copy of the model as it will train (device, format, BatchNorm kind).
        steps = len(train_src) // cfg.batch_size
        decay = cfg.ema_decay if cfg.ema_decay is not None else schedule_decay(cfg.epochs * steps)
        ema = ModelEma(model, decay) if cfg.ema else None
        sel = splits.select
        return _Parts(
            splits, model, pre, task, center, self._optimizer(params), scaler,
            amp_dtype if use_amp else None, train_src, self._source(splits.val, pre, "val"),
            steps, weights,
            torch.tensor(pre.mean * reps[0]), torch.tensor(pre.std * reps[1]), torch.Generator(),
            ddp.wrap(ddp.TrainForward(model, center), self.world, dev),
            None if sel is None else self._source(sel, pre, splits.selected_on), ema,
            data_record(cfg, splits) if self.world.is_main else {},
        )  # fmt: skip

    def _restore(self, p: _Parts) -> None:
        """Load the optimizer, centre-loss and scaler states of the checkpoint being resumed."""
        if not self._resume:
            return
        p.opt.load_state_dict(self._resume["optimizer"])
        if p.center is not None and "center" in self._resume:
            p.center.load_state_dict(self._resume["center"])
        if "scaler" in self._resume:
            p.scaler.load_state_dict(self._resume["scaler"])
        if p.ema is not None:
            if "ema" not in self._resume:
                raise ValueError("the checkpoint holds no weight average to resume; it was saved by a run without EMA")
            p.ema.load(self._resume["model"], self._resume["ema"])

    def _info(self, p: _Parts, st: RunState) -> dict[str, Any]:
        return {
            "model": p.model.cfg.name,
            "params": sum(t.numel() for t in p.model.parameters()),
            "train": len(p.train_ds),
            "val": len(p.val_ds),
            "classes": list(p.train_ds.classes),
            "device": str(self.device),
            "epochs": self.cfg.epochs,
            "start_epoch": st.epoch + 1,
            "steps_per_epoch": p.steps,
            "processes": self.world.size,
        }

    # -- one epoch ---------------------------------------------------------------------------------
    def _seed_epoch(self, p: _Parts, st: RunState, rng: dict[str, Any] | None) -> None:
        """Seed from (seed, epoch), or restore the RNG states of a mid-epoch checkpoint."""
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            p.aug_gen.set_state(rng["aug"])
            if self.device.type == "cuda" and "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            return
        st.loss_sum, st.loss_n = 0.0, 0
        es = epoch_seed(self.cfg.seed, st.epoch)
        torch.manual_seed(ddp.rank_seed(es + 1, self.world.rank))  # dropout differs between ranks
        p.aug_gen.manual_seed(ddp.rank_seed(es + 2, self.world.rank))

    def _train_epoch(self, p: _Parts, st: RunState, rng: dict[str, Any] | None) -> bool:
        """Run the steps of epoch ``st.epoch`` from ``st.step``; False when a stop was requested."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, st.epoch))
        order = epoch_order(len(p.train_src), cfg.batch_size, gen, p.weights)  # the same on every rank
        if self.world.distributed:
            order = ddp.shard_batches(order, self.world)
        self._seed_epoch(p, st, rng)
        self.rep.on_epoch_start(st.epoch + 1, p.steps, st.step)
        p.model.train()
        for batch in p.train_src.batches(order[st.step :]):
            if self._stop_agreed():
                return False
            lr = lr_at(cfg, st.epoch * p.steps + st.step, p.steps)
            for gr in p.opt.param_groups:
                gr["lr"] = lr
            loss = ddp.mean_over_ranks(
                self._step(p, batch, epoch_seed(cfg.seed, st.epoch, st.step)), self.world, self.device
            )
            st.loss_sum += loss
            st.loss_n += 1
            st.step += 1
            if self._qat is not None:  # the activation ranges freeze after their observed share
                qat.observe_until(self._qat, st.epoch * p.steps + st.step, cfg.epochs * p.steps)
            self.rep.on_step(st.epoch + 1, st.step, loss, lr)
            if cfg.ckpt_every and st.step % cfg.ckpt_every == 0 and st.step < p.steps:
                self._save_last(p, st)
        return not self._stop_agreed()

    def _stop_agreed(self) -> bool:
        """Whether a stop was requested on any rank (then every rank stops at this step)."""
        if ddp.any_true(self.stop.set, self.world, self.device):
            self.stop.request()
        return self.stop.set

    def _step(self, p: _Parts, batch: Any, step_seed: int) -> float:
        cfg, dev = self.cfg, self.device
        g = p.aug_gen
        x = intensity(geometric(batch.x, cfg.aug, g), p.mean, p.std, cfg.aug, g)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.to(dev, non_blocking=True)
        y = batch.y.to(dev)
        mask = None if batch.mask is None else batch.mask.to(dev)
        ctx = torch.autocast(dev.type, dtype=p.amp_dtype) if p.amp_dtype else contextlib.nullcontext()
        names, view = cfg.aug.attention, None
        # Whether (and which) attention view to add: from (seed, epoch, step), the same on every rank.
        draw = torch.rand(2, generator=torch.Generator().manual_seed(step_seed))
        if names and float(draw[0]) < cfg.aug.attention_prob:
            name = names[int(draw[1] * len(names)) % len(names)]

            def view(xr: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
                check_finite(att.detach().sum())  # the view's sampling chokes on NaN maps
                return apply_attention_aug(name, xr, att, g)

        with ctx:
            logits, la, closs = p.fwd(x, y, view)  # one DDP forward: the raw and the attention-guided pass
            loss = task_loss(logits.float(), y, mask, p.task, cfg.label_smoothing)
            if closs is not None:
                loss = loss + cfg.center_loss * closs
            if la is not None:
                loss = loss + cfg.aug_ce * task_loss(la.float(), y, mask, p.task, cfg.label_smoothing)
                loss = loss + cfg.soft_distance * soft_distance(logits, la.float(), p.task)
        p.opt.zero_grad(set_to_none=True)
        p.scaler.scale(loss).backward()
        if cfg.clip_grad > 0:
            p.scaler.unscale_(p.opt)
            torch.nn.utils.clip_grad_norm_(p.model.parameters(), cfg.clip_grad)
        p.scaler.step(p.opt)
        p.scaler.update()
        if p.ema is not None:
            ddp.broadcast_buffers(p.model, self.world)  # without --sync-bn each rank's BN statistics differ
            p.ema.update(p.model)  # the unwrapped module: then the same on every rank
        return check_finite(loss)

    # -- validation, checkpoints and metrics --------------------------------------------------------
    def _evaluate(self, p: _Parts, src: BatchSource, name: str) -> tuple[dict[str, Any], float]:
        """Metrics and loss of the evaluated weights (the average when kept) on one set."""
        self.rep.on_task(f"validating on {name}", len(src))
        bs, model = max(64, self.cfg.batch_size), p.eval_model
        if self.world.distributed:  # each rank predicts a shard; the logits of the whole split are gathered
            logits = ddp.sharded_logits(
                model, lambda i: next(src.batches([i])).x, len(src), bs, self.world, self.device
            )
        else:
            logits = predict_logits(model, src, bs, self.device, self.rep.on_advance)
        metrics = compute_metrics(p.task, src, logits, p.train_ds.classes)
        return metrics, float(task_loss(torch.from_numpy(logits), src.y, src.mask, p.task))

    def _validate(self, p: _Parts, st: RunState, t_epoch: float) -> _Validation:
        cfg = self.cfg
        if cfg.precise_bn:  # the evaluated weights' BatchNorm statistics, on un-augmented train images
            precise_bn.recalibrate(p.eval_model, p.train_src, cfg, self.world, self.device, self.rep)
        metrics, val_loss = self._evaluate(p, p.val_src, "val")
        record = {
            "epoch": st.epoch + 1,
            "train_loss": st.loss_sum / max(1, st.loss_n),
            "val_loss": val_loss,
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "qwk": metrics.get("qwk"),
            "macro_auc": metrics.get("macro_auc"),
            "per_class_recall": metrics.get("per_class_recall"),  # None for multi-label data
        }
        chosen, chosen_loss = metrics, val_loss
        if p.sel_src is not None:  # the set that chooses best.pt, reported beside val
            name = p.splits.selected_on
            chosen, chosen_loss = self._evaluate(p, p.sel_src, name)
            record.update({f"{name}_loss": chosen_loss, f"{name}_accuracy": chosen["accuracy"]})
            record.update({f"{name}_macro_f1": chosen["macro_f1"]})
        record["lr"] = lr_at(cfg, (st.epoch + 1) * p.steps - 1, p.steps)
        record["epoch_s"] = time.perf_counter() - t_epoch
        return _Validation(record, metrics, val_loss, chosen, chosen_loss)

    def _selection(self, p: _Parts) -> dict[str, Any]:
        """Which set chose best.pt, and with which weights (recorded in best.pt and metrics.json)."""
        sel = p.splits.select
        return {
            "selected_on": p.splits.selected_on,
            "select_size": len(p.val_ds) if sel is None else len(sel),
            "ema": {"enabled": self.cfg.ema, "decay": None if p.ema is None else p.ema.decay},
        }

    def _end_epoch(self, p: _Parts, st: RunState, v: _Validation, t0: float) -> None:
        """Record the epoch, save best.pt when it improved and last.pt always, write metrics.json."""
        st.history.append(v.record)
        st.epoch, st.step = st.epoch + 1, 0
        key = monitor(p.task, v.chosen, v.chosen_loss)
        improved = key > st.best_key
        if improved:
            st.best_key, st.best_epoch = key, st.epoch
            # The val figures of the chosen epoch: unbiased when another set chose it.
            st.best_metrics = {**v.metrics, "epoch": st.epoch, "val_loss": v.val_loss, **self._selection(p)}
            if p.sel_src is not None:
                st.best_metrics[p.splits.selected_on] = {**v.chosen, "loss": v.chosen_loss}
            if self.world.is_main:
                save_checkpoint(self.out / "best.pt", self._payload(p, st, full=False))
        self._save_last(p, st)
        self.rep.on_epoch_end({**v.record, "best_epoch": st.best_epoch, "improved": improved})
        self._write_metrics(p, st, False, False, t0)

    def _payload(self, p: _Parts, st: RunState, full: bool) -> dict[str, Any]:
        def weights(m: torch.nn.Module) -> dict[str, torch.Tensor]:
            return qat.float_state_dict(m)  # plain keys and latent weights under --qat

        out: dict[str, Any] = {
            "model_config": p.model.cfg.to_dict(),
            "classes": list(p.train_ds.classes),
            "task": p.task.value,
            "preprocess": p.pre.to_dict(),
            "data": self.cfg.data.to_dict(),
            "data_record": p.data_record,  # counts, split rule and hash of the data (train.data_record)
            "model": weights(p.eval_model),  # the average when kept: export, eval and predict use it as is
            "train_config": self.cfg.to_dict(),
            "metrics": st.best_metrics if not full else (st.history[-1] if st.history else {}),
            "selection": self._selection(p),
        }
        if full:
            if p.ema is not None:  # what an exact resume needs besides the average
                out["raw_model"] = weights(p.model)
                out["ema"] = p.ema.state()
            out["optimizer"] = p.opt.state_dict()
            out["scaler"] = p.scaler.state_dict()
            if p.center is not None:
                out["center"] = p.center.state_dict()
            rng = {"torch": torch.get_rng_state(), "aug": p.aug_gen.get_state()}
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.device)
            ranks = ddp.gather_objects(rng, self.world)  # every rank's streams, for an exact resume
            out["rng"] = ranks[0]
            if self.world.distributed:
                out["rng_ranks"] = ranks
            out["train_state"] = st.to_dict()
            if self._qat is not None:
                out["qat"] = qat.state(self._qat)
        return out

    def _save_last(self, p: _Parts, st: RunState) -> None:
        payload = self._payload(p, st, full=True)  # on every rank: it gathers their RNG states
        if self.world.is_main:
            save_checkpoint(self.out / "last.pt", payload)

    def _write_metrics(self, p: _Parts, st: RunState, interrupted: bool, stopped_early: bool, t0: float) -> None:
        if not self.world.is_main:
            return
        write_json(
            self.out / "metrics.json",
            {
                "run_id": st.run_id,
                "model": p.model.cfg.name,
                "params": sum(t.numel() for t in p.model.parameters()),
                "classes": list(p.train_ds.classes),
                "train_data": p.train_ds.description,
                "train_size": len(p.train_ds),
                "val_data": p.val_ds.description,
                "val_size": len(p.val_ds),
                **self._selection(p),
                "select_data": None if p.splits.select is None else p.splits.select.description,
                "device": str(self.device),
                "torch_threads": torch.get_num_threads(),
                "processes": self.world.size,
                "best_epoch": st.best_epoch,
                "best": st.best_metrics,
                "history": st.history,
                "interrupted": interrupted,
                "stopped_early": stopped_early,
                "wall_s": time.perf_counter() - t0,
                "config": self.cfg.to_dict(),
            },
        )


class _Validation(NamedTuple):
    record: dict[str, Any]
    metrics: dict[str, Any]  # on val
    val_loss: float
    chosen: dict[str, Any]  # on the set that chooses best.pt (val itself by default)
    chosen_loss: float


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    reporter: Reporter | None = None,
    overwrite: bool = False,
    dist_timeout_s: float = ddp.DEFAULT_TIMEOUT_S,
) -> TrainResult:
    """Train a new model per ``cfg``, writing ``best.pt``, ``last.pt`` and ``metrics.json`` to ``out_dir``.

    ``out_dir`` is checked and locked before any work; it may not hold another run's files
    unless ``overwrite``. Under torchrun every process calls this; ``dist_timeout_s`` bounds
    how long one waits for the others.
    """
    return Trainer(cfg, out_dir, reporter, overwrite=overwrite, dist_timeout_s=dist_timeout_s).run()


def resume(
    path: str | Path,
    out_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    epochs: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    resume_any_world: bool = False,
    dist_timeout_s: float = ddp.DEFAULT_TIMEOUT_S,
) -> TrainResult:
    """Continue a run from its ``last.pt`` with the configuration stored in it.

    Args:
        path: the checkpoint (must hold training state: ``last.pt``, not ``best.pt``).
        out_dir: where to write; default the checkpoint's folder.
        reporter: progress sink.
        epochs: extend the run to this many epochs (changes the schedule from that point on).
        device: override the device (exactness holds only on the same device).
        workers: override the loader workers (does not affect results).
        overwrite: replace another run's files in ``out_dir`` instead of refusing.
        resume_any_world: allow another number of processes than the run saved (not exact).
        dist_timeout_s: how long a rank waits for the others.
    """
    ckpt = load_checkpoint(path)
    if "train_state" not in ckpt or "optimizer" not in ckpt:
        raise ValueError(f"'{path}' holds no training state; resume from a last.pt, not a best.pt")
    cfg = TrainConfig.from_dict(ckpt["train_config"])
    changes: dict[str, Any] = {}
    if epochs is not None:
        if epochs < cfg.epochs:
            raise ValueError(f"epochs {epochs} is below the run's {cfg.epochs}; a resume can only extend a run")
        changes["epochs"] = epochs
    if device is not None:
        changes["device"] = device
    if workers is not None:
        changes["workers"] = workers
    cfg = dataclasses.replace(cfg, **changes)
    out = out_dir or Path(path).parent
    return Trainer(cfg, out, reporter, ckpt, overwrite, resume_any_world, dist_timeout_s).run()
