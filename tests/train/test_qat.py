"""Quantization-aware fine-tuning: the fake quantization, its removal, and ``omsf2 train --qat``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.config import SettingError
from omsf2.data.datasets import DataSpec
from omsf2.models.checkpoint import load_checkpoint
from omsf2.train import TrainConfig, qat, resume, train
from omsf2.train.loop import LogReporter, Trainer


class StopAt(LogReporter):
    """Requests a stop (what Ctrl-C does) after step ``step`` of epoch ``epoch``."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)
        self.trainer: Trainer | None = None

    def on_step(self, epoch: int, step: int, loss: float, lr: float) -> None:
        if (epoch, step) == self.at and self.trainer is not None:
            self.trainer.request_stop()


runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _toy() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def test_weights_move_at_most_one_step_onto_the_per_channel_int8_grid() -> None:
    model = _toy()
    w = model[0].weight.detach().clone()  # (3, 2, 3, 3)
    h = qat.prepare(model)
    wq = model[0].weight.detach()  # the parametrized (fake-quantized) weight
    step = w.abs().amax(dim=(1, 2, 3)) / 127  # one step per output channel, by hand
    diff = (wq - w).abs()
    assert bool((diff <= step.view(3, 1, 1, 1) / 2 + 1e-7).all())  # rounding: at most half a step
    k = wq / step.view(3, 1, 1, 1)
    assert torch.allclose(k, k.round(), atol=1e-4) and float(k.abs().max()) <= 127 + 1e-4
    assert not torch.equal(wq, w)  # it did round
    x = torch.randn(4, 2, 4, 4)
    model.train()
    y = model(x)  # observes the input ranges
    qat.strip(h)
    y_float = model(x)
    assert y.shape == y_float.shape == (4, 2)
    assert torch.equal(model[0].weight.detach(), w)  # the latent weights are back, untouched


def test_input_activations_are_rounded_to_the_observed_range() -> None:
    model = _toy()
    h = qat.prepare(model)
    x = torch.randn(8, 2, 4, 4)
    model.train()
    model(x)
    scale = h.acts["0"].scale()
    assert scale == pytest.approx(float(x.abs().max()) / 127, rel=1e-6)  # first batch: its abs-max
    seen: list[torch.Tensor] = []
    model[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))  # after the QAT hook
    model.eval()
    model(x)
    k = seen[0] / scale
    assert torch.allclose(k, k.round(), atol=1e-3) and float((seen[0] - x).abs().max()) <= scale / 2 + 1e-6


def test_gradients_flow_straight_through() -> None:
    model = _toy()
    qat.prepare(model)
    model.train()
    model(torch.randn(4, 2, 4, 4)).sum().backward()
    for p in model.parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_state_dict_keys_plain_under_float_state_dict_and_after_strip() -> None:
    model = _toy()
    keys = list(model.state_dict())
    h = qat.prepare(model)
    assert any("parametrizations" in k for k in model.state_dict())
    assert list(qat.float_state_dict(model)) == keys
    qat.strip(h)
    assert list(model.state_dict()) == keys


def test_ranges_freeze_after_the_observed_share() -> None:
    model = _toy()
    h = qat.prepare(model, qat.QatConfig(observe_fraction=0.5))
    model.train()
    model(torch.ones(2, 2, 4, 4))
    qat.observe_until(h, 1, 4)
    model(10 * torch.ones(2, 2, 4, 4))
    qat.observe_until(h, 2, 4)
    frozen = h.acts["0"].scale()
    model(100 * torch.ones(2, 2, 4, 4))
    assert h.acts["0"].scale() == frozen and frozen > 1 / 127
    with pytest.raises(ValueError, match="observe fraction"):
        qat.QatConfig(observe_fraction=1.5)


def test_qat_needs_init() -> None:
    with pytest.raises(SettingError, match="--init"):
        TrainConfig(data=DataSpec(source="synthetic"), qat=True)


def test_cli_qat_without_init_is_one_line_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "--data", "synthetic", "--qat", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--init" in lines[0], res.output
    assert not (tmp_path / "r").exists()


def test_one_epoch_of_qat_saves_plain_weights_that_export_accepts(
    small_cfg: TrainConfig, trained_ckpt: Path, tmp_path: Path
) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=1, init=str(trained_ckpt), qat=True, lr=1e-4, warmup_epochs=0)
    res = train(cfg, tmp_path / "qat")
    assert res.best_epoch == 1
    plain = list(load_checkpoint(trained_ckpt)["model"])
    for name in ("best.pt", "last.pt"):
        ck = load_checkpoint(tmp_path / "qat" / name)
        assert list(ck["model"]) == plain and ck["train_config"]["qat"] is True
    last = load_checkpoint(tmp_path / "qat" / "last.pt")
    assert all(s["frozen"] for s in last["qat"].values())  # 4 steps, observed for the first 2
    assert json.loads((tmp_path / "qat" / "metrics.json").read_text())["config"]["qat"] is True
    out = tmp_path / "export"
    exp = runner.invoke(app, ["export", str(tmp_path / "qat" / "best.pt"), "--out", str(out)])
    assert exp.exit_code == 0, exp.output
    assert (out / "model.onnx").is_file()


def test_qat_resume_is_exact(small_cfg: TrainConfig, trained_ckpt: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=2, init=str(trained_ckpt), qat=True, lr=1e-4, warmup_epochs=0)
    full = train(cfg, tmp_path / "full")
    rep = StopAt(epoch=1, step=1)  # stopped mid-epoch, before the ranges froze (after 4 of 8 steps)
    rep.trainer = Trainer(cfg, tmp_path / "part", rep)
    assert rep.trainer.run().interrupted
    assert not any(s["frozen"] for s in load_checkpoint(tmp_path / "part" / "last.pt")["qat"].values())
    resume(tmp_path / "part" / "last.pt")
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "last.pt")
    assert full.best_epoch >= 1
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_residual_add_inputs_of_omsf2_are_quantized() -> None:
    from omsf2 import create_model

    torch.manual_seed(0)
    model = create_model("omsf2_tiny", img_size=64, num_classes=3)
    blocks = qat.residual_adds(model)
    assert any(".layer1.0" in b for b, *_ in blocks) and any("dppm" in b.lower() for b, *_ in blocks)
    h = qat.prepare(model)
    model.train()
    model(torch.randn(2, 1, 64, 64))
    adds = [k for k in h.acts if ":add." in k]
    assert len(adds) == 2 * len(blocks) and all(h.acts[k].ready for k in adds)
    assert all(a.ready for a in h.acts.values())  # every quantized tensor was seen
