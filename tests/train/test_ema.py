"""Weight averaging: the average equals a hand computation, is what is validated and saved, resumes exactly."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from omsf2.evaluate import EvalSpec, evaluate_checkpoint
from omsf2.models.checkpoint import load_checkpoint
from omsf2.train import TrainConfig, resume, train
from omsf2.train.ema import SPAN, ModelEma, ema_decay_at, schedule_decay
from omsf2.train.loop import LogReporter


def test_decay_warm_up() -> None:
    assert ema_decay_at(0.999, 0) == pytest.approx(0.0)  # the first update copies the weights
    assert ema_decay_at(0.999, 15) == pytest.approx(1 - 16**-0.75)  # spans 16 ** 0.75 = 8 steps
    assert 1 / (1 - ema_decay_at(0.999, 215)) == pytest.approx(216**0.75)
    assert ema_decay_at(0.5, 100) == 0.5  # capped by the decay once warmed up
    # checkpoints saved before the power warm-up resume with their own
    assert ema_decay_at(0.999, 0, "ratio") == pytest.approx(0.1)
    assert ema_decay_at(0.999, 2, "ratio") == pytest.approx(3 / 12)


def test_schedule_decay_spans_a_share_of_the_run() -> None:
    assert 1 / (1 - schedule_decay(540)) == pytest.approx(SPAN * 540)  # 30 epochs of 18 steps: 54
    assert schedule_decay(5) == 0.5  # never below a 2-step span
    assert schedule_decay(100) < schedule_decay(1000) < 1


def test_average_equals_hand_computation_over_params_and_buffers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.6)
    w0 = model[0].weight.detach().clone()
    rm0 = model[1].running_mean.detach().clone()
    expect_w, expect_rm = w0.clone(), rm0.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    decays = []
    for step in range(4):
        x = torch.randn(8, 3) + step
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
        ema.update(model)
        d = min(0.6, 1 - (1 + step) ** -0.75)  # 0, 0.405, 0.561, then capped at 0.6
        decays.append(d)
        expect_w = d * expect_w + (1 - d) * model[0].weight.detach()
        expect_rm = d * expect_rm + (1 - d) * model[1].running_mean.detach()
    assert decays[0] == 0.0 and decays[1] < decays[2] < 0.6 and decays[3] == 0.6
    torch.testing.assert_close(ema.module[0].weight, expect_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(ema.module[1].running_mean, expect_rm, rtol=0, atol=1e-6)
    assert not torch.equal(ema.module[0].weight, model[0].weight)  # really an average, not a copy
    assert int(ema.module[1].num_batches_tracked) == 4  # integer buffers are copied
    assert ema.updates == 4 and not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())


def test_decay_out_of_range_is_refused(small_cfg: TrainConfig) -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        ModelEma(nn.Linear(1, 1), decay=1.0)
    with pytest.raises(ValueError, match=r"EMA decay must lie in \(0, 1\)"):
        dataclasses.replace(small_cfg, ema_decay=0.0)


def test_checkpoints_hold_the_average_and_validation_uses_it(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=1, ema_decay=0.9)
    res = train(cfg, tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert last["ema"]["updates"] == res.history[-1]["epoch"] * 4  # 16 images / batch 4: one update a step
    differ = [k for k in last["model"] if not torch.equal(last["model"][k], last["raw_model"][k])]
    assert differ, "the saved weights must be the average, not the raw weights"
    for k in best["model"]:
        torch.testing.assert_close(best["model"][k], last["model"][k], rtol=0, atol=0)
    assert best["selection"]["ema"] == {"enabled": True, "decay": 0.9} and "raw_model" not in best
    # The recorded validation figures are those of the saved (averaged) weights.
    ev = evaluate_checkpoint(EvalSpec(str(tmp_path / "run" / "best.pt"), device="cpu", workers=0))
    assert ev.metrics["accuracy"] == pytest.approx(res.best["accuracy"])
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["ema"] == {"enabled": True, "decay": 0.9} and m["config"]["ema"] is True


class _SigintAt(LogReporter):
    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    def on_step(self, epoch: int, step: int, loss: float, lr: float) -> None:
        if (epoch, step) == self.at:
            signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("ema", [True, False])
def test_resume_is_exact_with_and_without_the_average(small_cfg: TrainConfig, tmp_path: Path, ema: bool) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=2, ema=ema, ema_decay=0.9)
    full = train(cfg, tmp_path / "full")
    part = train(cfg, tmp_path / "part", _SigintAt(epoch=2, step=1))
    assert part.interrupted
    done = resume(tmp_path / "part" / "last.pt")
    assert [h["val_loss"] for h in done.history] == [h["val_loss"] for h in full.history]
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    keys = ("model", "raw_model") if ema else ("model",)
    assert ("raw_model" in a) is ema
    for key in keys:
        for k in a[key]:
            torch.testing.assert_close(a[key][k], b[key][k], rtol=0, atol=0)
    if ema:
        assert a["ema"] == b["ema"]


def test_run_saved_before_ema_existed_resumes_without_it(small_cfg: TrainConfig) -> None:
    d = dataclasses.replace(small_cfg).to_dict()
    del d["ema"]
    assert TrainConfig.from_dict(d).ema is False


def test_default_decay_is_tied_to_the_schedule(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=2, ema_decay=None)
    train(cfg, tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    steps = last["ema"]["updates"]  # 2 epochs of 4 steps
    assert steps == 8 and last["ema"]["decay"] == schedule_decay(steps) and last["ema"]["warmup"] == "power"
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["ema"] == {"enabled": True, "decay": schedule_decay(steps)} and m["config"]["ema_decay"] is None


def test_state_saved_before_the_power_warm_up_keeps_its_own() -> None:
    model = nn.Linear(2, 1)
    ema = ModelEma(model, decay=0.999)
    ema.load(ModelEma(model, decay=0.999).module.state_dict(), {"decay": 0.999, "updates": 3})
    assert ema.warmup == "ratio" and ema.state() == {"decay": 0.999, "updates": 3, "warmup": "ratio"}
    with pytest.raises(ValueError, match="warm-up"):
        ModelEma(model, decay=0.9, warmup="linear")
