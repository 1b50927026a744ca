"""Training configuration: one frozen dataclass, validated on construction, JSON round-trip.

It is stored in every checkpoint, so ``--resume`` continues with exactly the settings the run
started with, and ``metrics.json`` records what produced the numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omsf2.config import OptimizerName, ResizeMode, ScheduleName, SettingError, parse_enum
from omsf2.data.datasets import DataSpec
from omsf2.train.augment import AugConfig
from omsf2.train.precise_bn import DEFAULT_IMAGES as DEFAULT_PRECISE_BN

MAX_IMG_SIZE = 2048  # a 2048^2 input already needs tens of GiB of activations per batch of 32


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
        data: where the data comes from.
        model: registered variant name.
        epochs: training epochs (>= 1).
        batch_size: samples per step (>= 2: BatchNorm needs a batch).
        img_size: square input size (multiple of 32); None = the variant's default.
        resize: letterbox or stretch to the input size.
        in_chans: 1 or 3 input channels.
        optimizer: adamw or sgd.
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        momentum: SGD momentum.
        schedule: cosine, step or constant after the warm-up.
        warmup_epochs: linear warm-up length, in epochs (fractions allowed).
        step_epochs: decay period of the step schedule, in epochs.
        step_gamma: decay factor of the step schedule.
        label_smoothing: cross-entropy label smoothing.
        balanced: class-balanced sampling (draws with replacement).
        amp: mixed precision on CUDA (ignored on CPU, where it would be slower).
        clip_grad: max gradient norm, 0 = no clipping.
        seed: seeds initialisation, batch order, augmentation and dropout.
        patience: early stopping after this many epochs without improvement, 0 = off.
        aug: augmentation settings.
        soft_distance: weight of the MAG-SD soft distance between raw and augmented views.
        aug_ce: weight of the task loss on the augmented view.
        center_loss: weight of the centre loss, 0 = off (multi-class only).
        dropout: classifier dropout.
        bap: build the MAG-SD BAP branch.
        device: "auto", "cpu", "cuda" or "cuda:N".
        workers: data-loading worker processes.
        cache: keep the preprocessed splits in memory when they fit in ``cache_gb``.
        cache_gb: memory budget for that cache.
        ckpt_every: also write ``last.pt`` every N steps (0 = at epoch ends only).
        init: local weights to start from (omsf2 checkpoint or torchvision-style ResNet state dict).
        channels_last: NHWC memory format (faster convolutions on CPU and tensor cores).
        sync_bn: BatchNorm statistics over the global batch when training with several processes.
        ema: validate and save an exponential moving average of the weights (see
            :mod:`omsf2.train.ema`); the one place its default lives.
        ema_decay: the average's decay after its warm-up, in (0, 1); None ties it to the
            schedule's length (:func:`omsf2.train.ema.schedule_decay`).
        precise_bn: recompute the evaluated weights' BatchNorm statistics before every validation
            on this many un-augmented train images (see :mod:`omsf2.train.precise_bn`); 0 = off.
        select_fraction: share of the train patients held out (patient-disjoint, stratified) to
            choose ``best.pt`` on, so that val stays an unbiased estimate; 0 = choose on val.
        folds: patient-level cross-validation folds this run belongs to (0 = none); see
            :mod:`omsf2.train.cv`.
        fold: which fold (0-based) is held out to choose ``best.pt`` on when ``folds`` >= 2.
        qat: quantization-aware fine-tuning of the ``init`` weights: fake int8 quantization of every
            Conv2d/Linear weight and input and of the residual Adds' inputs, as ``omsf2 export --int8``
            quantizes them (see :mod:`omsf2.train.qat`); validation then measures the fake-quantized
            model, and the checkpoints hold the plain float weights.
    """

    data: DataSpec
    model: str = "omsf2_tiny"
    epochs: int = 30
    batch_size: int = 32
    img_size: int | None = None
    resize: ResizeMode = ResizeMode.LETTERBOX
    in_chans: int = 1
    optimizer: OptimizerName = OptimizerName.ADAMW
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: ScheduleName = ScheduleName.COSINE
    warmup_epochs: float = 1.0
    step_epochs: int = 10
    step_gamma: float = 0.1
    label_smoothing: float = 0.05
    balanced: bool = False
    amp: bool = True
    clip_grad: float = 5.0
    seed: int = 0
    patience: int = 0
    aug: AugConfig = dataclasses.field(default_factory=AugConfig)
    soft_distance: float = 1.0
    aug_ce: float = 0.5
    center_loss: float = 0.0
    dropout: float = 0.2
    bap: bool = True
    device: str = "auto"
    workers: int = 2
    cache: bool = True
    cache_gb: float = 4.0
    ckpt_every: int = 0
    init: str | None = None
    channels_last: bool = True
    sync_bn: bool = False
    ema: bool = True
    ema_decay: float | None = None
    precise_bn: int = DEFAULT_PRECISE_BN
    select_fraction: float = 0.0
    folds: int = 0
    fold: int = 0
    qat: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", parse_enum(ResizeMode, self.resize, "resize mode"))
        object.__setattr__(self, "optimizer", parse_enum(OptimizerName, self.optimizer, "optimizer"))
        object.__setattr__(self, "schedule", parse_enum(ScheduleName, self.schedule, "schedule"))
        checks = [
            (self.epochs >= 1, "epochs", f"epochs must be >= 1, got {self.epochs}"),
            (
                self.batch_size >= 2,
                "batch_size",
                f"batch size must be >= 2 (BatchNorm needs a batch), got {self.batch_size}",
            ),
            (
                self.img_size is None or (64 <= self.img_size <= MAX_IMG_SIZE and self.img_size % 32 == 0),
                "img_size",
                f"image size must be a multiple of 32 in [64, {MAX_IMG_SIZE}], got {self.img_size}",
            ),
            (self.in_chans in (1, 3), "in_chans", f"input channels must be 1 or 3, got {self.in_chans}"),
            (self.lr > 0, "lr", f"learning rate must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, "weight_decay", f"weight decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.momentum < 1, "momentum", f"momentum must lie in [0, 1), got {self.momentum}"),
            (self.warmup_epochs >= 0, "warmup_epochs", f"warm-up epochs must be >= 0, got {self.warmup_epochs}"),
            (
                self.step_epochs >= 1 and 0 < self.step_gamma <= 1,
                "step_epochs",
                "step schedule needs step_epochs >= 1 and 0 < gamma <= 1",
            ),
            (
                0 <= self.label_smoothing < 1,
                "label_smoothing",
                f"label smoothing must lie in [0, 1), got {self.label_smoothing}",
            ),
            (self.clip_grad >= 0, "clip_grad", f"gradient clipping norm must be >= 0, got {self.clip_grad}"),
            (self.patience >= 0, "patience", f"patience must be >= 0, got {self.patience}"),
            (min(self.soft_distance, self.aug_ce, self.center_loss) >= 0, "soft_distance", "loss weights must be >= 0"),
            (0 <= self.dropout < 1, "dropout", f"dropout must lie in [0, 1), got {self.dropout}"),
            (self.workers >= 0, "workers", f"workers must be >= 0, got {self.workers}"),
            (self.cache_gb >= 0, "cache_gb", f"cache budget must be >= 0, got {self.cache_gb}"),
            (self.ckpt_every >= 0, "ckpt_every", f"checkpoint interval must be >= 0, got {self.ckpt_every}"),
            (
                self.ema_decay is None or 0 < self.ema_decay < 1,
                "ema_decay",
                f"EMA decay must lie in (0, 1), got {self.ema_decay}",
            ),
            (
                self.precise_bn >= 0,
                "precise_bn",
                f"precise BatchNorm images must be >= 0 (0 = off), got {self.precise_bn}",
            ),
            (
                0 <= self.select_fraction <= 0.5,
                "select_fraction",
                f"selection fraction must lie in [0, 0.5] (0 = off), got {self.select_fraction}",
            ),
            (self.folds == 0 or self.folds >= 2, "folds", f"folds must be 0 (off) or >= 2, got {self.folds}"),
            (
                self.folds == 0 or 0 <= self.fold < self.folds,
                "fold",
                f"fold must lie in [0, {self.folds - 1}], got {self.fold}",
            ),
            (
                not (self.folds and self.select_fraction),
                "select_fraction",
                "cross-validation chooses each fold's best.pt on its held-out fold; drop the selection fraction",
            ),
            (
                not self.qat or self.init is not None,
                "qat",
                "quantization-aware training fine-tunes trained weights: give them with --init CKPT",
            ),
        ]
        for ok, setting, msg in checks:
            if not ok:
                raise SettingError(msg, setting)
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise SettingError(f"invalid device {dev!r}; choose 'auto', 'cpu', 'cuda' or 'cuda:N'", "device")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["data"] = self.data.to_dict()
        d["aug"] = self.aug.to_dict()
        for k in ("resize", "optimizer", "schedule"):
            d[k] = d[k].value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"training config has unknown keys {unknown}")
        # A run saved before EMA (or precise BatchNorm) existed trained without it: its resume must
        # go on without it.
        legacy: dict[str, Any] = {} if "ema" in d else {"ema": False}
        if "precise_bn" not in d:
            legacy["precise_bn"] = 0
        return cls(**{**legacy, **d, "data": DataSpec.from_dict(d["data"]), "aug": AugConfig.from_dict(d["aug"])})
