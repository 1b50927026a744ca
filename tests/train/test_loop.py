"""The training loop: files, exact resume after an interruption, early stopping, schedules."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from omsf2.config import ScheduleName
from omsf2.models.checkpoint import load_checkpoint
from omsf2.train import TrainConfig, resume, train
from omsf2.train import loop as loop_module
from omsf2.train.loop import LogReporter, lr_at


class SigintAt(LogReporter):
    """Sends a real SIGINT (or another signal) to this process at (epoch, step): what Ctrl-C does.

    ``signal.raise_signal`` and ``os.kill(os.getpid(), sig)`` do alike here: Python runs the handler on
    the main thread either way. These tests may run after others have loaded and released OpenVINO in
    this process; that once made such a signal kill pytest with SIGSEGV (the cause and its regression
    test: tests/test_signals_with_backends.py).
    """

    def __init__(self, epoch: int, step: int, sig: int = signal.SIGINT) -> None:
        self.at = (epoch, step)
        self.sig = sig

    def on_step(self, epoch: int, step: int, loss: float, lr: float) -> None:
        if (epoch, step) == self.at:
            signal.raise_signal(self.sig)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_train_writes_checkpoints_and_metrics(small_cfg: TrainConfig, tmp_path: Path) -> None:
    res = train(small_cfg, tmp_path / "run")
    assert not res.interrupted and res.best_epoch >= 1 and len(res.history) == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "last.pt", "metrics.json"]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["best"]["accuracy"] == res.best["accuracy"]
    assert set(m["best"]["per_class_recall"]) == {"normal", "stage_I", "stage_II", "stage_III"}
    assert m["config"]["epochs"] == 2 and m["train_size"] == 16
    ck = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ck["classes"] == ["normal", "stage_I", "stage_II", "stage_III"]
    assert ck["preprocess"]["size"] == [64, 64] and "optimizer" not in ck


def test_interrupted_run_resumes_exactly(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=3)
    full = train(cfg, tmp_path / "full")
    part = train(cfg, tmp_path / "part", SigintAt(epoch=2, step=2))
    assert part.interrupted and len(part.history) == 1
    state = load_checkpoint(tmp_path / "part" / "last.pt")["train_state"]
    assert (state["epoch"], state["step"]) == (1, 2)  # epoch index 1 (the second), 2 steps done
    done = resume(tmp_path / "part" / "last.pt")
    assert not done.interrupted
    assert [h["accuracy"] for h in done.history] == [h["accuracy"] for h in full.history]
    assert [h["val_loss"] for h in done.history] == [h["val_loss"] for h in full.history]
    assert [h["train_loss"] for h in done.history] == [h["train_loss"] for h in full.history]
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "part" / "last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_sigterm_saves_a_resumable_state_like_ctrl_c(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=1)
    part = train(cfg, tmp_path / "part", SigintAt(epoch=1, step=2, sig=signal.SIGTERM))
    assert part.interrupted
    assert load_checkpoint(tmp_path / "part" / "last.pt")["train_state"]["step"] == 2
    assert not [p for p in (tmp_path / "part").iterdir() if p.name.startswith(".")]  # no temporary files


def test_step_checkpoints_resume_exactly(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=1, ckpt_every=2)
    full = train(cfg, tmp_path / "a")

    # A crash (no chance to save) after step 3: only the step-2 checkpoint exists.
    class Crash(LogReporter):
        def on_step(self, epoch: int, step: int, loss: float, lr: float) -> None:
            if step == 3:
                raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg, tmp_path / "b", Crash())
    assert load_checkpoint(tmp_path / "b" / "last.pt")["train_state"]["step"] == 2
    done = resume(tmp_path / "b" / "last.pt")
    for key in ("val_loss", "train_loss", "accuracy"):
        assert done.history[-1][key] == full.history[-1][key]


def test_resume_rejects_best_and_shorter_runs(small_cfg: TrainConfig, tmp_path: Path) -> None:
    train(dataclasses.replace(small_cfg, epochs=1), tmp_path / "r")
    with pytest.raises(ValueError, match="holds no training state"):
        resume(tmp_path / "r" / "best.pt")
    with pytest.raises(ValueError, match="can only extend"):
        resume(tmp_path / "r" / "last.pt", epochs=0)


def test_early_stopping(small_cfg: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # lr so small the accuracy cannot change: no improvement after epoch 1 -> stop after patience epochs.
    # The loss tie-break is left out: at lr 1e-9 the val loss still moves in its 7th digit (the recomputed
    # BatchNorm statistics follow the weights), and whether it falls was float luck, not early stopping.
    monkeypatch.setattr(loop_module, "monitor", lambda task, metrics, val_loss: (metrics["accuracy"], 0.0))
    cfg = dataclasses.replace(small_cfg, epochs=6, lr=1e-9, patience=1)
    res = train(cfg, tmp_path / "r")
    assert res.stopped_early and len(res.history) < 6


def test_schedules() -> None:
    from omsf2.data.datasets import DataSpec

    base = TrainConfig(data=DataSpec(source="synthetic"), epochs=10, lr=1.0, warmup_epochs=1)
    assert lr_at(base, 0, 10) == pytest.approx(0.1)
    assert lr_at(base, 9, 10) == pytest.approx(1.0)
    assert lr_at(base, 99, 10) == pytest.approx(0.01, abs=1e-3)
    step = dataclasses.replace(base, schedule=ScheduleName.STEP, step_epochs=3, step_gamma=0.5, warmup_epochs=0)
    assert [lr_at(step, e * 10, 10) for e in (0, 3, 6)] == [1.0, 0.5, 0.25]


def test_balanced_sampling_and_centre_loss_run(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=1, balanced=True, center_loss=0.01, bap=False)
    res = train(cfg, tmp_path / "r")
    assert res.history and torch.isfinite(torch.tensor(res.history[0]["train_loss"]))


def test_classes_of_resumed_data_must_match(small_cfg: TrainConfig, tmp_path: Path, synth_root: Path) -> None:
    train(dataclasses.replace(small_cfg, epochs=1), tmp_path / "r")
    ck: dict[str, Any] = load_checkpoint(tmp_path / "r" / "last.pt")
    ck["classes"] = ["a", "b", "c", "d"]
    torch.save(ck, tmp_path / "r" / "other.pt")
    with pytest.raises(ValueError, match="checkpoint classes"):
        resume(tmp_path / "r" / "other.pt")


@pytest.mark.needs_cuda
def test_train_on_cuda_with_amp_and_eval_on_cpu(small_cfg: TrainConfig, tmp_path: Path) -> None:
    from omsf2.evaluate import EvalSpec, evaluate_checkpoint

    res = train(dataclasses.replace(small_cfg, device="cuda", epochs=1, amp=True), tmp_path / "r")
    assert res.history and torch.isfinite(torch.tensor(res.history[0]["train_loss"]))
    m = evaluate_checkpoint(EvalSpec(str(tmp_path / "r" / "best.pt"), device="cpu", workers=0)).metrics
    assert m["n"] == 8


def test_train_on_synthetic_in_memory(tmp_path: Path) -> None:
    from omsf2.data.datasets import DataSpec
    from omsf2.train import AugConfig

    cfg = TrainConfig(
        data=DataSpec(source="synthetic", synthetic_n=8, synthetic_size=64),
        epochs=1,
        batch_size=4,
        img_size=64,
        workers=0,
        aug=AugConfig(attention_prob=0.0),
    )
    res = train(cfg, tmp_path / "r")
    assert res.best["n"] == 4 and res.best["classes"] == ["normal", "stage_I", "stage_II", "stage_III"]
