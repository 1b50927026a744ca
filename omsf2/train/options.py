"""From the ``omsf2 train`` options to a :class:`TrainConfig`: one mapping, outside the CLI.

The command passes its parsed options by name; the ones that name a config field go straight
in, the few that do not (the data source, the attention views, ``--no-bap``) are translated
here, and an option left unset (None) takes the library's default, which lives only in
:class:`TrainConfig`. Options that steer the invocation rather than the run (output folder,
resume, processes, folds) are not config and are ignored here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from omsf2.config import AugName
from omsf2.data.datasets import DataSpec
from omsf2.train.augment import AugConfig
from omsf2.train.config import TrainConfig

# Options translated below rather than copied into a field of the same name.
_TRANSLATED = {"data", "synthetic_n", "uncertain", "val_fraction", "attention_aug", "no_attention_aug"}
_TRANSLATED |= {"attention_prob", "no_bap", "init"}


def config_from_options(opts: Mapping[str, Any]) -> TrainConfig:
    """The training config the ``omsf2 train`` options describe.

    Args:
        opts: option values by parameter name (``batch_size``, ``no_bap``, ...); None = unset.

    Raises:
        ValueError: no ``data``, or a setting out of range (naming the setting).
    """
    if opts.get("data") is None:
        raise ValueError("--data is required (an image folder, a CheXpert folder or CSV, or 'synthetic')")
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"data", "aug", "folds", "fold"}
    seed = int(opts.get("seed") or 0)
    kw: dict[str, Any] = {k: v for k, v in opts.items() if k in fields and k not in _TRANSLATED and v is not None}
    spec = {"synthetic_n": opts.get("synthetic_n"), "uncertain": opts.get("uncertain")}
    spec["val_fraction"] = opts.get("val_fraction")
    kw["data"] = DataSpec(
        source=str(opts["data"]),
        synthetic_seed=seed,
        split_seed=seed,
        **{k: v for k, v in spec.items() if v is not None},
    )
    names = () if opts.get("no_attention_aug") else tuple(opts.get("attention_aug") or tuple(AugName))
    aug: dict[str, Any] = {"attention": names}
    if opts.get("attention_prob") is not None:
        aug["attention_prob"] = opts["attention_prob"]
    kw["aug"] = AugConfig(**aug)
    if opts.get("no_bap"):
        kw["bap"] = False
    if opts.get("init") is not None:
        kw["init"] = str(opts["init"])
    return TrainConfig(**kw)
