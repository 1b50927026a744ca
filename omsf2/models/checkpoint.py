"""Checkpoints: weights plus everything needed to use them without the training code.

A checkpoint is a ``torch.save`` of a dict holding only tensors and JSON types: the model
config, class names, task, preprocessing spec, data spec, the data's record (counts per split
and class, split rule, hash: :mod:`omsf2.train.data_record`), training metrics, the software
versions, the state dict, and (in ``last.pt``) the optimizer and RNG states that make
``--resume`` exact. It is read with ``torch.load(weights_only=True)``, so loading never
unpickles arbitrary objects. Writes are atomic.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import torch

from omsf2._version import __version__
from omsf2.config import ModelConfig, PreprocessSpec, Task, parse_enum
from omsf2.fileio import atomic_write
from omsf2.models.backbone import adapt_stem_weight
from omsf2.models.omsf2 import OMSF2

log = logging.getLogger(__name__)

FORMAT = "omsf2-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors and JSON types) atomically, stamped with format, version and software."""
    software = {"omsf2": __version__, "torch": str(torch.__version__), "python": platform.python_version()}
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "omsf2_version": __version__, "software": software,
            **payload}  # fmt: skip
    return atomic_write(path, lambda p: torch.save(data, p))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate an omsf2 checkpoint (``weights_only=True``: no arbitrary unpickling).

    Raises:
        ValueError: missing file, not a torch file, not an omsf2 checkpoint, a newer format, or
            missing fields (one-line messages naming the file).
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"checkpoint '{p}' is a folder; give a checkpoint file (e.g. {p / 'best.pt'})")
    if not p.is_file():
        raise ValueError(f"checkpoint '{p}' does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load on foreign bytes raises anything (KeyError, UnpicklingError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load checkpoint '{p}': not a valid omsf2/torch checkpoint ({first[:160]})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"'{p}' is not an omsf2 checkpoint (a bare state dict is init weights, not a checkpoint)")
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint '{p}' has format version {ckpt['format_version']}; "
            f"this omsf2 ({__version__}) reads up to {FORMAT_VERSION}"
        )
    for key in ("model_config", "classes", "task", "preprocess", "model"):
        if key not in ckpt:
            raise ValueError(f"checkpoint '{p}' lacks '{key}'")
    return ckpt


def checkpoint_info(ckpt: dict[str, Any]) -> tuple[ModelConfig, list[str], Task, PreprocessSpec]:
    """Model config, class names, task and preprocessing spec recorded in a checkpoint."""
    return (
        ModelConfig.from_dict(ckpt["model_config"]),
        list(ckpt["classes"]),
        parse_enum(Task, ckpt["task"], "task"),
        PreprocessSpec.from_dict(ckpt["preprocess"]),
    )


def nonfinite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state`` that hold NaN or infinity."""
    return [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def model_from_checkpoint(ckpt: dict[str, Any]) -> OMSF2:
    """Rebuild the network a checkpoint describes and load its weights strictly (eval mode).

    Raises:
        ValueError: the weights do not fit the recorded config, or some are not finite (a
            diverged run's weights would give silently wrong predictions).
    """
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    bad = nonfinite_tensors(ckpt["model"])
    if bad:
        raise ValueError(
            f"the checkpoint's weights are not finite: {len(bad)} tensor(s) hold NaN or infinity, e.g. {bad[0]}"
        )
    model = OMSF2(cfg)
    load_strict(model, ckpt["model"], f"model {cfg.name!r}")
    return model.eval()


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``model``; a ValueError naming ``what`` and the first misfit unless every key fits."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shape:
        parts = []
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} shape mismatch(es), e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise ValueError(f"weights do not fit {what}: " + "; ".join(parts))
    model.load_state_dict(state)


def load_init_weights(model: OMSF2, path: str | os.PathLike[str]) -> dict[str, int]:
    """Initialise ``model`` from local weights (nothing is downloaded).

    Accepts an omsf2 checkpoint (every tensor whose name and shape fit is taken, so a model
    trained on another class count initialises all but its classifiers), or a bare state dict of
    a torchvision-style ResNet (loaded into the backbone; ``fc.*`` is dropped; a 3-channel stem
    is summed to 1 channel).

    Returns:
        ``{"loaded": n, "skipped": m}`` tensor counts.

    Raises:
        ValueError: unreadable file, or fewer than half of the backbone's tensors fit.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"init weights '{p}' do not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # see load_checkpoint
        raise ValueError(f"cannot load init weights '{p}': not a torch state dict") from e
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        state = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
    elif isinstance(obj, dict):
        state = obj
    else:
        raise ValueError(f"init weights '{p}' hold a {type(obj).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    own = model.state_dict()
    if not any(k.startswith("backbone.") for k in state):
        # A bare ResNet state dict: map it into the backbone.
        state = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
        stem = "backbone.conv1.weight"
        if stem in state and stem in own:
            state[stem] = adapt_stem_weight(state[stem], own[stem].shape[1])
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    backbone_keys = [k for k in own if k.startswith("backbone.")]
    fit = sum(1 for k in backbone_keys if k in take)
    if fit < len(backbone_keys) / 2:
        raise ValueError(
            f"init weights '{p}' do not fit model {model.cfg.name!r}: "
            f"only {fit} of {len(backbone_keys)} backbone tensors match"
        )
    model.load_state_dict({**own, **take})
    skipped = len(state) - len(take)
    log.info("init from %s: %d tensors loaded, %d skipped", p, len(take), skipped)
    return {"loaded": len(take), "skipped": skipped}
