"""An export owns its OUT: nothing changes on failure, stale artifacts go, kills leave no staging folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.export.outdir import STAGING_PREFIX

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _staging(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(STAGING_PREFIX)] if folder.is_dir() else []


@pytest.fixture(scope="module")
def onnx_out(tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx-export") / "out"
    res = run("export", tiny_ckpt, "--out", out)
    assert res.exit_code == 0, res.output
    return out


def test_nan_weights_fail_early_saying_so_and_leave_out_unchanged(tiny_ckpt, onnx_out, tmp_path) -> None:
    import torch

    from omsf2.models.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_ckpt)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name] = torch.full_like(ckpt["model"][name], float("nan"))
    bad = tmp_path / "nan.pt"
    save_checkpoint(bad, ckpt)
    out = tmp_path / "out"
    shutil.copytree(onnx_out, out)
    before = _snapshot(out)
    res = run("export", bad, "--out", out)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "weights that are not finite" in res.output and name in res.output
    assert _snapshot(out) == before and not _staging(out)


def test_reexport_removes_the_earlier_exports_files_it_did_not_write(tiny_ckpt, int8_export, tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(int8_export.out, out)
    assert (out / "model.int8.onnx").is_file() and (out / "model.int8-cpu.onnx").is_file()
    res = run("export", tiny_ckpt, "--out", out)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["files"] == ["model.onnx", "report.json"] and set(report["artifacts"]) == {"onnx"}


def test_foreign_folder_is_refused_unless_overwrite(tiny_ckpt, tmp_path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "model.int8.onnx").write_bytes(b"stale bytes of another checkpoint")
    res = run("export", tiny_ckpt, "--out", out)
    assert res.exit_code == 1 and "holds files that no omsf2 export wrote" in res.output and "--overwrite" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["model.int8.onnx", "notes.txt"]
    res = run("export", tiny_ckpt, "--out", out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "notes.txt", "report.json"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_staging_folder_of_a_dead_run_is_removed_on_the_next_start(tiny_ckpt, onnx_out, tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    shutil.copytree(onnx_out, out)
    stale = out / f"{STAGING_PREFIX}{dead.pid}-abc123"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    live = out / f"{STAGING_PREFIX}{os.getpid()}-other"  # a running export's folder stays
    live.mkdir()
    res = run("export", tiny_ckpt, "--out", out)
    assert res.exit_code == 0, res.output
    assert not stale.exists() and live.is_dir()


@pytest.mark.slow
def test_sigterm_cleans_the_staging_folder_like_ctrl_c(tiny_ckpt, tmp_path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "omsf2.cli.app", "export", str(tiny_ckpt), "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not _staging(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _staging(out), "the export never staged anything"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert not out.exists(), sorted(p.name for p in out.iterdir())  # created by this export, so removed whole


def test_an_older_report_without_a_file_list_still_names_engine_manifests(tmp_path) -> None:
    from omsf2.export.outdir import previous_files

    for name in ("model.onnx", "model.int8.engine", "model.int8.engine.json", "notes.txt"):
        (tmp_path / name).write_text("x")
    artifacts = {"onnx": {"file": "model.onnx"}, "engine_int8": {"file": "model.int8.engine"}}
    (tmp_path / "report.json").write_text(json.dumps({"omsf2_version": "0.1.0", "artifacts": artifacts}))
    assert previous_files(tmp_path, [], overwrite=False) == {
        "model.onnx", "model.int8.engine", "model.int8.engine.json", "report.json"
    }  # fmt: skip
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match="no omsf2 export wrote"):
        previous_files(tmp_path, [], overwrite=False)
