"""Config dataclasses: validation with clear messages and JSON round-trips."""

from __future__ import annotations

import json

import pytest

from omsf2.config import PreprocessSpec, ResizeMode
from omsf2.data.datasets import DataSpec
from omsf2.train import AugConfig, TrainConfig


def test_preprocess_spec_round_trip_and_validation() -> None:
    spec = PreprocessSpec(size=(96, 128), resize="stretch", mean=(0.4,), std=(0.2,), channels=3)
    assert spec.resize is ResizeMode.STRETCH
    d = json.loads(json.dumps(spec.to_dict()))
    assert PreprocessSpec.from_dict(d) == spec
    with pytest.raises(ValueError, match="resize mode 'crop'; choose one of 'letterbox', 'stretch'"):
        PreprocessSpec(resize="crop")
    with pytest.raises(ValueError, match="std must be finite and positive"):
        PreprocessSpec(std=(0.0,))
    with pytest.raises(ValueError, match="unknown keys"):
        PreprocessSpec.from_dict({**spec.to_dict(), "gamma": 2})


def test_train_config_round_trip() -> None:
    cfg = TrainConfig(data=DataSpec(source="synthetic"), aug=AugConfig(attention=("crop", "drop")), epochs=3)
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"epochs": -1}, "epochs must be >= 1"),
        ({"batch_size": 1}, "batch size must be >= 2"),
        ({"img_size": 100}, "multiple of 32"),
        ({"optimizer": "lbfgs"}, "invalid optimizer 'lbfgs'; choose one of 'adamw', 'sgd'"),
        ({"device": "tpu"}, "invalid device"),
        ({"lr": 0}, "learning rate must be > 0"),
    ],
)
def test_train_config_rejects(kwargs: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        TrainConfig(data=DataSpec(source="synthetic"), **kwargs)


def test_aug_and_data_specs_reject() -> None:
    with pytest.raises(ValueError, match="invalid augmentation 'blur'"):
        AugConfig(attention=("blur",))
    with pytest.raises(ValueError, match="uncertain-label policy"):
        DataSpec(source="x", uncertain="maybe")
    with pytest.raises(ValueError, match="val fraction"):
        DataSpec(source="x", val_fraction=1.0)
