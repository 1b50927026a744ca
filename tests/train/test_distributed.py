"""Multi-process training (DDP, gloo on CPU): real ranks on 127.0.0.1, each a separate Python process.

Every rank is this file run as a script (see ``_worker``), started with the environment torchrun
sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``), one thread each; one test goes
through ``omsf2 train --nproc 2`` (torchrun itself) and one through the CLI of each rank.

Why 2 ranks can equal 1 rank here (``test_two_ranks_equal_one_rank_with_sync_bn``): the global
batch is the same (each rank takes a contiguous half of the global batch order, which every rank
computes from the seed), the losses are per-sample means (so the mean of the ranks' losses is the
global batch's, and DDP averages gradients), and ``--sync-bn`` makes BatchNorm normalise with the
global batch's statistics (the 1-rank run uses the same layer, so both compute them the same way).
What would break it is switched off, and said why: dropout and the augmentation draws come from
per-rank random streams (ranks must not repeat each other's noise), so the two runs would see
different noise; the attention-guided views are drawn per sample from those streams too. Without
``--sync-bn`` each rank normalises with its half-batch statistics, and the runs differ (the
negative control). The optimizer is SGD at a small learning rate: AdamW divides by the running
gradient magnitude, so float rounding (the ranks add partial sums in another order) in near-zero
gradients becomes full-size steps and the comparison would measure that, not the distribution.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds for a whole multi-process run: a hang fails the test instead of blocking CI

NO_NOISE = {"attention": [], "rotate": 0, "scale": 0, "translate": 0, "intensity": False, "noise": 0}


# -- the rank process ---------------------------------------------------------------------------------
def _worker(args: dict[str, Any]) -> None:
    """One rank: train (or resume) per ``args``; may send itself SIGINT or die at a step."""
    import torch

    from omsf2.data.datasets import DataSpec
    from omsf2.train import AugConfig, TrainConfig, resume, train
    from omsf2.train.reporter import LogReporter

    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))

    class Hooks(LogReporter):
        def on_step(self, epoch: int, step: int, loss: float, lr: float) -> None:
            if args.get("sigint") == [rank, epoch, step]:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C on this rank only

    if args.get("resume"):
        res = resume(args["resume"], reporter=Hooks(), dist_timeout_s=60)
    else:
        cfg = TrainConfig(**{**args["cfg"], "data": DataSpec(**args["cfg"]["data"]), "aug": AugConfig(**args["aug"])})
        res = train(cfg, args["out"], Hooks(), dist_timeout_s=60)
    print(json.dumps({"rank": rank, "interrupted": res.interrupted, "epochs": len(res.history)}))


def _cli_worker(argv: list[str], die_at: list[int]) -> None:
    """One rank through the CLI (``omsf2 train ...``); rank ``die_at[0]`` dies at (epoch, step)."""
    from omsf2.cli.app import main
    from omsf2.train.reporter import LogReporter

    rank = int(os.environ.get("RANK", "0"))

    def on_step(self: Any, epoch: int, step: int, loss: float, lr: float) -> None:
        if [rank, epoch, step] == die_at:
            os._exit(3)  # no cleanup, no goodbye: what a crash or an OOM kill looks like to the others

    LogReporter.on_step = on_step  # type: ignore[method-assign]  # ranks other than 0 report through it
    sys.argv = ["omsf2", *argv]
    main()


# -- helpers ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(rank: int, world: int, port: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    env.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)})
    return env


def _ranks(world: int, argv: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``python this_file argv`` as ``world`` ranks; returns each rank's result (rank order)."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *argv],
            env=_env(r, world, port),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]
    out = []
    try:
        for p in procs:
            so, se = p.communicate(timeout=TIMEOUT)
            out.append(subprocess.CompletedProcess(p.args, p.returncode, so, se))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _train(world: int, out: Path, cfg: dict[str, Any], aug: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    res = _ranks(world, [json.dumps({"cfg": cfg, "aug": aug, "out": str(out), **extra})])
    for r in res:
        assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(r.stdout.strip().splitlines()[-1]) for r in res]


def _cfg(synth_root: Path, **kw: Any) -> dict[str, Any]:
    base = {"data": {"source": str(synth_root)}, "epochs": 2, "batch_size": 4, "img_size": 64, "workers": 0}
    return {**base, "warmup_epochs": 0.5, **kw}


def _weights(path: Path) -> dict[str, Any]:
    from omsf2.models.checkpoint import load_checkpoint

    return load_checkpoint(path)["model"]


def _history(run: Path) -> list[dict[str, Any]]:
    return json.loads((run / "metrics.json").read_text())["history"]


# -- tests --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_ranks_equal_one_rank_with_sync_bn(synth_root: Path, tmp_path: Path) -> None:
    import torch

    cfg = _cfg(synth_root, optimizer="sgd", lr=1e-3, dropout=0.0, sync_bn=True)
    _train(1, tmp_path / "one", cfg, NO_NOISE)
    _train(2, tmp_path / "two", cfg, NO_NOISE)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best.pt", "last.pt", "metrics.json"]
    a, b = _weights(tmp_path / "one" / "last.pt"), _weights(tmp_path / "two" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        # Float summation order differs between one batch and two shards, and 8 steps amplify it: on
        # today's phantoms the running statistics differ by up to 0.16 % (2e-4 absolute in a running
        # mean of values near 0.1); epoch 1's losses agree to 1e-8. A real sync-BN fault is far
        # larger: statistics over a duplicated batch change every running variance by ~14 %.
        tol = 1e-5 + 1e-3 * float(a[k].abs().max()) if a[k].is_floating_point() else 0.0
        torch.testing.assert_close(b[k], a[k], rtol=5e-3, atol=tol, msg=lambda m, k=k: f"{k}: {m}")
    one, two = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert len(one) == len(two) == 2
    for h1, h2 in zip(one, two, strict=True):
        assert h1["accuracy"] == h2["accuracy"] and h1["macro_f1"] == h2["macro_f1"]
        for key in ("train_loss", "val_loss", "lr"):
            assert h2[key] == pytest.approx(h1[key], rel=1e-4), key
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (m1["processes"], m2["processes"]) == (1, 2)
    assert m1["best"]["confusion"] == m2["best"]["confusion"]  # validation on the whole split, gathered
    assert sum(map(sum, m2["best"]["confusion"])) == m2["val_size"]

    # Negative control: without --sync-bn each rank normalises with its half batch, and the runs differ.
    _train(2, tmp_path / "local_bn", {**cfg, "sync_bn": False}, NO_NOISE)
    assert _history(tmp_path / "local_bn")[0]["train_loss"] != pytest.approx(one[0]["train_loss"], rel=1e-4)


@pytest.mark.slow
def test_weight_average_is_the_same_on_every_rank_without_sync_bn(synth_root: Path, tmp_path: Path) -> None:
    import torch

    from omsf2.config import PreprocessSpec, Task
    from omsf2.data.datasets import DataSpec, load_split
    from omsf2.data.loader import open_source
    from omsf2.evaluate import predict_logits
    from omsf2.models.checkpoint import load_checkpoint, model_from_checkpoint
    from omsf2.train.losses import task_loss

    # Local BatchNorm: each rank's running statistics differ after a step; the average must not.
    _train(2, tmp_path / "two", _cfg(synth_root, epochs=1, ema=True, ema_decay=0.9), NO_NOISE)
    rec = _history(tmp_path / "two")[-1]
    # Validation is sharded over the ranks, each predicting with its own average; the saved (rank 0)
    # average on one process gives the same loss only if the ranks' averages agree.
    ck = load_checkpoint(tmp_path / "two" / "last.pt")
    src = open_source(
        load_split(DataSpec(source=str(synth_root)), "val"), PreprocessSpec.from_dict(ck["preprocess"]), 0, -1.0
    )
    logits = predict_logits(model_from_checkpoint(ck), src, 64, torch.device("cpu"))
    loss = float(task_loss(torch.from_numpy(logits), src.y, src.mask, Task.MULTICLASS))
    assert loss == pytest.approx(rec["val_loss"], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_ctrl_c_on_one_rank_stops_all_and_the_resume_is_exact(synth_root: Path, tmp_path: Path) -> None:
    import torch

    from omsf2.config import SettingError
    from omsf2.models.checkpoint import load_checkpoint
    from omsf2.train import resume

    # Everything on: augmentation, attention-guided views, dropout, class-balanced sampling, local BN.
    cfg = _cfg(synth_root, epochs=2, balanced=True)
    aug = {"attention_prob": 0.5, "flip": 0.5}  # every attention-guided view may be drawn
    _train(2, tmp_path / "full", cfg, aug)
    part = _train(2, tmp_path / "part", cfg, aug, sigint=[1, 2, 2])  # SIGINT to rank 1 only, epoch 2, step 2
    assert [r["interrupted"] for r in part] == [True, True] and [r["epochs"] for r in part] == [1, 1]
    ck = load_checkpoint(tmp_path / "part" / "last.pt")
    assert (ck["train_state"]["epoch"], ck["train_state"]["step"], ck["train_state"]["world_size"]) == (1, 2, 2)
    assert len(ck["rng_ranks"]) == 2 and not torch.equal(ck["rng_ranks"][0]["aug"], ck["rng_ranks"][1]["aug"])

    # Another number of processes is refused before any work (this test process is 1 rank).
    with pytest.raises(SettingError, match="saved by a run of 2 process"):
        resume(tmp_path / "part" / "last.pt")
    # ... unless allowed: the batch order is kept, the per-rank random streams restart (not exact).
    other = resume(tmp_path / "part" / "last.pt", out_dir=tmp_path / "one_process", resume_any_world=True)
    assert not other.interrupted and len(other.history) == 2
    assert json.loads((tmp_path / "one_process" / "metrics.json").read_text())["processes"] == 1

    res = _ranks(2, [json.dumps({"resume": str(tmp_path / "part" / "last.pt")})])
    assert all(r.returncode == 0 for r in res), res[0].stderr[-3000:] + res[1].stderr[-3000:]
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "part" / "last.pt")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=lambda m, k=k: f"{k}: {m}")
    full, done = _history(tmp_path / "full"), _history(tmp_path / "part")
    for key in ("train_loss", "val_loss", "accuracy"):
        assert [h[key] for h in done] == [h[key] for h in full], key


@pytest.mark.slow
def test_a_dying_rank_makes_the_other_exit_with_one_line_error(synth_root: Path, tmp_path: Path) -> None:
    argv = ["train", "--data", str(synth_root), "--out", str(tmp_path / "run"), "--epochs", "2", "--batch-size", "4"]
    argv += ["--img-size", "64", "--workers", "0", "--dist-timeout", "30"]
    res = _ranks(2, ["--cli", json.dumps({"argv": argv, "die_at": [1, 1, 2]})])
    assert res[1].returncode == 3
    assert res[0].returncode == 1, res[0].stderr[-3000:]
    err = res[0].stderr.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error: rank 0 of 2: another rank failed, died or stopped answering"), err[-2000:]


@pytest.mark.slow
def test_cli_nproc_runs_torchrun(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "omsf2", "train", "--nproc", "2", "--data", str(synth_root), "--out", str(out)]
    cmd += ["--epochs", "1", "--batch-size", "4", "--img-size", "64", "--workers", "0", "--sync-bn"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["processes"] == 2 and m["config"]["sync_bn"] is True and len(m["history"]) == 1
    assert r.stdout.count("wrote ") == 1  # only rank 0 reports


@pytest.mark.slow
@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["foreground", "sigint-ignored"])
def test_terminal_ctrl_c_under_torchrun_saves_and_leaves_no_process(
    synth_root: Path, tmp_path: Path, sigint_ignored: bool
) -> None:
    # sigint-ignored: started the way a shell starts a background job (SIGINT ignored, so Python installs
    # no KeyboardInterrupt handler); the launcher must still report the interrupt as 130.
    import time

    from omsf2.models.checkpoint import load_checkpoint

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "omsf2", "train", "--nproc", "2", "--data", str(synth_root), "--out", str(out)]
    cmd += ["--epochs", "6", "--batch-size", "4", "--img-size", "64", "--workers", "0"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    p = subprocess.Popen(
        cmd, env={**env, "OMP_NUM_THREADS": "1"}, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        while not (out / "last.pt").exists() and time.monotonic() - t0 < TIMEOUT and p.poll() is None:
            time.sleep(0.2)  # epoch 1 done
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the launcher, torchrun and both ranks
        _, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err[-3000:]
    assert "interrupted; state saved: resume with" in err
    with pytest.raises(ProcessLookupError):
        os.killpg(p.pid, 0)  # no rank and no torchrun left behind
    ck = load_checkpoint(out / "last.pt")
    assert ck["train_state"]["world_size"] == 2 and len(ck["rng_ranks"]) == 2
    assert (ck["train_state"]["epoch"], ck["train_state"]["step"]) != (6, 0)  # stopped before the end


def test_batch_size_must_split_over_the_processes(small_cfg: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from omsf2.train import train

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        train(dataclasses.replace(small_cfg, batch_size=5), tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before any work


def test_timeout_must_be_positive(small_cfg: Any, tmp_path: Path) -> None:
    from omsf2.config import SettingError
    from omsf2.train import train

    with pytest.raises(SettingError, match="must be > 0 s, got 0") as e:
        train(small_cfg, tmp_path / "r", dist_timeout_s=0)
    assert e.value.setting == "dist_timeout"


def test_sharding_covers_each_global_batch_once() -> None:
    from omsf2.train.distributed import World, shard_batches, val_shard

    order = [[5, 1, 7, 3], [0, 2, 6, 4]]
    parts = [shard_batches(order, World(r, 2)) for r in range(2)]
    assert parts == [[[5, 1], [0, 2]], [[7, 3], [6, 4]]]
    assert [list(val_shard(7, World(r, 3))) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(val_shard(1, World(2, 3))) == []


def test_rank_device_gives_each_process_its_gpu() -> None:
    import torch

    from omsf2.train.distributed import World, rank_device

    cpu = torch.device("cpu")
    assert rank_device(cpu, World(1, 2, 1)) == cpu
    assert rank_device(torch.device("cuda", 3), World()) == torch.device("cuda", 3)  # one process: as asked
    with pytest.raises(ValueError, match="pass --device cuda, not cuda:0"):
        rank_device(torch.device("cuda", 0), World(0, 2, 0))
    if torch.cuda.device_count() < 9:
        with pytest.raises(ValueError, match="process 8 on this node has no GPU"):
            rank_device(torch.device("cuda"), World(8, 9, 8))


def test_world_from_env_rejects_nonsense(monkeypatch: Any) -> None:
    from omsf2.train.distributed import world_from_env

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        world_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="must be integers"):
        world_from_env()


def test_launch_cli_drops_nproc_and_refuses_nesting(monkeypatch: Any) -> None:
    from omsf2.train import distributed

    seen: list[Any] = []
    monkeypatch.setattr(distributed, "launch", lambda n, argv: seen.append((n, list(argv))) or 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.launch_cli(2, ["-v", "train", "--nproc", "2", "--data", "d", "--nproc=2"]) == 0
    assert seen == [(2, ["-v", "train", "--data", "d"])]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="under torchrun drop --nproc"):
        distributed.launch_cli(2, ["train"])


@pytest.mark.parametrize("momentum", [0.1, None])
def test_global_batchnorm_is_batchnorm_in_one_process(momentum: float | None) -> None:
    import torch

    from omsf2.train.distributed import convert_global_bn

    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3, momentum=momentum))
    mine = convert_global_bn(copy.deepcopy(ref))
    x = torch.randn(4, 2, 9, 7, requires_grad=True) * 3 + 1
    for m in (ref, mine):
        m.train()
        m(x.detach() * 0.5)  # a first step: running statistics move (cumulatively when momentum is None)
    y_ref, y = ref(x), mine(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(y_ref.square().sum(), x)[0]
    g = torch.autograd.grad(y.square().sum(), x)[0]
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine[1].running_var, ref[1].running_var)
    torch.testing.assert_close(mine[1].running_mean, ref[1].running_mean)


if __name__ == "__main__":  # a rank process started by the tests above
    if sys.argv[1] == "--cli":
        spec = json.loads(sys.argv[2])
        _cli_worker(spec["argv"], spec["die_at"])
    else:
        _worker(json.loads(sys.argv[1]))
