"""The DICOM node's pieces without a network: spool states, analysis keys and recovery, options, result objects."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.serve.dicom_config import Destination, NodeConfig, pixel_problem
from omsf2.serve.dicom_results import ModelInfo, build_sr, read_stage, result_uids
from omsf2.serve.dicom_spool import Spool, analysis_key, spool_status, valid_uid

UID = "1.2.826.0.1.3680043.8.498.1"


def test_spool_moves_each_instance_through_one_state_at_a_time(tmp_path):
    sp = Spool(tmp_path / "s")
    assert sp.state(UID) is None
    sp.store_incoming(UID, b"DICM")
    assert sp.state(UID) == "incoming" and sp.pending_incoming() == [sp.incoming_path(UID)]
    sp.put_result(UID, {"sr.dcm": b"sr", "sc.dcm": b"sc"}, {"sop_instance_uid": UID, "received_at": 1.0})
    assert sp.state(UID) == "results" and not sp.incoming_path(UID).exists()
    (r,) = sp.pending_results()
    r = sp.update_meta(r, attempts=3, failed=True, last_error="down")
    st = spool_status(sp.root)
    assert (st.incoming, st.pending, len(st.failed)) == (0, 0, 1) and st.failed[0]["last_error"] == "down"
    sp.mark_delivered(r, delivered_at=2.0)
    assert sp.state(UID) == "delivered" and sp.pending_results() == []
    assert spool_status(sp.root).delivered == 1


def test_recover_resolves_what_a_kill_between_two_renames_left(tmp_path):
    sp = Spool(tmp_path / "s")
    # killed after the result folder was renamed in, before the incoming file was removed
    sp.store_incoming(UID, b"x")
    sp.put_result(UID, {"sr.dcm": b"sr"}, {"received_at": 1.0})
    sp.store_incoming(UID, b"x")
    # killed after the delivery record, before the result folder was removed
    other = UID + "2"
    sp.put_result(other, {"sr.dcm": b"sr"}, {"received_at": 1.0})
    (sp.root / "delivered" / f"{other}.json").write_text("{}")
    # killed mid-write: temporaries
    (sp.root / "incoming" / f".{UID}3.dcm.abc.tmp").write_bytes(b"half")
    (sp.root / "results" / f".{UID}4.xyz.tmp").mkdir()
    assert sp.recover() == {"tmp": 2, "incoming": 1, "results": 1}
    assert sp.state(UID) == "results" and sp.state(other) == "delivered"
    assert sp.pending_incoming() == [] and [r.uid for r in sp.pending_results()] == [UID]


def test_one_node_per_spool(tmp_path):
    a, b = Spool(tmp_path / "s"), Spool(tmp_path / "s")
    a.lock()
    try:
        assert b.is_locked()
        with pytest.raises(ValueError, match="in use by another omsf2 node"):
            b.lock()
    finally:
        a.unlock()
    assert not b.is_locked()


def test_uids_are_checked_before_they_become_file_names():
    assert valid_uid(UID)
    for bad in ("", "../etc", "1.2/3", "1..2", "1" * 65, "1.2.", "a.b"):
        assert not valid_uid(bad)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ORTHANC@127.0.0.1", "AE@HOST:PORT"),
        ("127.0.0.1:4242", "AE@HOST:PORT"),
        ("ORTHANC@127.0.0.1:0", "port must be 1-65535"),
        ("A_TITLE_LONGER_THAN_16@h:1", "1-16 printable"),
    ],
)
def test_bad_forward_is_one_line_error(text, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        Destination.parse(text)
    res = CliRunner().invoke(
        app, ["serve", "dicom", "--model", str(tmp_path), "--forward", text, "--spool", str(tmp_path / "s")]
    )
    assert res.exit_code == 1 and res.output.startswith("error:") and len(res.output.strip().splitlines()) == 1


def test_bad_options_are_refused_before_anything_runs(tmp_path):
    dest = Destination.parse("ORTHANC@127.0.0.1:4242")
    assert NodeConfig(model="m", forward=dest).host == "127.0.0.1"  # loopback unless told otherwise
    with pytest.raises(ValueError, match="--retries"):
        NodeConfig(model="m", forward=dest, retries=0)
    with pytest.raises(ValueError, match="--port"):
        NodeConfig(model="m", forward=dest, port=70000)
    with pytest.raises(ValueError, match="--allow-ae"):
        NodeConfig(model="m", forward=dest, allow_ae=(" PAD",))
    runner = CliRunner()
    for bad, match in [
        ({"forward": None}, "--forward AE@HOST:PORT and/or --forward-stow URL"),
        ({"forward_stow": "ftp://pacs/dicom-web"}, "--forward-stow must be an http"),
        ({"results": ("pm", "sc")}, "--results takes sr and any of pm, sc"),
        ({"results": ("sr", "png")}, "--results takes sr"),
        ({"allow_missing": ("laterality",)}, "--allow-missing takes body-part, view"),
        ({"backend": "triton"}, "--backend triton and --triton-url"),
        ({"triton_url": "127.0.0.1:8001"}, "--backend triton and --triton-url"),
        ({"result_workers": -1}, "--result-workers"),
    ]:
        with pytest.raises(ValueError, match=match):
            NodeConfig(model="m", **{"forward": dest, **bad})
    assert NodeConfig(model="m", forward_stow="http://127.0.0.1:8042/dicom-web").forward is None
    res = runner.invoke(app, ["serve", "dicom", "--forward", "A@h:1"])
    assert res.exit_code == 1 and "--model and --forward (or --forward-stow) are required" in res.output
    res = runner.invoke(app, ["serve", "dicom", "--model", str(tmp_path), "--forward", "A@h:1", "--results", "sr,gif"])
    assert res.exit_code == 1 and res.output.startswith("error: --results takes sr") and res.output.count("\n") == 1
    res = runner.invoke(app, ["serve", "dicom", "--model", str(tmp_path / "nope"), "--forward", "A@h:1"])
    assert res.exit_code == 1 and "is not a bundle or export folder" in res.output
    res = runner.invoke(app, ["serve", "dicom", "--status", str(tmp_path)])
    assert res.exit_code == 1 and "is not an omsf2 DICOM spool" in res.output


def _dx(kit, **kw):
    return kit.make_dx(kit.phantom(40, 30, 1), **kw)


def test_pixel_problem_names_what_is_wrong(kit):
    ds = _dx(kit)
    assert pixel_problem(ds, "1.2.840.10008.1.2.1") is None
    short = _dx(kit)
    short.PixelData = short.PixelData[:100]
    assert "pixel data has 100 bytes, the header needs 2400" in pixel_problem(short, "1.2.840.10008.1.2.1")
    rgb = _dx(kit)
    rgb.PhotometricInterpretation = "RGB"
    assert pixel_problem(rgb, "1.2.840.10008.1.2.1") is None  # stored; the clinical gating declines it
    nouid = _dx(kit)
    del nouid.StudyInstanceUID
    assert pixel_problem(nouid, "1.2.840.10008.1.2.1") == "missing or invalid StudyInstanceUID"
    nomodality = _dx(kit)
    del nomodality.Modality  # a result could not be built on it: refused at receipt, the sender is told
    assert pixel_problem(nomodality, "1.2.840.10008.1.2.1") == "missing required attribute Modality"


def test_sr_round_trips_with_stable_uids(kit):
    ds = _dx(kit)
    model = ModelInfo("tiny", "0.1.0", "ab" * 32, "ort", ("normal", "stage_I"))
    uids = result_uids(str(ds.SOPInstanceUID), model)
    assert uids == result_uids(str(ds.SOPInstanceUID), model)  # same image, same model: same instances
    assert uids != result_uids(str(ds.SOPInstanceUID), ModelInfo("tiny", "0.1.0", "cd" * 32, "ort", model.classes))
    sr = build_sr(ds, "stage_I", {"normal": 0.25, "stage_I": 0.75}, model, uids)
    assert read_stage(sr, model.classes) == ("stage_I", {"normal": 0.25, "stage_I": 0.75})
    assert sr.StudyInstanceUID == ds.StudyInstanceUID and sr.SOPInstanceUID == uids.sr
    with pytest.raises(ValueError, match="model's classes"):
        build_sr(ds, "stage_IV", {"normal": 1.0}, model, uids)
    assert len({uids.sr_series, uids.pm_series, uids.sc_series}) == 3  # one series per object type


def test_a_new_bundle_is_a_new_analysis_of_the_same_image(tmp_path):
    """Dedupe by source UID + bundle digest + backend: delivered under one key, new under another."""
    sp = Spool(tmp_path / "s")
    old, new = analysis_key("ab" * 32, "ort"), analysis_key("cd" * 32, "ort")
    assert len({old, new, analysis_key("ab" * 32, "openvino")}) == 3
    sp.key = old
    sp.store_incoming(UID, b"DICM-1")
    r = sp.put_result(UID, {"sr.dcm": b"sr"}, {"sop_instance_uid": UID, "received_at": 1.0})
    assert r.name == f"{UID}@{old}" and (tmp_path / "s" / "sources" / f"{UID}.dcm").read_bytes() == b"DICM-1"
    (pending,) = sp.pending_results()
    assert pending.uid == UID and pending.entry == f"{UID}@{old}"
    sp.mark_delivered(pending, delivered_at=2.0)
    assert sp.state(UID) == "delivered"
    sp.key = new  # the node restarted with another bundle: a resend is analysed again
    assert sp.state(UID) is None
    assert sp.reanalyse() == 1 and sp.state(UID) == "incoming" and sp.reanalyse() == 0
    sp.decline(UID, "not applicable: view LL (this bundle accepts AP, PA)", 3.0)
    assert sp.state(UID) == "declined" and sp.reanalyse() == 0
    st = spool_status(sp.root)
    assert st.declined[0]["reason"].startswith("not applicable") and st.sources == 1 and st.delivered == 1
    sp.key = old
    assert sp.state(UID) == "delivered"


def test_kept_sources_are_evicted_oldest_first_when_the_spool_needs_room(tmp_path):
    sp = Spool(tmp_path / "s")
    for k in range(3):
        uid = f"{UID}{k}"
        sp.store_incoming(uid, bytes(400), limit=2000)
        sp.put_result(uid, {}, {"sop_instance_uid": uid, "received_at": float(k)})
        (r,) = [r for r in sp.pending_results() if r.uid == uid]
        sp.mark_delivered(r)
    assert sp.bytes_used() == 1200 and spool_status(sp.root).sources == 3
    sp.store_incoming(f"{UID}9", bytes(1500), limit=2000)  # room made by evicting the two oldest sources
    assert sorted(p.stem for p in (tmp_path / "s" / "sources").iterdir()) == [f"{UID}2"]
    assert sp.bytes_used() == 1900


def test_port_in_use_is_one_line_error(dicom_bundle, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        args = ["serve", "dicom", "--model", str(dicom_bundle), "--forward", "PACS@127.0.0.1:1", "--port", str(port)]
        res = CliRunner().invoke(app, [*args, "--spool", str(tmp_path / "s"), "--log", str(tmp_path / "log")])
    assert res.exit_code == 1
    assert res.output.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
