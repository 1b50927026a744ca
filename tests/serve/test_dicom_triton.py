"""Scale through Triton: two DICOM nodes and ``omsf2 predict`` share one ``omsf2 serve triton`` server.

The server runs in the PyTriton venv (``pytriton_bin``, tests/serve/conftest.py); the nodes run here
with ``--backend triton --triton-url``: they decode and preprocess locally and send tensors, and
:meth:`~omsf2.runtime.predictor.Predictor.run_batch` checks and activates what comes back. Every
result must equal the local Predictor's and reach Orthanc exactly once; a bundle whose digest
differs from the server's is refused in one line.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.runtime.bundle import load_bundle
from omsf2.runtime.predictor import Predictor
from omsf2.serve.dicom_node import node_result_uids
from omsf2.serve.dicom_results import ModelInfo, read_stage

pytest.importorskip("tritonclient.grpc")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def triton(pytriton_bin: Path, dicom_bundle: Path, kit: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = kit.start_triton(pytriton_bin, dicom_bundle, tmp_path_factory.mktemp("triton") / "server.log")
    yield server
    server.stop(signal.SIGTERM)


def test_two_nodes_share_one_triton_server(pacs, node_factory, dicom_bundle, triton, kit, tmp_path) -> None:
    orthanc, _ = pacs
    remote = ("--backend", "triton", "--triton-url", triton.grpc)
    nodes = [node_factory(orthanc.forward, kit.free_port(), *remote, spool=f"spool-{k}").start() for k in "ab"]
    assert all(n.events("listening")[0]["backend"] == "triton" for n in nodes)
    images = [[kit.make_dx(kit.phantom(70 + i, 60, 300 + 10 * k + i)) for i in range(6)] for k in range(2)]
    errors: list[str] = []

    def push(node: Any, datasets: list[Any]) -> None:
        try:
            assert kit.send(node.port, datasets) == [0] * len(datasets)
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=push, args=(n, ds)) for n, ds in zip(nodes, images, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for node in nodes:
        node.wait_events("forwarded", 6, timeout=300)
        assert node.terminate() == 0

    b = load_bundle(dicom_bundle)
    model = ModelInfo(b.name, b.version, b.digest, "triton", b.classes)
    sources = [ds for group in images for ds in group]
    uids = {str(ds.SOPInstanceUID): node_result_uids(str(ds.SOPInstanceUID), model) for ds in sources}
    held = orthanc.by_kind()
    assert held["sr"] == {u.sr for u in uids.values()} and held["pm"] == {u.pm for u in uids.values()}
    assert orthanc.get("/statistics")["CountInstances"] == 2 * len(sources)  # exactly once each

    files = []
    for ds in sources:
        files.append(tmp_path / f"{ds.SOPInstanceUID}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    local = Predictor.from_bundle(dicom_bundle, backend="ort", threads=1).predict_files(files)
    by_sop = {i["sop"]: i["id"] for i in orthanc.instances()}
    for ds, want in zip(sources, local, strict=True):
        assert want.prediction is not None
        sr = pydicom.dcmread(orthanc.file(by_sop[uids[str(ds.SOPInstanceUID)].sr], tmp_path / "sr.dcm"))
        stage, probs = read_stage(sr, b.classes)
        assert stage == want.prediction.label
        np.testing.assert_allclose([probs[c] for c in b.classes], [want.prediction.probabilities[c] for c in b.classes],
                                   atol=1e-5)  # fmt: skip


def test_predict_through_triton_and_a_bundle_the_server_does_not_run(
    triton, dicom_bundle, tiny_bundle, kit, tmp_path
) -> None:
    image = tmp_path / "chest.dcm"
    kit.make_dx(kit.phantom(90, 80, 7)).save_as(image, enforce_file_format=True)
    out = tmp_path / "r.json"
    args = ["--backend", "triton", "--triton-url", triton.grpc]
    res = CliRunner().invoke(app, ["predict", str(image), "--model", str(dicom_bundle), *args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())["results"]
    (want,) = Predictor.from_bundle(dicom_bundle, backend="ort", threads=1).predict([image])
    assert row["label"] == want.label
    np.testing.assert_allclose(list(row["probabilities"].values()), list(want.probabilities.values()), atol=1e-5)

    other = tiny_bundle("other", version="9.0.0", out="other-bundle")  # another manifest: another digest
    res = CliRunner().invoke(app, ["predict", str(image), "--model", str(other), *args])
    digest = load_bundle(other).digest
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert res.output.startswith(f"error: the Triton server at {triton.grpc} serves bundle ") and digest in res.output
    spool = tmp_path / "spool"
    res = CliRunner().invoke(app, ["serve", "dicom", "--model", str(other), "--forward", "PACS@127.0.0.1:1", *args,
                                   "--port", "0", "--spool", str(spool)])  # fmt: skip
    assert res.exit_code == 1 and "serves bundle" in res.output and not spool.exists()
