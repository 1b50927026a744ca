"""Frozen configuration dataclasses and ``str`` Enums shared across layers.

This module is import-light on purpose (standard library only): ``data.preprocess`` and the
runtime read :class:`PreprocessSpec` from here without pulling in torch. Every config that is
written into a checkpoint or manifest round-trips through ``to_dict`` / ``from_dict`` made of
JSON types only, so artifacts stay loadable without unpickling arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any


class SettingError(ValueError):
    """A bad value of one named setting (a config field or function argument).

    The message speaks the library's terms; ``setting`` names the field, so a front end can
    point at its own spelling of it (the CLI appends ``--<option>``).

    Attributes:
        setting: the field or argument name, e.g. ``"epochs"`` or ``"overwrite"``.
    """

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.setting))


def _choices(enum_cls: type[enum.Enum]) -> str:
    return ", ".join(repr(m.value) for m in enum_cls)


def parse_enum(enum_cls: type[enum.Enum], value: Any, what: str) -> Any:
    """Return ``enum_cls(value)`` or raise a ValueError naming the valid choices.

    Args:
        enum_cls: the Enum type.
        value: a member or its value.
        what: the name of the setting, for the message.
    """
    try:
        return enum_cls(value)
    except ValueError:
        raise ValueError(f"invalid {what} {value!r}; choose one of {_choices(enum_cls)}") from None


class ResizeMode(str, enum.Enum):
    """How an image is brought to the model's input size."""

    LETTERBOX = "letterbox"  # keep aspect ratio, pad the short side (no anatomical distortion)
    STRETCH = "stretch"  # resize each axis independently


class Task(str, enum.Enum):
    """What the logits mean."""

    MULTICLASS = "multiclass"  # one label per image (pneumoconiosis stage, cxr-real class): softmax + CE
    MULTILABEL = "multilabel"  # independent findings (CheXpert's five): sigmoid + BCE with a mask


class UncertainPolicy(str, enum.Enum):
    """How CheXpert's uncertain label (-1) is mapped."""

    ONES = "ones"
    ZEROS = "zeros"
    IGNORE = "ignore"  # masked out of the loss and the metrics


class OptimizerName(str, enum.Enum):
    """Optimizers the training loop builds."""

    ADAMW = "adamw"
    SGD = "sgd"


class ScheduleName(str, enum.Enum):
    """Learning-rate schedules (each after a linear warm-up)."""

    COSINE = "cosine"
    STEP = "step"
    CONSTANT = "constant"


class NeckName(str, enum.Enum):
    """What sits between the backbone and the heads (the ablation variants switch the neck off)."""

    SSP = "ssp"  # SSPNet-style: SPP + DPPM on C5, CAM heat maps, scale enhancement and selection
    LATERAL = "lateral"  # 1x1 projections of C2-C5 only: the heads read the backbone levels unfused
    NONE = "none"  # no neck: a GAP head reads C5 (the plain ResNet baselines)


class HeadName(str, enum.Enum):
    """The classifier head."""

    MSFF = "msff"  # multi-scale feature fusion over P2-P4
    GAP = "gap"  # global average pooling of one level + linear


class AugName(str, enum.Enum):
    """Attention-guided (data-specificity) augmentations from the model's own attention maps.

    MIXUP, DIM and PATCH are MAG-SD's; CROP and DROP are WS-DAN's.
    """

    MIXUP = "mixup"
    DIM = "dim"
    PATCH = "patch"
    CROP = "crop"
    DROP = "drop"


class Split(str, enum.Enum):
    """A dataset split."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class KernelBackend(str, enum.Enum):
    """Fused-kernel implementations, in the order the default prefers them on CUDA (reference last)."""

    TRITON = "triton"
    CUDA = "cuda"
    REF = "ref"


class KernelDType(str, enum.Enum):
    """Floating-point types the kernel check runs."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """Everything that turns a [0, 1] float image into the model's input tensor.

    Recorded in every checkpoint and copied into every exported manifest: the runtime reads it
    from there, never from defaults.

    Attributes:
        size: (H, W) of the model input.
        resize: letterbox (keep aspect, pad) or stretch.
        mean: per-channel mean subtracted from the [0, 1] image (one value per channel).
        std: per-channel divisor applied after the mean.
        channels: 1 (grayscale) or 3 (the gray image replicated, for RGB-initialised backbones).
        pad_value: letterbox fill, in [0, 1] image units (before normalisation).
    """

    size: tuple[int, int] = (224, 224)
    resize: ResizeMode = ResizeMode.LETTERBOX
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    channels: int = 1
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        if len(self.size) != 2 or any(int(s) != s or s < 16 for s in self.size):
            raise ValueError(f"preprocess size must be two integers >= 16, got {self.size!r}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        object.__setattr__(self, "resize", parse_enum(ResizeMode, self.resize, "resize mode"))
        if self.channels not in (1, 3):
            raise ValueError(f"preprocess channels must be 1 or 3, got {self.channels!r}")
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        if len(mean) not in (1, self.channels) or len(std) not in (1, self.channels):
            raise ValueError(f"mean and std need 1 or {self.channels} values, got {len(mean)} and {len(std)}")
        if any(not math.isfinite(s) or s <= 0 for s in std) or any(not math.isfinite(m) for m in mean):
            raise ValueError(f"std must be finite and positive and mean finite, got {mean} / {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if not 0.0 <= float(self.pad_value) <= 1.0:
            raise ValueError(f"pad_value must lie in [0, 1], got {self.pad_value!r}")
        object.__setattr__(self, "pad_value", float(self.pad_value))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``omsf2.preprocess`` contract for exported artifacts)."""
        return {
            "size": list(self.size),
            "resize": self.resize.value,
            "mean": list(self.mean),
            "std": list(self.std),
            "channels": self.channels,
            "pad_value": self.pad_value,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer artifact, not silently ignored)."""
        return cls(**_known_fields(cls, d, "preprocess spec"))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters of one OMSF2 network (a registered variant fills these).

    Attributes:
        name: registry name the config came from.
        depth: ResNet depth of the backbone (18, 34 or 50).
        width: width multiplier of the backbone (1.0 is the standard ResNet).
        in_chans: 1 or 3 input channels.
        num_classes: number of logits.
        neck_channels: channels of the neck levels L2-L5.
        head_channels: channels of the MSFF head convolutions.
        pool_windows: windows of the dense multi-scale pooling on the deepest level.
        neck: the neck (SSP, 1x1 laterals only, or none).
        head: the classifier head (MSFF, or global average pooling + linear).
        bap: whether the MAG-SD bilinear-attention-pooling branch is built.
        bap_maps: number of attention maps M of that branch.
        dropout: dropout before the classifier.
        img_size: default square input size of the variant.
    """

    name: str
    depth: int = 18
    width: float = 1.0
    in_chans: int = 1
    num_classes: int = 4
    neck_channels: int = 64
    head_channels: int = 64
    pool_windows: tuple[int, ...] = (5, 9, 13)
    neck: NeckName = NeckName.SSP
    head: HeadName = HeadName.MSFF
    bap: bool = True
    bap_maps: int = 32
    dropout: float = 0.2
    img_size: int = 224

    def __post_init__(self) -> None:
        if self.depth not in (18, 34, 50):
            raise ValueError(f"backbone depth must be one of 18, 34, 50, got {self.depth!r}")
        if not 0.05 <= self.width <= 4.0:
            raise ValueError(f"width multiplier must lie in [0.05, 4], got {self.width!r}")
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if any(w < 1 or w % 2 == 0 for w in self.pool_windows):
            raise ValueError(f"pool windows must be odd and positive, got {self.pool_windows!r}")
        object.__setattr__(self, "pool_windows", tuple(int(w) for w in self.pool_windows))
        object.__setattr__(self, "neck", parse_enum(NeckName, self.neck, "neck"))
        object.__setattr__(self, "head", parse_enum(HeadName, self.head, "head"))
        if self.neck is NeckName.NONE and self.head is HeadName.MSFF:
            raise ValueError("the MSFF head reads neck levels of equal width; without a neck use head 'gap'")
        if self.img_size < 32 or self.img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32 (the backbone stride), got {self.img_size!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["pool_windows"] = list(self.pool_windows)
        d["neck"], d["head"] = self.neck.value, self.head.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**_known_fields(cls, d, "model config"))


def _known_fields(cls: type, d: Mapping[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{what} has unknown keys {unknown}; known: {sorted(names)}")
    out = dict(d)
    for k, v in out.items():
        if isinstance(v, list):
            out[k] = tuple(v)
    return out
