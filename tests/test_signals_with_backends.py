"""Ctrl-C after OpenVINO: a handled signal must not crash a process whose OpenVINO plugins came and went.

OpenVINO's CPU plugin installs its own alternate signal stack on the thread that creates it and unmaps
it when released; released out of order, it left that thread's stack in unmapped memory, and the next
Python-handled signal (all run on that stack) killed the process with SIGSEGV. See
:mod:`omsf2.runtime.openvino_core` for the cause and the fix.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OpenVINO swaps the signal stack on Linux")
PKG = Path(__file__).resolve().parents[1] / "omsf2"

# Two OpenVINO sessions of two batch sizes each (four compiled models, dropped in creation order, as
# the bench and a Predictor's dict of compiled models drop them), then a training run that gets a real
# SIGINT (what Ctrl-C sends) at its second step. Before the fix: SIGSEGV (exit -11) at the signal.
_CHILD = textwrap.dedent(
    """
    import gc, os, signal, sys
    from pathlib import Path

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from omsf2.data.datasets import DataSpec
    from omsf2.data.synthetic import write_dataset
    from omsf2.runtime.openvino_core import signal_stack
    from omsf2.runtime.sessions import OpenVinoSession, SessionOptions
    from omsf2.train import TrainConfig, train
    from omsf2.train.loop import LogReporter

    before = signal_stack()
    w = numpy_helper.from_array(np.full((4, 3, 3, 3), 0.1, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["heatmap"], pads=[1, 1, 1, 1]),
         helper.make_node("ReduceMean", ["heatmap"], ["logits"], axes=[2, 3], keepdims=0)],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["N", 4, 16, 16])], [w])
    onnx_bytes = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    sessions = [OpenVinoSession(onnx_bytes, SessionOptions(threads=1), input_chw=(3, 16, 16)) for _ in range(2)]
    for s in sessions:
        s.run(np.zeros((2, 3, 16, 16), np.float32))
    del s, sessions
    gc.collect()
    # Unmapped, the stale stack gives SIGSEGV at the signal; mapped again by a later mmap, the signal
    # frame silently overwrites that memory: only the comparison catches every case.
    print("signal stack kept", signal_stack() == before, flush=True)

    class CtrlC(LogReporter):
        def on_step(self, epoch, step, loss, lr):
            if (epoch, step) == (1, 2):
                os.kill(os.getpid(), signal.SIGINT)  # process-directed, as a terminal's Ctrl-C

    root = Path(sys.argv[1])
    write_dataset(root / "data", 16, seed=3, size=64, n_val=4, n_test=4, workers=0)
    cfg = TrainConfig(data=DataSpec(source=str(root / "data")), epochs=1, batch_size=4, img_size=64, workers=0)
    res = train(cfg, root / "run", CtrlC())
    print("interrupted", res.interrupted, flush=True)
    """
)


@pytest.mark.slow
@needs_openvino
@linux_only
def test_ctrl_c_during_training_after_openvino_sessions(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PKG.parent)}
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", _CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    died = f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
    assert proc.returncode == 0, f"{died}\n{proc.stdout[-1000:]}\n{proc.stderr[-3000:]}"
    assert [ln for ln in proc.stdout.splitlines() if ln.startswith(("signal", "interrupted"))] == [
        "signal stack kept True",
        "interrupted True",
    ]
    assert (tmp_path / "run" / "last.pt").is_file()  # the interrupted run saved its resumable state


@needs_openvino
@linux_only
def test_openvino_plugins_leave_the_signal_stack_as_it_was() -> None:
    import openvino as ov

    from omsf2.runtime.openvino_core import kept_signal_stack, openvino_core, signal_stack

    before = signal_stack()
    core = openvino_core()
    assert openvino_core() is core and signal_stack() == before
    with kept_signal_stack():
        ov.Core().get_property("CPU", "FULL_DEVICE_NAME")  # a second Core: its own CPU plugin
    assert signal_stack() == before


def _core_calls(path: Path) -> list[int]:
    """Lines of ``<openvino module>.Core(...)`` or a bare ``Core(...)`` call in ``path``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Attribute) and f.attr == "Core") or (isinstance(f, ast.Name) and f.id == "Core"):
                lines.append(node.lineno)
    return lines


def test_every_openvino_core_is_the_shared_one() -> None:
    own = PKG / "runtime" / "openvino_core.py"
    found = [f"{p.relative_to(PKG.parent)}:{n}" for p in sorted(PKG.rglob("*.py")) if p != own for n in _core_calls(p)]
    assert not found, f"create OpenVINO Cores with omsf2.runtime.openvino_core.openvino_core(), not at {found}"
