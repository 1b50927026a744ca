"""A run's output folder: checked before any work, locked while written, never another run's."""

from __future__ import annotations

import ast
import dataclasses
import fcntl
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from omsf2.models.checkpoint import load_checkpoint
from omsf2.train import TrainConfig, resume, train
from omsf2.train.loop import LogReporter, RunState
from omsf2.train.rundir import claim_run_dir


class Spy(LogReporter):
    """Records every callback: an empty record means no work started."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_start(self, info: dict[str, Any]) -> None:
        self.calls.append("start")

    def on_task(self, name: str, total: int) -> None:
        self.calls.append(name)


def test_out_that_is_a_file_fails_before_any_work(small_cfg: TrainConfig, tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    spy = Spy()
    with pytest.raises(ValueError, match="exists and is not a folder"):
        train(small_cfg, f, spy)
    with pytest.raises(ValueError, match="cannot write to output folder"):
        train(small_cfg, f / "sub", spy)
    assert spy.calls == [] and f.read_text() == "x"


def test_missing_init_weights_fail_before_any_work(small_cfg: TrainConfig, tmp_path: Path) -> None:
    spy = Spy()
    with pytest.raises(ValueError, match=r"init weights .* do not exist"):
        train(dataclasses.replace(small_cfg, init=str(tmp_path / "none.pt")), tmp_path / "r", spy)
    assert spy.calls == [] and not (tmp_path / "r").exists()


def test_second_run_into_a_locked_folder_is_refused(small_cfg: TrainConfig, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)  # what a running train holds
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        spy = Spy()
        with pytest.raises(ValueError, match="another training run is writing to"):
            train(small_cfg, out, spy)
        assert spy.calls == []
    finally:
        os.close(fd)
    with claim_run_dir(out, "a"), pytest.raises(ValueError, match="another training run"):  # noqa: SIM117
        with claim_run_dir(out, "a"):
            pass


def test_refuses_another_runs_folder_unless_overwrite(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=1)
    out = tmp_path / "run"
    train(cfg, out)
    first = load_checkpoint(out / "last.pt")["train_state"]["run_id"]
    before = (out / "best.pt").read_bytes()
    spy = Spy()
    with pytest.raises(ValueError, match=r"holds another run's files \(best.pt, last.pt, metrics.json\)"):
        train(cfg, out, spy)
    assert spy.calls == [] and (out / "best.pt").read_bytes() == before
    train(cfg, out, overwrite=True)
    assert load_checkpoint(out / "last.pt")["train_state"]["run_id"] != first
    # Resuming a run into a folder of another run is refused too; into its own folder it is not.
    other = tmp_path / "other"
    train(cfg, other)
    with pytest.raises(ValueError, match="holds another run's files"):
        resume(out / "last.pt", other, epochs=2)
    assert len(resume(out / "last.pt", epochs=2).history) == 2


def test_run_state_round_trips_through_the_checkpoint(small_cfg: TrainConfig, tmp_path: Path) -> None:
    train(dataclasses.replace(small_cfg, epochs=1), tmp_path / "r")
    saved = load_checkpoint(tmp_path / "r" / "last.pt")["train_state"]
    st = RunState.from_dict(saved)
    assert (st.epoch, st.step, st.best_epoch, len(st.history)) == (1, 0, 1, 1)
    assert RunState.from_dict(st.to_dict()) == st


def test_resume_loads_weights_strictly(small_cfg: TrainConfig, tmp_path: Path) -> None:
    train(dataclasses.replace(small_cfg, epochs=1), tmp_path / "r")
    ck = load_checkpoint(tmp_path / "r" / "last.pt")
    ck["model"] = {k: v for k, v in ck["model"].items() if not k.startswith("bap.")}
    ck["model"]["extra.weight"] = torch.zeros(3)
    torch.save(ck, tmp_path / "r" / "other.pt")
    with pytest.raises(ValueError, match=r"^weights do not fit model 'omsf2_tiny': .*missing key") as e:
        resume(tmp_path / "r" / "other.pt", epochs=2)
    assert len(str(e.value)) < 300


def test_divergence_with_attention_views_is_reported_as_divergence(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=1, lr=1e30, clip_grad=0.0, warmup_epochs=0.0)
    cfg = dataclasses.replace(cfg, aug=dataclasses.replace(cfg.aug, attention_prob=1.0))
    with pytest.raises(FloatingPointError, match="training diverged: the loss became nan"):
        train(cfg, tmp_path / "r")


def test_no_function_in_train_is_longer_than_80_lines() -> None:
    root = Path(__file__).resolve().parents[2] / "omsf2" / "train"
    long = []
    for p in root.rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno - n.lineno + 1 > 80:
                long.append(f"{p.name}:{n.name}")
    assert long == []
