"""The DICOM node against a real PACS (Orthanc, started by the tests): end to end, faults, load.

Each test starts its own Orthanc and node processes on free local ports; nothing here is mocked.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.encaps import encapsulate
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.runtime.bundle import load_bundle
from omsf2.serve.dicom_maps import sc_size
from omsf2.serve.dicom_node import node_result_uids
from omsf2.serve.dicom_results import ModelInfo, ResultUids, read_stage

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"


def expected_uids(bundle: Path, source_uid: str, backend: str = "ort") -> ResultUids:
    """The node's result UIDs for ``source_uid``: from it, the bundle's digest and the backend (auto: ort here)."""
    b = load_bundle(bundle)
    return node_result_uids(source_uid, ModelInfo("", "", b.digest, backend, b.classes))


CLASSES = ("normal", "stage_I", "stage_II", "stage_III")


def status_text(spool: Path) -> str:
    res = CliRunner().invoke(app, ["serve", "dicom", "--status", str(spool)], terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.output


def status_count(text: str, label: str) -> int:
    line = next(line for line in text.splitlines() if label in line)
    return int(line.strip(" │|").split()[-1].strip("│ "))


def assert_one_result_each(
    orthanc: Any, bundle: Path, sources: list[str], kinds: tuple[str, ...] = ("sr", "pm")
) -> None:
    """Orthanc holds exactly one of each result kind per source image, and nothing else from the node."""
    want = [expected_uids(bundle, s) for s in sources]
    held = orthanc.by_kind()
    for kind in ("sr", "pm", "sc"):
        assert held[kind] == ({getattr(u, kind) for u in want} if kind in kinds else set()), kind
    assert held["image"] == set()
    assert orthanc.get("/statistics")["CountInstances"] == len(sources) * len(kinds)


# ---------------------------------------------------------------------------- end to end


def test_end_to_end_sr_and_sc_in_the_study(pacs, node_factory, dicom_bundle, kit, tmp_path):
    orthanc, port = pacs
    node = node_factory(orthanc.forward, port, "--allow-ae", "SCANNER", "--allow-ae", "ORTHANC",
                        "--results", "sr,pm,sc").start()  # fmt: skip
    # The node is registered in Orthanc's DicomModalities: Orthanc's own C-ECHO reaches it.
    assert orthanc.request("/modalities/omsf2/echo", {}) is not None

    mono2, mono1 = kit.dx16_pair()
    cr = kit.real_cr()
    assert kit.send(port, [mono2, mono1, cr]) == [0, 0, 0]
    # The PACS as the sender: an image stored in Orthanc, pushed by Orthanc to the node.
    pushed = kit.make_dx(kit.phantom(90, 70, 11), study=mono2.StudyInstanceUID)
    pushed_path = tmp_path / "pushed.dcm"
    pushed.save_as(pushed_path, enforce_file_format=True)
    pushed_id = orthanc.get("/instances", pushed_path.read_bytes())["ID"]
    orthanc.get("/modalities/omsf2/store", {"Resources": [pushed_id], "Synchronous": True})
    node.wait_events("forwarded", 4, timeout=180)
    _delete(orthanc, pushed_id)  # Orthanc then holds only what the node sent

    sources = {"mono2": mono2, "mono1": mono1, "cr": cr, "pushed": pushed}
    files = {}
    for name, ds in sources.items():
        files[name] = tmp_path / f"{name}.dcm"
        ds.save_as(files[name], enforce_file_format=True)
    pred_json = tmp_path / "predict.json"
    res = CliRunner().invoke(
        app, ["predict", *map(str, files.values()), "--model", str(dicom_bundle), "--json", str(pred_json)]
    )
    assert res.exit_code == 0, res.output
    predicted = {Path(r["file"]).stem: r for r in json.loads(pred_json.read_text())["results"]}

    by_sop = {i["sop"]: i for i in orthanc.instances()}
    for name, ds in sources.items():
        uids = expected_uids(dicom_bundle, str(ds.SOPInstanceUID))
        sr_i, sc_i = by_sop[uids.sr], by_sop[uids.sc]
        assert sr_i["study"] == sc_i["study"] == str(ds.StudyInstanceUID)  # same study, new series
        assert sr_i["modality"] == "SR"
        sr_path = orthanc.file(sr_i["id"], tmp_path / f"{name}-sr.dcm")
        sr = pydicom.dcmread(sr_path)
        assert sr.SeriesInstanceUID not in (ds.SeriesInstanceUID,)
        stage, probs = read_stage(sr, CLASSES)  # highdicom parses the TID 1500 report
        assert stage == predicted[name]["label"], name
        for cls, p in predicted[name]["probabilities"].items():
            assert probs[cls] == pytest.approx(p, abs=1e-5)
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
        dump = subprocess.run(["dsrdump", "+Pc", str(sr_path)], capture_output=True, text=True)
        assert dump.returncode == 0 and not dump.stderr.strip(), dump.stderr
        assert '(40122008,SCT,"Pneumoconiosis")' in dump.stdout  # the coded finding
        assert '(stage,99OMSF2,"Pneumoconiosis stage")' in dump.stdout and f'"{stage}")' in dump.stdout
        assert '(111001,DCM,"Algorithm Name")="tiny"' in dump.stdout  # from the bundle manifest
        for kind, inst in (("sr", sr_i), ("sc", sc_i), ("pm", by_sop[uids.pm])):
            errors, _ = kit.dciodvfy(orthanc.file(inst["id"], tmp_path / f"{name}-{kind}-v.dcm"))
            assert not errors or kind == "pm", (kind, errors)  # the PM's validator defects: test_dicom_objects.py
        sc = pydicom.dcmread(orthanc.file(sc_i["id"], tmp_path / f"{name}-sc.dcm"))
        assert sc.PatientID == ds.PatientID and sc.BurnedInAnnotation == "NO"
        rows, cols = sc_size(ds.Rows, ds.Columns)  # at most 1024 px on the long side
        assert sc.Columns > cols and sc.Rows > rows  # the legend panel and the text band

    assert node.terminate(signal.SIGTERM) == 0
    assert_one_result_each(orthanc, dicom_bundle, [str(ds.SOPInstanceUID) for ds in sources.values()],
                           ("sr", "pm", "sc"))  # fmt: skip
    stopped = node.events("stopped")
    assert stopped and stopped[-1]["delivered"] == 4
    events = node.events()
    for e in events:
        assert {"ts", "event"} <= set(e)
    assert {e["sop_instance_uid"] for e in events if e["event"] == "received"} == {
        str(ds.SOPInstanceUID) for ds in sources.values()
    }
    assert node.events("received")[0]["calling_ae"] == "SCANNER"
    assert {e["calling_ae"] for e in node.events("received")} == {"SCANNER", "ORTHANC"}
    st = status_text(node.args[node.args.index("--spool") + 1])
    assert status_count(st, "delivered") == 4 and status_count(st, "waiting for delivery") == 0


# ---------------------------------------------------------------------------- faults


def test_sigkill_after_ack_before_forward_delivers_once(pacs, node_factory, dicom_bundle, kit, tmp_path):
    orthanc, port = pacs
    dead = f"ORTHANC@127.0.0.1:{kit.free_port()}"  # nothing listens: results wait in the spool
    node = node_factory(dead, port, "--retry-delay", "0.2", "--retries", "1000").start()
    first = [*kit.dx16_pair(), kit.make_dx(kit.phantom(80, 64, 1))]
    assert kit.send(port, first) == [0, 0, 0]
    kit.wait_for(lambda: len({e["sop_instance_uid"] for e in node.events("retry")}) == 3, 120, "3 results spooled")
    node.kill()  # SIGKILL: acknowledged and predicted, never forwarded
    spool = tmp_path / "spool"
    assert len(list((spool / "results").iterdir())) == 3
    assert orthanc.count("SR") == 0

    node.start("--forward", orthanc.forward)
    node.wait_events("forwarded", 3, timeout=120)
    assert_one_result_each(orthanc, dicom_bundle, [str(d.SOPInstanceUID) for d in first])

    # Killed while receiving: whatever was acknowledged is delivered once after the restart; a
    # scanner resends what was not acknowledged, and a resend of a delivered image adds nothing.
    second = [kit.make_dx(kit.phantom(70 + i, 60, 20 + i)) for i in range(6)]
    sender = threading.Thread(target=lambda: _send_quietly(kit, port, second))
    n_received = len(node.events("received"))
    sender.start()
    kit.wait_for(lambda: len(node.events("received")) > n_received, 60, "a receipt")
    node.kill()
    node.start()
    sender.join(60)
    assert kit.send(port, [*first, *second]) == [0] * 9
    everyone = [str(d.SOPInstanceUID) for d in [*first, *second]]
    kit.wait_for(lambda: len(list((spool / "delivered").glob("*.json"))) == 9, 180, "9 deliveries")
    assert len(node.events("duplicate", since_start=True)) >= 3
    assert node.terminate() == 0
    assert_one_result_each(orthanc, dicom_bundle, everyone)


def _delete(orthanc: Any, orthanc_id: str) -> None:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}/instances/{orthanc_id}", method="DELETE")
    with urllib.request.urlopen(req, timeout=30):
        pass


def _send_quietly(kit: Any, port: int, datasets: list[Any]) -> None:
    with contextlib.suppress(Exception):  # the node is killed mid-association
        kit.send(port, datasets)


def test_pacs_down_results_wait_and_are_delivered_after_restart(pacs, node_factory, dicom_bundle, kit, tmp_path):
    orthanc, port = pacs
    node = node_factory(orthanc.forward, port, "--retry-delay", "0.3", "--retries", "60").start()
    orthanc.stop()
    images = [kit.make_dx(kit.phantom(64, 64, 30 + i)) for i in range(3)]
    assert kit.send(port, images) == [0, 0, 0]
    retries = node.wait_events("retry", 3, timeout=120)
    assert all("ORTHANC@127.0.0.1" in e["error"] for e in retries)
    st = status_text(tmp_path / "spool")
    assert status_count(st, "waiting for delivery") == 3 and status_count(st, "delivered") == 0
    orthanc.start()
    node.wait_events("forwarded", 3, timeout=120)
    assert_one_result_each(orthanc, dicom_bundle, [str(d.SOPInstanceUID) for d in images])
    assert node.terminate() == 0

    # Retry budget spent: the result stays in the spool as failed, and goes when the node restarts.
    dead = f"ORTHANC@127.0.0.1:{kit.free_port()}"
    other = node_factory(dead, kit.free_port(), "--retry-delay", "0.05", "--retries", "2", spool="spool2").start()
    late = kit.make_dx(kit.phantom(64, 64, 40))
    assert kit.send(other.port, [late]) == [0]
    failed = other.wait_events("failed", 1, timeout=120)
    assert failed[0]["stage"] == "forward" and failed[0]["attempts"] == 2
    assert other.terminate() == 0
    st = status_text(tmp_path / "spool2")
    assert status_count(st, "retry budget spent") == 1 and f"failed {late.SOPInstanceUID}" in st
    other.start("--forward", orthanc.forward)
    other.wait_events("forwarded", 1, timeout=120)
    assert other.terminate() == 0
    assert_one_result_each(orthanc, dicom_bundle, [str(d.SOPInstanceUID) for d in [*images, late]])


def test_refused_and_reported_inputs_leave_the_node_serving(pacs, node_factory, dicom_bundle, kit, tmp_path):
    from pynetdicom import AE

    orthanc, port = pacs
    node = node_factory(orthanc.forward, port, "--allow-ae", "SCANNER").start()

    # An unlisted calling AE title is rejected at association time.
    with kit.association(port, "INTRUDER") as assoc:
        assert assoc.is_rejected
    # A non-image SOP class is refused per presentation context; the association goes on.
    with kit.association(port, extra_contexts=(CT_IMAGE_STORAGE,)) as assoc:
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert CT_IMAGE_STORAGE not in accepted and DX_PRESENTATION in accepted
        assert CT_IMAGE_STORAGE in {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
        # A pixel payload shorter than its header says is refused with a failure status.
        short = kit.make_dx(kit.phantom(64, 64, 50))
        short.PixelData = short.PixelData[:1000]
        assert int(assoc.send_c_store(short).Status) == 0xA900
    # A compressed payload that does not decode is acknowledged (it is stored first), then reported.
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(DX_PRESENTATION, [JPEG2000_LOSSLESS])
    corrupt = kit.make_dx(kit.phantom(64, 64, 51))
    corrupt.file_meta.TransferSyntaxUID = JPEG2000_LOSSLESS
    corrupt.PixelData = encapsulate([b"\xff\x4f\xff\x51 this is not a JPEG 2000 codestream" * 4])
    corrupt["PixelData"].VR = "OB"
    assoc = ae.associate("127.0.0.1", port, ae_title="OMSF2")
    assert assoc.is_established
    assert int(assoc.send_c_store(corrupt).Status) == 0
    assoc.release()
    failed = node.wait_events("failed", 1, timeout=60)
    assert failed[0]["stage"] == "read" and failed[0]["sop_instance_uid"] == corrupt.SOPInstanceUID

    # ... and the node keeps serving.
    good = kit.make_dx(kit.phantom(64, 64, 52))
    assert kit.send(port, [good]) == [0]
    node.wait_events("forwarded", 1, timeout=60)
    assert node.terminate() == 0
    assert_one_result_each(orthanc, dicom_bundle, [str(good.SOPInstanceUID)])
    events = node.events()
    assert any(e["event"] == "association_rejected" and e["calling_ae"] == "INTRUDER" for e in events)
    assert any(e["event"] == "refused" and e["sop_instance_uid"] == short.SOPInstanceUID for e in events)
    st = status_text(tmp_path / "spool")
    assert status_count(st, "rejected") == 1 and f"rejected {corrupt.SOPInstanceUID}" in st


# ---------------------------------------------------------------------------- load


def test_load_four_scanners_200_images_one_sr_and_pm_each(pacs, node_factory, dicom_bundle, kit):
    orthanc, port = pacs
    node = node_factory(orthanc.forward, port).start()
    result = kit.load_scenario(port, node, n=200, scus=4)
    assert result["errors"] == []
    assert node.terminate() == 0
    assert_one_result_each(orthanc, dicom_bundle, result["uids"])
    assert max(result["batch_sizes"]) > 1  # images that arrive together are predicted together
    assert result["images_per_s"] > 0 and result["receipt_to_delivery_p99_s"] >= result["receipt_to_delivery_p50_s"]


def test_ctrl_c_finishes_in_flight_work_and_exits_0(pacs, node_factory, dicom_bundle, kit):
    orthanc, port = pacs
    node = node_factory(orthanc.forward, port).start()
    images = [kit.make_dx(kit.phantom(64, 64, 60 + i)) for i in range(20)]
    assert kit.send(port, images) == [0] * 20
    assert len(node.events("forwarded")) < 20  # still in flight when the signal comes
    assert node.terminate(signal.SIGINT) == 0
    assert node.events("stopped")[-1]["delivered"] == 20
    assert_one_result_each(orthanc, dicom_bundle, [str(d.SOPInstanceUID) for d in images])
    with kit.association(port) as assoc:  # and it no longer listens
        assert not assoc.is_established
