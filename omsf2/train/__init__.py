"""Training: attention-guided augmentation, losses and the loop (``omsf2 train``)."""

from omsf2.train.augment import AugConfig
from omsf2.train.config import TrainConfig
from omsf2.train.loop import Reporter, Trainer, TrainResult, resume, train

__all__ = ["AugConfig", "Reporter", "TrainConfig", "TrainResult", "Trainer", "resume", "train"]
