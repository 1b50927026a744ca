"""The DICOM node's security: TLS (DCMTK's storescu in, a TLS-only Orthanc out), trust, bounds, audit.

Real peers throughout: DCMTK's ``storescu +tls`` plays a scanner with a client certificate, Orthanc
is started with ``DicomTlsEnabled`` so its DICOM port speaks nothing but TLS, and the node runs as
``omsf2 serve dicom`` in its own process. Certificates come from a test CA made here (``pki``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.serve.dicom_node import node_result_uids

runner = CliRunner()
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _tls_args(pki: dict[str, Any], tls_port: int) -> list[str]:
    node = pki["node"]
    return ["--tls-port", str(tls_port), "--tls-cert", str(node["cert"]), "--tls-key", str(node["key"]),
            "--tls-ca", str(pki["ca"])]  # fmt: skip


def _storescu(pki: dict[str, Any], port: int, path: Path, who: str = "scanner") -> subprocess.CompletedProcess[str]:
    # pynetdicom installs its own `storescu` into the venv's bin (earlier on PATH): DCMTK's is looked up outside it.
    outside = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if not d.startswith(sys.prefix))
    exe = shutil.which("storescu", path=outside)
    if exe is None:
        pytest.skip("DCMTK's storescu is not installed (apt-get install dcmtk)")
    ident = pki[who]
    args = [exe, "+tls", str(ident["key"]), str(ident["cert"]), "+cf", str(pki["ca"]), "-aet", "SCANNER",
            "-aec", "OMSF2", "127.0.0.1", str(port), str(path)]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _tls_associate(port: int, context: ssl.SSLContext) -> bool:
    """Whether a pynetdicom association over TLS with ``context`` is established (then released)."""
    from pynetdicom import AE

    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(DX_PRESENTATION)
    ae.acse_timeout = ae.network_timeout = 10
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="OMSF2", tls_args=(context, "127.0.0.1"))
    except OSError:
        return False
    ok = bool(assoc.is_established)
    if ok:
        assoc.release()
    return ok


def _client(pki: dict[str, Any], who: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
    if who is not None:
        ctx.load_cert_chain(str(pki[who]["cert"]), str(pki[who]["key"]))
    return ctx


# ---------------------------------------------------------------------------- acceptance 2: TLS


def test_tls_in_and_out_with_mutual_certificates_and_both_transports_audited(
    tmp_path, pki, tls_pacs, node_factory, dicom_bundle, kit
) -> None:
    orthanc, port = tls_pacs
    tls_port, audit = kit.free_port(), tmp_path / "audit.jsonl"
    node = node_factory(orthanc.forward, port, *_tls_args(pki, tls_port), "--forward-tls", "--audit", str(audit))
    node.start()
    listening = node.events("listening")[-1]
    assert listening["port"] == port and listening["tls_port"] == tls_port and listening["forward_tls"] is True

    via_tls = kit.make_dx(kit.phantom(64, 64, 70))
    via_tls.save_as(tmp_path / "tls.dcm", enforce_file_format=True)
    proc = _storescu(pki, tls_port, tmp_path / "tls.dcm")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    via_plain = kit.make_dx(kit.phantom(64, 64, 71))
    assert kit.send(port, [via_plain]) == [0]
    node.wait_events("forwarded", 2, timeout=180)

    # Refused at the TLS layer: no client certificate, one from another CA; the node goes on.
    assert not _tls_associate(tls_port, _client(pki, None))
    assert not _tls_associate(tls_port, _client(pki, "stranger"))
    assert _tls_associate(tls_port, _client(pki, "scanner"))
    # Orthanc's port speaks TLS only: a plain association to it is not established.
    with pytest.raises(ConnectionError):
        kit.send(orthanc.dicom_port, [via_plain], ae_title="SCANNER")
    assert orthanc.count("SR") == 2 and orthanc.count("OT") == 2
    assert node.terminate() == 0

    records = _audit(audit)
    accepted = [r for r in records if r["event"] == "association_accepted"]
    assert {r["transport"] for r in accepted} == {"tls", "plain"}
    tls_peer = next(r for r in accepted if r["transport"] == "tls")["ActiveParticipant"][0]
    assert "CN=scanner.omsf2.test" in tls_peer["TLSPeerSubject"] and tls_peer["UserID"] == "SCANNER"
    rejected = [r for r in records if r["event"] == "tls_rejected"]
    assert len(rejected) >= 2 and all(
        r["EventID"]["code"] == "110113" and r["EventOutcomeIndicator"] == 4 for r in rejected
    )
    received = [r for r in records if r["event"] == "instance_received"]
    assert {r["ParticipantObject"][0]["ParticipantObjectID"] for r in received} == {
        str(via_tls.SOPInstanceUID),
        str(via_plain.SOPInstanceUID),
    }
    assert all(r["EventID"]["code"] == "110104" and r["EventActionCode"] == "C" for r in received)
    sent = [r for r in records if r["event"] == "result_sent"]
    assert len(sent) == 2 and {r["transport"] for r in sent} == {"dimse+tls"}  # C-STORE over TLS (STOW is "stow")
    started = next(r for r in records if r["event"] == "node_started")
    assert started["EventTypeCode"]["code"] == "110120" and started["configuration"]["mutual_tls"] is True
    loaded = next(r for r in records if r["event"] == "bundle_loaded")
    assert loaded["ParticipantObject"][0]["ParticipantObjectID"] == listening["bundle_sha256"]
    assert records[-1]["event"] == "node_stopped"
    assert "OMSF2TEST" not in audit.read_text()  # no patient ID without --audit-phi


def test_tls_only_node_and_bad_tls_options(tmp_path, pki, kit, dicom_bundle, node_factory) -> None:
    sink_port = kit.free_port()
    tls_port = kit.free_port()
    node = node_factory(f"SINK@127.0.0.1:{sink_port}", kit.free_port(), *_tls_args(pki, tls_port), "--no-plain").start()
    assert node.events("listening")[-1]["port"] is None
    with pytest.raises(ConnectionError):  # nothing listens without TLS
        kit.send(node.port, [kit.make_dx(kit.phantom(40, 40, 1))])
    assert _tls_associate(tls_port, _client(pki, "scanner"))
    assert node.terminate() == 0
    base = [
        "serve",
        "dicom",
        "--model",
        str(dicom_bundle),
        "--forward",
        "A@127.0.0.1:1",
        "--spool",
        str(tmp_path / "s"),
    ]
    for extra, message in [
        (["--tls-port", "0"], "--tls-port needs --tls-cert and --tls-key"),
        (["--tls-cert", str(pki["node"]["cert"])], "--tls-cert and --tls-key go together"),
        (["--no-plain"], "--no-plain leaves no listener"),
        (["--forward-tls"], "--forward-tls needs --tls-ca"),
        (["--tls-port", "0", "--tls-cert", str(pki["ca"]), "--tls-key", str(pki["ca"])], "TLS: cannot load"),
    ]:
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 1 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "s").exists()  # refused before a spool was made


# ---------------------------------------------------------------------------- acceptance 3: secure defaults


def test_a_non_loopback_host_needs_allow_ae(dicom_bundle, tmp_path) -> None:
    args = ["serve", "dicom", "--model", str(dicom_bundle), "--forward", "A@127.0.0.1:1", "--host", "0.0.0.0"]
    res = runner.invoke(app, [*args, "--spool", str(tmp_path / "s")])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert "--host 0.0.0.0 reaches other machines: name the callers allowed with --allow-ae" in res.output
    from omsf2.serve.dicom_config import Destination, NodeConfig

    dest = Destination.parse("A@127.0.0.1:1")
    assert NodeConfig(model="m", forward=dest, host="0.0.0.0", allow_ae=("CR1",)).allow_ae == ("CR1",)
    for host in ("127.0.0.1", "::1", "localhost", "127.1.2.3"):
        assert NodeConfig(model="m", forward=dest, host=host).host == host
    with pytest.raises(ValueError, match="reaches other machines"):
        NodeConfig(model="m", forward=dest, host="pacs.example.org")


def test_an_instance_over_the_pixel_bound_gets_a700_and_the_node_goes_on(
    tmp_path, pacs, node_factory, dicom_bundle, kit
) -> None:
    orthanc, port = pacs
    audit = tmp_path / "audit.jsonl"
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(10)
    syslog = f"udp://127.0.0.1:{collector.getsockname()[1]}"
    extra = [
        "--max-pixels",
        "5000",
        "--max-pdu",
        "16384",
        "--audit",
        str(audit),
        "--audit-phi",
        "--audit-syslog",
        syslog,
    ]
    node = node_factory(orthanc.forward, port, *extra).start()
    small, big, after = (kit.make_dx(kit.phantom(h, h, 80 + h)) for h in (64, 100, 60))
    with kit.association(port) as assoc:
        assert assoc.acceptor.maximum_length == 16384  # the node's bounded PDU
        statuses = [int(assoc.send_c_store(ds).Status) for ds in (small, big, after)]
    assert statuses == [0, 0xA700, 0]
    node.wait_events("forwarded", 2, timeout=120)
    assert node.terminate() == 0
    refused = [r for r in _audit(audit) if r["event"] == "instance_refused"]
    assert len(refused) == 1 and refused[0]["EventOutcomeIndicator"] == 8
    assert "10000 pixels exceed the bound of 5000" in refused[0]["EventOutcomeDescription"]
    assert refused[0]["ParticipantObject"][0]["PatientID"] == "OMSF2TEST"  # --audit-phi keeps it
    messages = []
    while True:
        try:
            messages.append(collector.recv(65536).decode())
        except TimeoutError:
            break
        if '"event":"node_stopped"' in messages[-1]:
            break
    collector.close()
    assert messages and all(m.startswith(("<85>1 ", "<84>1 ", "<83>1 ")) for m in messages)  # facility 10
    assert any('"event":"instance_refused"' in m and m.startswith("<83>1 ") for m in messages)
    assert any(" omsf2 " in m and " omsf2-audit - {" in m for m in messages)


def test_a_full_spool_refuses_new_instances_and_loses_none_it_accepted(
    tmp_path, pacs, node_factory, dicom_bundle, kit
) -> None:
    orthanc, port = pacs
    dead = f"ORTHANC@127.0.0.1:{kit.free_port()}"  # results wait in the spool
    # --no-keep-sources: the bound meets received images and results only (kept sources are evicted first)
    node = node_factory(dead, port, "--max-spool", "1M", "--retry-delay", "0.2", "--max-retry-delay", "0.5",
                        "--no-keep-sources").start()  # fmt: skip
    # The results are compressed (a JPEG-LS PM, an SR): how many fill 1 MiB depends on the images, so
    # images are sent until the first refusal, and two more after it.
    images, statuses = [], []
    while len(images) < 80 and statuses.count(0xA700) < 3:
        ds = kit.make_dx(kit.phantom(512, 512, 90 + len(images)))
        images.append(ds)
        statuses += kit.send(port, [ds])  # one at a time, each predicted before the next: the bound meets results
        if statuses[-1] == 0:
            kit.wait_for(lambda u=str(ds.SOPInstanceUID): any(e["sop_instance_uid"] == u for e in node.events("retry")),
                         60, "the result to wait in the spool")  # fmt: skip
    accepted = [str(ds.SOPInstanceUID) for ds, st in zip(images, statuses, strict=True) if st == 0]
    assert 0 < len(accepted) < len(images) and set(statuses) == {0, 0xA700}
    assert statuses == sorted(statuses)  # once full, it stays full while the PACS is down
    assert any("(--max-spool)" in e["reason"] for e in node.events("refused"))
    node.terminate()
    node.start("--forward", orthanc.forward)
    node.wait_events("forwarded", len(accepted), timeout=180)
    assert {i["sop"] for i in orthanc.instances("SR")} == {
        node_result_uids(u, _model(dicom_bundle)).sr for u in accepted
    }
    assert kit.send(port, [images[-1]]) == [0]  # delivered results freed their bytes
    assert node.terminate() == 0


def _model(bundle: Path) -> Any:
    from omsf2.runtime.bundle import load_bundle
    from omsf2.serve.dicom_results import ModelInfo

    b = load_bundle(bundle)
    return ModelInfo("", "", b.digest, "ort", b.classes)


# ---------------------------------------------------------------------------- acceptance 1 and 0: trust


def test_serve_dicom_runs_a_signed_bundle_under_trust_and_refuses_the_rest(tmp_path, dicom_bundle, node_factory, kit):
    from omsf2.runtime.bundle import BundleSpec, make_bundle
    from omsf2.runtime.trust import generate_keypair

    key, pub = generate_keypair(tmp_path / "site")
    _, other = generate_keypair(tmp_path / "other")
    signed = make_bundle(BundleSpec(str(dicom_bundle.parent / "export"), str(tmp_path / "signed"), sign=str(key))).root
    digest = hashlib.sha256((signed / "manifest.json").read_bytes()).hexdigest()
    base = ["serve", "dicom", "--forward", "A@127.0.0.1:1", "--spool", str(tmp_path / "s")]
    cases = [
        (["--model", str(signed), "--trust", str(other)], "which is not a --trust key"),
        (["--model", str(signed), "--expect-sha256", "0" * 64], "is not the pinned --expect-sha256"),
        (["--model", str(dicom_bundle), "--trust", str(pub)], "is not signed (no manifest.sig)"),
        (["--model", str(dicom_bundle.parent / "export")], "is an export folder, not a bundle"),
    ]
    reversed_classes = Path(shutil.copytree(signed, tmp_path / "reversed"))
    (reversed_classes / "manifest.sig").unlink()
    m = json.loads((reversed_classes / "manifest.json").read_text())
    m["classes"] = m["classes"][::-1]
    (reversed_classes / "manifest.json").write_text(json.dumps(m))
    cases.append((["--model", str(reversed_classes)], "manifest.json's classes differ from omsf2.classes"))
    for args, message in cases:
        res = runner.invoke(app, [*base, *args])
        assert res.exit_code == 1 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert not (tmp_path / "s").exists()  # nothing left behind
    audit = tmp_path / "audit.jsonl"
    node = node_factory("A@127.0.0.1:1", kit.free_port(), "--trust", str(pub), "--expect-sha256", digest,
                        "--audit", str(audit), spool="trusted")  # fmt: skip
    node.args[node.args.index("--model") + 1] = str(signed)
    node.start()
    assert node.terminate() == 0
    loaded = next(r for r in _audit(audit) if r["event"] == "bundle_loaded")["ParticipantObject"][0]
    assert loaded["ParticipantObjectID"] == digest and loaded["trust"] == "signature" and len(loaded["signer"]) == 64
    export_node = node_factory("A@127.0.0.1:1", kit.free_port(), "--allow-unsigned", spool="export")
    export_node.args[export_node.args.index("--model") + 1] = str(dicom_bundle.parent / "export")
    export_node.start()
    assert export_node.events("unsigned_model")
    assert export_node.terminate() == 0


def _tamper(bundle: Path, other: Path, case: str) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    if case == "reversed classes":
        m["classes"] = m["classes"][::-1]
    elif case == "changed mean":
        m["preprocess"]["mean"] = [0.6]
    else:  # another model's file, its hash updated to match
        shutil.copy(other / "model.onnx", bundle / "model.onnx")
        m["files"]["model.onnx"] = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="module")
def other_model(tiny_bundle) -> Path:
    """Another model's bundle (other weights: another checkpoint sha256), same classes and preprocessing."""
    return tiny_bundle("other-model", seed=1)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("reversed classes", "manifest.json's classes differ from omsf2.classes in 'model.onnx'"),
        ("changed mean", "manifest.json's preprocess mean differs from omsf2.preprocess in 'model.onnx'"),
        ("another model", "manifest.json's checkpoint sha256 differs from omsf2.checkpoint_sha256 in 'model.onnx'"),
    ],
)
def test_serve_dicom_refuses_a_manifest_that_disagrees_with_its_model(
    case: str, message: str, dicom_bundle: Path, other_model: Path, tmp_path: Path
) -> None:
    other = other_model
    bundle = Path(shutil.copytree(dicom_bundle, tmp_path / "bundle"))
    _tamper(bundle, other, case)
    args = ["serve", "dicom", "--model", str(bundle), "--forward", "A@127.0.0.1:1", "--spool", str(tmp_path / "s")]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert res.output.strip() == f"error: bundle '{bundle}': {message}" + (
        ": it is another model's file" if case == "another model" else ""
    )
    assert not (tmp_path / "s").exists()
