"""The DICOM node never stalls and never leaks: backend errors, retries, startup failures, shutdown.

Most tests run the node in this process (``DicomNode``) against an in-process Storage SCP
(``StoreSink``), so a backend can be made to fail on cue; the startup ones run the command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.runtime.predictor import Predictor
from omsf2.serve.dicom_config import Destination, NodeConfig
from omsf2.serve.dicom_node import DicomNode, node_result_uids, serve_dicom
from omsf2.serve.dicom_results import ModelInfo
from omsf2.serve.dicom_spool import DuplicateInstance, Spool

runner = CliRunner()


def _config(bundle: Path, tmp_path: Path, forward: str, **kw: Any) -> NodeConfig:
    kw.setdefault("result_workers", 0)  # results built on a thread here; the command-line tests use a process
    return NodeConfig(model=str(bundle), forward=Destination.parse(forward), port=0, spool=str(tmp_path / "spool"),
                      threads=1, **kw)  # fmt: skip


class Flaky:
    """A session that fails, as onnxruntime does, on every batch of more than one image, and on the
    constant ("poisoned") image the first ``poison`` times it is run alone."""

    def __init__(self, real: Any, poison: int = 1) -> None:
        self.real, self.name, self.max_batch = real, real.name, real.max_batch
        self.poison, self.calls = poison, 0

    def run(self, batch: np.ndarray) -> Any:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail

        self.calls += 1
        if len(batch) > 1:
            raise Fail("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Conv node.")
        if float(np.ptp(batch)) == 0.0 and self.poison > 0:
            self.poison -= 1
            raise Fail("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 2: out of memory")
        return self.real.run(batch)


def test_a_backend_failing_on_a_batch_delivers_every_image_without_new_traffic(
    tmp_path, dicom_bundle, kit, sink, node_events
) -> None:
    sink.start()
    pred = Predictor.from_bundle(dicom_bundle, backend="ort", threads=1)
    pred.session = Flaky(pred.session)
    cfg = _config(dicom_bundle, tmp_path, sink.forward, batch_window=1.5, retry_delay=0.3, max_retry_delay=1.0)
    node = DicomNode(cfg, predictor=pred)
    node.start()
    try:
        poisoned = kit.make_dx(np.zeros((64, 64), np.uint16))
        images = [kit.make_dx(kit.phantom(64, 64, 100 + i)) for i in range(3)]
        images.insert(2, poisoned)
        assert kit.send(node.port, images) == [0, 0, 0, 0]  # one association, one batch
        others = {node_result_uids(str(d.SOPInstanceUID), node.model).sr for d in images if d is not poisoned}
        kit.wait_for(lambda: others <= set(sink.received), 60, "the other three results")
        kit.wait_for(lambda: len(sink.received) == 8, 60, "the poisoned image's results, retried on a timer")
    finally:
        node.stop()
    assert any(e.get("stage") == "predict" and e.get("retry") for e in node_events.named("failed"))
    assert any(e.get("stage") == "predict" for e in node_events.named("retry"))
    assert {e["batch"] for e in node_events.named("predicted")} == {1}
    assert len(node_events.named("received")) == 4  # nothing new arrived after the four
    assert not node.spool.pending_incoming() and not list((tmp_path / "spool" / "rejected").iterdir())


def test_results_are_retried_past_the_budget_until_the_pacs_comes_back(
    tmp_path, dicom_bundle, kit, sink, node_events
) -> None:
    audit = tmp_path / "audit.jsonl"
    cfg = _config(dicom_bundle, tmp_path, sink.forward, retries=2, retry_delay=0.1, max_retry_delay=0.4,
                  audit=str(audit))  # fmt: skip
    node = DicomNode(cfg)
    node.start()
    try:
        image = kit.make_dx(kit.phantom(64, 64, 110))
        assert kit.send(node.port, [image]) == [0]
        kit.wait_for(lambda: node_events.named("failed"), 60, "the retry budget to be spent")
        assert node_events.named("failed")[0]["attempts"] == 2
        res = runner.invoke(app, ["serve", "dicom", "--status", str(tmp_path / "spool")], terminal_width=200)
        assert "retry budget spent, still retried" in res.output and f"failed {image.SOPInstanceUID}" in res.output
        tries = len(node_events.named("retry"))
        kit.wait_for(lambda: len(node_events.named("retry")) > tries + 1, 30, "retries after the budget")
        sink.start()  # the PACS is back: no restart needed
        kit.wait_for(lambda: len(sink.received) == 2, 60, "the delivery")
    finally:
        node.stop()
    import json

    records = [json.loads(line) for line in audit.read_text().splitlines()]
    failed = [r for r in records if r["event"] == "result_failed"]
    assert len(failed) == len(node_events.named("retry")) and all(r["EventOutcomeIndicator"] == 4 for r in failed)
    assert [r["event"] for r in records].count("result_sent") == 1


def test_stop_keeps_the_spool_locked_while_a_thread_still_runs(tmp_path, dicom_bundle, kit, sink, node_events) -> None:
    sink.start()
    pred = Predictor.from_bundle(dicom_bundle, backend="ort", threads=1)
    entered, release = threading.Event(), threading.Event()
    real = pred.session

    class Stuck:
        name, max_batch = real.name, real.max_batch

        def run(self, batch: np.ndarray) -> Any:
            entered.set()
            release.wait(60)
            return real.run(batch)

    pred.session = Stuck()
    node = DicomNode(_config(dicom_bundle, tmp_path, sink.forward, drain_timeout=0.5), predictor=pred)
    node.start()
    try:
        assert kit.send(node.port, [kit.make_dx(kit.phantom(64, 64, 120))]) == [0]
        assert entered.wait(30)
        node.stop()
        assert node_events.named("stop_timeout") and Spool(tmp_path / "spool").is_locked()
    finally:
        release.set()
        for t in node._threads:
            t.join(30)
        node.spool.unlock()
    assert not Spool(tmp_path / "spool").is_locked()


def test_a_failing_on_ready_stops_the_node(tmp_path, dicom_bundle, sink) -> None:
    import socket

    def boom(node: DicomNode) -> None:
        boom.port = node.port  # type: ignore[attr-defined]
        raise RuntimeError("the caller's readiness hook failed")

    with pytest.raises(RuntimeError, match="readiness hook"):
        serve_dicom(_config(dicom_bundle, tmp_path, sink.forward), on_ready=boom)
    with socket.socket() as s:
        s.bind(("127.0.0.1", boom.port))  # type: ignore[attr-defined]  # the port is free again
    assert not Spool(tmp_path / "spool").is_locked()
    assert not [t for t in threading.enumerate() if t.name in ("omsf2-predict", "omsf2-forward")]


def test_startup_failures_leave_no_spool_and_no_stop_events(tmp_path, dicom_bundle) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        args = ["serve", "dicom", "--model", str(dicom_bundle), "--forward", "PACS@127.0.0.1:1", "--port", str(port)]
        res = runner.invoke(app, [*args, "--spool", str(tmp_path / "s"), "--log", str(tmp_path / "log")])
    assert res.exit_code == 1 and "cannot listen on" in res.output
    assert not (tmp_path / "s").exists()
    events = (tmp_path / "log").read_text() if (tmp_path / "log").exists() else ""
    assert '"stopping"' not in events and '"stopped"' not in events and '"listening"' not in events
    block = (
        "import importlib.abc, sys\n"
        "class _No(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'pynetdicom':\n"
        "            raise ModuleNotFoundError(\"No module named 'pynetdicom'\", name='pynetdicom')\n"
        "sys.meta_path.insert(0, _No())\n"
        "from omsf2.cli.app import main\nsys.argv = ['omsf2', *sys.argv[1:]]\nmain()\n"
    )
    proc = subprocess.run([sys.executable, "-c", block, "serve", "dicom", "--model", str(dicom_bundle), "--forward",
                           "PACS@127.0.0.1:1"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == "error: this command needs pynetdicom, which is not installed (pip install 'omsf2[dicom]')"
    )
    assert not (tmp_path / "dicom-spool").exists()


def test_one_uid_from_two_associations_at_once_is_stored_once(tmp_path) -> None:
    spool = Spool(tmp_path / "spool")
    data = os.urandom(200_000)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def store() -> None:
        barrier.wait()
        try:
            spool.store_incoming("1.2.3.4", data, limit=10**9)
            outcomes.append("stored")
        except DuplicateInstance:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["duplicate"] * 7 + ["stored"]
    assert spool.incoming_path("1.2.3.4").read_bytes() == data
    assert spool.bytes_used() == len(data) and not [
        p for p in (tmp_path / "spool" / "incoming").iterdir() if p.name.startswith(".")
    ]


def test_result_uids_depend_on_the_source_the_bundle_and_the_backend() -> None:
    ort = ModelInfo("tiny", "1", "ab" * 32, "ort", ("a", "b"))
    again = node_result_uids("1.2.3", ort)
    assert again == node_result_uids("1.2.3", ort)
    others = [
        node_result_uids("1.2.3", ModelInfo("tiny", "1", "ab" * 32, "openvino", ("a", "b"))),
        node_result_uids("1.2.3", ModelInfo("tiny", "1", "cd" * 32, "ort", ("a", "b"))),
        node_result_uids("1.2.4", ort),
    ]
    assert all(o.sr != again.sr and o.sc != again.sc and o.pm != again.pm for o in others)
