"""Precise BatchNorm: a hand computation, the state it leaves, and a training run it does not change."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from omsf2.models.checkpoint import load_checkpoint
from omsf2.train import TrainConfig, train
from omsf2.train.options import config_from_options
from omsf2.train.precise_bn import batched, bn_layers, probe_batches, probe_indices, recompute_bn_stats


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(3, 2, 1))


def test_statistics_are_the_average_of_the_batches_statistics() -> None:
    net = _net()
    bn = net[1]
    bn.running_mean.fill_(5.0)
    bn.num_batches_tracked.fill_(17)
    batches = [torch.randn(4, 1, 8, 8) * (i + 1) + i for i in range(3)]
    assert recompute_bn_stats(net, batches) == 12
    feats = [net[0](x) for x in batches]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-5)
    # Left in eval mode with its momentum and step count; dropout never ran (outputs repeat).
    assert not net.training and not bn.training and bn.momentum == 0.1 and int(bn.num_batches_tracked) == 17
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x), net(x))


def test_an_error_or_no_input_leaves_the_statistics_as_they_were() -> None:
    net = _net()
    bn = net[1]
    bn.running_mean.fill_(0.5)
    bn.running_var.fill_(2.0)

    def failing():
        yield torch.randn(4, 1, 8, 8)
        raise OSError("image unreadable")

    with pytest.raises(OSError, match="unreadable"):
        recompute_bn_stats(net, failing())
    assert recompute_bn_stats(net, []) == 0
    assert torch.all(bn.running_mean == 0.5) and torch.all(bn.running_var == 2.0) and bn.momentum == 0.1
    assert recompute_bn_stats(nn.Linear(2, 2), [torch.randn(2, 2)]) == 0  # nothing to recompute
    assert bn_layers(nn.Sequential(nn.BatchNorm1d(2, track_running_stats=False))) == []


def test_the_probe_is_a_fixed_subset_cut_into_batches_of_two_or_more() -> None:
    a, b = probe_indices(100, 30, seed=3), probe_indices(100, 30, seed=3)
    assert a == b and len(set(a)) == 30 and a != sorted(a) and probe_indices(100, 30, seed=4) != a
    assert sorted(probe_indices(10, 256, seed=0)) == list(range(10))
    assert [len(x) for x in batched(list(range(9)), 4)] == [4, 5]  # a batch of one has no variance
    assert [len(x) for x in batched(list(range(10)), 4)] == [4, 4, 2]
    # To shard over ranks (--sync-bn), only whole batches, and at least one even for a small probe.
    assert [len(x) for x in probe_batches(100, 30, 8, seed=3, whole=True)] == [8, 8, 8]
    assert [len(x) for x in probe_batches(100, 3, 8, seed=3, whole=True)] == [8]
    assert [i for b in probe_batches(100, 30, 8, seed=3) for i in b] == probe_indices(100, 30, seed=3)


def test_training_is_unchanged_and_only_the_evaluated_statistics_move(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=1, ema_decay=0.9)
    train(dataclasses.replace(cfg, precise_bn=0), tmp_path / "off")
    train(cfg, tmp_path / "on")
    off, on = load_checkpoint(tmp_path / "off" / "last.pt"), load_checkpoint(tmp_path / "on" / "last.pt")
    for k in off["raw_model"]:  # the trained weights and their own statistics: the same trajectory
        torch.testing.assert_close(off["raw_model"][k], on["raw_model"][k], rtol=0, atol=0)
    stats = [k for k in on["model"] if k.endswith(("running_mean", "running_var"))]
    assert stats and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) or
                         torch.equal(off["model"][k], on["model"][k]) for k in on["model"])  # fmt: skip
    assert any(not torch.equal(off["model"][k], on["model"][k]) for k in stats)
    assert on["train_config"]["precise_bn"] == small_cfg.precise_bn > 0


def test_setting_is_checked_and_old_runs_resume_without_it(small_cfg: TrainConfig) -> None:
    with pytest.raises(ValueError, match="precise BatchNorm images must be >= 0"):
        dataclasses.replace(small_cfg, precise_bn=-1)
    d = small_cfg.to_dict()
    del d["precise_bn"]
    assert TrainConfig.from_dict(d).precise_bn == 0
    assert config_from_options({"data": "synthetic", "precise_bn": 64}).precise_bn == 64
    assert config_from_options({"data": "synthetic"}).precise_bn == TrainConfig(data=small_cfg.data).precise_bn
