"""The runtime without torch: in an interpreter where ``import torch`` fails, and in a fresh venv
installed with ``pip install .[runtime]`` (which must not bring torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch':
            raise ModuleNotFoundError("No module named 'torch'", name='torch')
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def _python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


def test_predictor_and_cli_run_where_torch_cannot_be_imported(tiny_bundle_master: Path, images, tmp_path) -> None:
    code = (
        "import sys\nfrom omsf2.runtime import Predictor\n"
        "p = Predictor.from_bundle(sys.argv[1], backend='ort', threads=1)\n"
        "print([r.label for r in p.predict(sys.argv[2:])])\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torch']\n"
    )
    proc = _python(code, str(tiny_bundle_master), *map(str, images))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("'") == 2 * len(images)
    cli = "import sys\nfrom omsf2.cli.app import main\nsys.argv = ['omsf2', *sys.argv[1:]]\nmain()\n"
    out = tmp_path / "r.json"
    proc = _python(cli, "predict", str(images[0]), "--model", str(tiny_bundle_master), "--json", str(out))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert json.loads(out.read_text())["results"][0]["label"]
    proc = _python(
        cli, "bundle", str(tiny_bundle_master.parent), "--out", str(tmp_path / "b"), "--name", "t", "--version", "1"
    )
    assert proc.returncode == 1 and "has no report.json" in proc.stderr
    proc = _python(cli, "train", "--data", str(tmp_path), "--out", str(tmp_path / "run"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: this command needs torch, which is not installed (pip install 'omsf2[train]')"


@pytest.mark.slow
def test_fresh_runtime_venv_has_no_torch_and_predicts(tiny_bundle_master: Path, images, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{REPO}[runtime]"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    if install.returncode != 0 and "No matching distribution" in install.stderr:
        pytest.skip(f"no package index reachable for the runtime's dependencies: {install.stderr.strip()[-200:]}")
    assert install.returncode == 0, install.stderr[-2000:]
    listed = subprocess.run([str(py), "-m", "pip", "list"], capture_output=True, text=True, env=env).stdout.lower()
    assert "onnxruntime" in listed and "pydicom" in listed
    assert "torch" not in listed and "triton" not in listed and "onnxscript" not in listed
    omsf2 = env_dir / "bin" / "omsf2"
    out = tmp_path / "r.json"
    run = subprocess.run(
        [str(omsf2), "predict", *map(str, images), "--model", str(tiny_bundle_master), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr + run.stdout
    assert len(json.loads(out.read_text())["results"]) == len(images)
    need = subprocess.run([str(omsf2), "models"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert need.returncode == 1 and "needs torch" in need.stderr and "Traceback" not in need.stderr
