"""Results over DICOMweb: STOW-RS to Orthanc's DICOMweb plugin, under the spool's exactly-once rules.

Orthanc runs with Debian's ``orthanc-dicomweb`` plugin (started by the tests). The hard case is a
node killed after Orthanc stored an object and before the node recorded the acknowledgement: an HTTP
proxy in this process passes each request to Orthanc and holds the responses, the node is killed
with SIGKILL while it waits, and after a restart Orthanc must hold each result exactly once.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

from omsf2.runtime.bundle import load_bundle
from omsf2.serve.dicom_node import node_result_uids
from omsf2.serve.dicom_results import ModelInfo


def _want(bundle: Path, sources: list[str]) -> dict[str, set[str]]:
    b = load_bundle(bundle)
    uids = [node_result_uids(s, ModelInfo(b.name, b.version, b.digest, "ort", b.classes)) for s in sources]
    return {"sr": {u.sr for u in uids}, "pm": {u.pm for u in uids}, "sc": set(), "image": set()}


class HoldingProxy:
    """An HTTP proxy to ``target``: each POST is passed on (so the target stores it), and while ``hold`` is set
    the response is held back until the test lets go; ``passed`` counts the requests the target answered."""

    def __init__(self, target: str) -> None:
        self.target, self.hold, self.passed = target, threading.Event(), 0
        self.release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items() if k != "Host"}
                url = proxy.target + self.path.removeprefix("/dicom-web")
                req = urllib.request.Request(url, data=body, headers=headers)
                with urllib.request.urlopen(req, timeout=60) as resp:
                    status, answer, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
                proxy.passed += 1
                if proxy.hold.is_set():
                    proxy.release.wait(120)  # the node is killed meanwhile: this answer never arrives
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def test_stow_delivers_exactly_once_across_a_kill_during_delivery(tmp_path, kit, node_factory, dicom_bundle,
                                                                  orthanc_factory) -> None:  # fmt: skip
    orthanc = orthanc_factory("web", dicomweb=True)
    proxy = HoldingProxy(orthanc.stow_url)
    try:
        port = kit.free_port()
        node = node_factory(None, port, "--forward-stow", proxy.url, "--retry-delay", "0.3").start()
        images = [kit.make_dx(kit.phantom(64, 64, 200 + i)) for i in range(4)]
        proxy.hold.set()
        assert kit.send(port, images) == [0] * 4
        kit.wait_for(lambda: proxy.passed >= 1, 120, "Orthanc to store a first object through the proxy")
        node.kill()  # SIGKILL: Orthanc has the object, the node never saw the acknowledgement
        stored = orthanc.get("/statistics")["CountInstances"]
        assert stored >= 1 and not node.events("forwarded")
        proxy.hold.clear()
        proxy.release.set()
        node.start()
        node.wait_events("forwarded", 4, timeout=180)
        assert node.terminate() == 0
    finally:
        proxy.close()
    sources = [str(ds.SOPInstanceUID) for ds in images]
    assert orthanc.by_kind() == _want(dicom_bundle, sources)  # each SR and PM once, nothing else
    assert orthanc.get("/statistics")["CountInstances"] == 8
    assert {e["destination"] for e in node.events("forwarded")} == {proxy.url}


def test_c_store_and_stow_together_each_get_every_object_once(tmp_path, kit, node_factory, dicom_bundle,
                                                              orthanc_factory) -> None:  # fmt: skip
    """Both destinations; the DICOMweb server is down at first: the C-STORE side is not sent twice meanwhile."""
    pacs = orthanc_factory("pacs")
    web = orthanc_factory("web", dicomweb=True)
    web.stop()
    port = kit.free_port()
    node = node_factory(pacs.forward, port, "--forward-stow", web.stow_url, "--retry-delay", "0.3",
                        "--max-retry-delay", "1").start()  # fmt: skip
    images = [kit.make_dx(kit.phantom(64, 64, 210 + i)) for i in range(3)]
    assert kit.send(port, images) == [0] * 3
    retries = node.wait_events("retry", 6, timeout=120)
    assert all("cannot reach" in e["error"] for e in retries)
    sources = [str(ds.SOPInstanceUID) for ds in images]
    kit.wait_for(lambda: pacs.by_kind() == _want(dicom_bundle, sources), 60, "the PACS to hold every result")
    web.start()
    node.wait_events("forwarded", 3, timeout=180)
    assert node.terminate() == 0
    for orthanc in (pacs, web):
        assert orthanc.by_kind() == _want(dicom_bundle, sources)
        assert orthanc.get("/statistics")["CountInstances"] == 6
    records = [json.loads(p.read_text()) for p in (tmp_path / "spool" / "delivered").glob("*.json")]
    assert len(records) == 3  # each object acknowledged once per destination, recorded as it was
    assert all(sorted(r["sent"]) == ["dimse:pm.dcm", "dimse:sr.dcm", "stow:pm.dcm", "stow:sr.dcm"] for r in records)
