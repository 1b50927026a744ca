"""Clinical gating and re-analysis, end to end: the node against a real Orthanc, ``omsf2 predict`` beside it.

What the node must not analyse (a CT stored as CR, a tibia, a lateral view, an RGB image) is stored,
declined with its reason, logged and audited, and produces nothing at the PACS; a DICOM without
Modality is refused at C-STORE (the sender is told). ``omsf2 predict`` gives the same reasons for the
same files (the C library's are held to them in tests/runtime). A resend under the same bundle is
a duplicate; under a new bundle it is analysed again, and ``--reanalyse`` re-runs what the spool kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.runtime.bundle import load_bundle
from omsf2.serve.dicom_node import node_result_uids
from omsf2.serve.dicom_results import ModelInfo

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def _uids(bundle: Path, source: str) -> Any:
    b = load_bundle(bundle)
    return node_result_uids(source, ModelInfo(b.name, b.version, b.digest, "ort", b.classes))


def _not_applicable(kit: Any) -> dict[str, Any]:
    """The four images the gating declines, each a CR or DX instance a scanner could send."""
    from pydicom.data import get_testdata_file

    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CR_STORAGE  # a CT stored with a CR SOP class
    ct.StudyInstanceUID = ct.StudyInstanceUID or pydicom.uid.generate_uid()
    tibia = pydicom.dcmread(get_testdata_file("RG3_UNCR.dcm"))  # a real CR of a tibia: EXTREMITY
    lateral = kit.make_dx(kit.phantom(80, 64, 3), ViewPosition="LL")
    rgb = kit.make_dx(kit.phantom(40, 40, 4))
    rgb.set_pixel_data(np.zeros((40, 40, 3), np.uint8), "RGB", 8)
    return {"ct-as-cr": ct, "tibia": tibia, "lateral": lateral, "rgb": rgb}


def test_what_is_not_applicable_is_declined_with_its_reason_and_the_node_goes_on(
    pacs, node_factory, dicom_bundle, kit, tmp_path
) -> None:
    orthanc, port = pacs
    audit = tmp_path / "audit.jsonl"
    node = node_factory(orthanc.forward, port, "--audit", str(audit)).start()
    declined = _not_applicable(kit)
    no_modality = kit.make_dx(kit.phantom(40, 40, 5))
    del no_modality.Modality
    good = kit.make_dx(kit.phantom(64, 64, 6))
    assert kit.send(port, [*declined.values(), no_modality, good]) == [0, 0, 0, 0, 0xA900, 0]
    node.wait_events("forwarded", 1, timeout=180)
    events = node.wait_events("declined", 4, timeout=60)
    reasons = {e["sop_instance_uid"]: e["reason"] for e in events}
    want = {
        "ct-as-cr": "not applicable: modality CT (this bundle accepts CR, DR, DX)",
        "tibia": "not applicable: body part EXTREMITY (this bundle accepts CHEST)",
        "lateral": "not applicable: view LL (this bundle accepts AP, PA)",
        "rgb": "not applicable: photometric interpretation RGB (a radiograph is MONOCHROME1 or MONOCHROME2)",
    }
    assert {k: reasons[str(ds.SOPInstanceUID)] for k, ds in declined.items()} == want
    refused = node.events("refused")
    assert [e["reason"] for e in refused] == ["missing required attribute Modality"]
    assert node.terminate() == 0

    # Nothing reached the PACS for them: only the good image's SR and PM.
    kinds = orthanc.by_kind()
    uids = _uids(dicom_bundle, str(good.SOPInstanceUID))
    assert kinds == {"sr": {uids.sr}, "pm": {uids.pm}, "sc": set(), "image": set()}
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    audited = {r["ParticipantObject"][0]["ParticipantObjectID"]: r["EventOutcomeDescription"]
               for r in records if r["event"] == "instance_declined"}  # fmt: skip
    assert sorted(audited.values()) == sorted(want.values())
    status = CliRunner().invoke(app, ["serve", "dicom", "--status", str(tmp_path / "spool")], terminal_width=300)
    assert all(f"declined {ds.SOPInstanceUID}: {want[k]}" in status.output for k, ds in declined.items())

    # omsf2 predict gives the same reasons for the same files (and the missing Modality its own).
    files = []
    for name, ds in [*declined.items(), ("no-modality", no_modality)]:
        files.append(tmp_path / f"{name}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    out = tmp_path / "predict.json"
    res = CliRunner().invoke(app, ["predict", *map(str, files), "--model", str(dicom_bundle), "--json", str(out)])
    assert res.exit_code == 1
    errors = {Path(r["file"]).stem: r["error"] for r in json.loads(out.read_text())["results"]}
    assert errors == {**want, "no-modality": "not applicable: no Modality (this bundle accepts CR, DR, DX)"}


def test_a_new_bundle_reanalyses_and_the_same_bundle_does_not(pacs, node_factory, dicom_bundle, tiny_bundle, kit):
    orthanc, port = pacs
    images = [kit.make_dx(kit.phantom(64, 64, 30 + i)) for i in range(2)]
    first, second = (str(ds.SOPInstanceUID) for ds in images)
    node = node_factory(orthanc.forward, port).start()
    assert kit.send(port, images) == [0, 0]
    node.wait_events("forwarded", 2, timeout=180)
    assert kit.send(port, images[:1]) == [0]  # the same bundle: a duplicate, not a second analysis
    kit.wait_for(lambda: node.events("duplicate"), 30, "the duplicate")
    assert node.events("duplicate")[0]["state"] == "delivered" and len(node.events("predicted")) == 2
    assert node.terminate() == 0

    v2 = tiny_bundle("v2", version="2.0.0", out="bundle-v2")  # the same weights, a new manifest: a new digest
    node.start("--model", str(v2))
    assert kit.send(port, images[:1]) == [0]  # a resend under the new bundle is analysed again
    forwarded = node.wait_events("forwarded", 3, timeout=180)
    assert forwarded[-1]["sop_instance_uid"] == first and forwarded[-1]["sr_uid"] == _uids(v2, first).sr
    assert node.terminate() == 0

    node.start(once=("--reanalyse",))  # what the spool kept and v2 has not seen: the second image
    assert node.events("reanalyse", since_start=True)[0]["images"] == 1
    forwarded = node.wait_events("forwarded", 4, timeout=180)
    assert forwarded[-1]["sop_instance_uid"] == second
    assert node.terminate() == 0

    want_sr = {_uids(b, u).sr for b in (dicom_bundle, v2) for u in (first, second)}
    kinds = orthanc.by_kind()
    assert kinds["sr"] == want_sr and len(kinds["pm"]) == 4  # one result per image per bundle, none twice
    versions = set()
    for i in orthanc.instances(sop_class="1.2.840.10008.5.1.4.1.1.88.34"):
        sr = pydicom.dcmread(orthanc.file(i["id"], Path(node.log.parent) / "sr.dcm"))
        groups = sr.ContentSequence
        versions |= {str(item.TextValue) for item in _walk(groups) if _concept(item) == "111003"}
    assert versions == {"1.0.0", "2.0.0"}  # the algorithm's version from each manifest


def _walk(items: Any) -> Any:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _concept(item: Any) -> str:
    seq = item.get("ConceptNameCodeSequence")
    return str(seq[0].CodeValue) if seq else ""
