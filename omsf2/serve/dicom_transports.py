"""Where the DICOM node delivers results: C-STORE to a PACS, or STOW-RS to a DICOMweb server.

Each destination is a small class with one interface (``open``, ``send`` one file, ``close``) that the
forwarder (:mod:`omsf2.serve.dicom_forward`) drives with the same spool rules for both: an object
counts as delivered only when the destination acknowledged it, and is then never sent again.

- :class:`DimseDestination` (``--forward AE@HOST:PORT``): one pynetdicom association per round
  (TLS with ``--forward-tls``), proposing each result's SOP class in the transfer syntax its file
  is in; success and warning statuses (0x0000, 0xB000-0xBFFF) acknowledge.
- :class:`StowDestination` (``--forward-stow URL``): one HTTP POST per object to ``URL/studies``
  (``multipart/related; type="application/dicom"``, PS3.18 10.5), over HTTPS with ``--tls-ca``
  where the URL says so. 200 acknowledges; 202 acknowledges unless the response's Failed SOP
  Sequence names the instance; anything else (409, 5xx, no answer) is a failed try.

The trade-off of one request per object: more round trips than one multipart request per result,
in exchange for an acknowledgement per object, which is what makes a retry after a failure or a
kill send only what was not stored.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Protocol

from omsf2.serve.dicom_config import STATUS_SUCCESS, NodeConfig


class SendFailed(Exception):
    """A destination did not acknowledge (one line; ``code``: its DICOM or HTTP status, 0 if none)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class Transport(Protocol):
    """A destination: ``key`` names it in ``meta.json``, ``label`` in events, ``transport`` in the audit."""

    key: str
    label: str
    transport: str

    def open(self) -> Any:
        """A connection for one round (raises SendFailed)."""
        ...

    def send(self, session: Any, path: Path) -> None:
        """Send one file; returns when acknowledged (raises SendFailed)."""
        ...

    def close(self, session: Any) -> None:
        """Release the connection."""
        ...

    def participant(self) -> dict[str, Any]:
        """The destination as an audit ActiveParticipant."""
        ...


def _no_delay(assoc: Any) -> None:
    """Turn Nagle's algorithm off on an association's socket (pynetdicom leaves it on).

    A C-STORE goes out as several small writes (the command set's PDU, then the data set's), and with
    Nagle each write after the first waits for the peer's delayed ACK, 40 ms on Linux: delivering to
    a local Orthanc took 80 ms an object (bench/dicom_load.py), nearly all of it waiting.
    """
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class DimseDestination:
    """C-STORE to ``cfg.forward`` (see the module docstring)."""

    key, transport = "dimse", "dimse"

    def __init__(self, cfg: NodeConfig, tls: Any) -> None:
        if cfg.forward is None:
            raise ValueError("a C-STORE destination needs --forward AE@HOST:PORT")
        self.cfg, self.dest, self.tls = cfg, cfg.forward, tls
        self.label = str(cfg.forward)
        if tls is not None:
            self.transport = "dimse+tls"

    def open(self) -> Any:
        """Associate, proposing each result SOP class in the transfer syntax its files are written in."""
        from pynetdicom import AE

        from omsf2.serve.dicom_build import FILE_SYNTAXES, SOP_CLASSES

        ae = AE(ae_title=self.cfg.ae_title)
        for kind, uid in SOP_CLASSES.items():
            ae.add_requested_context(uid, [FILE_SYNTAXES[kind]])
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.maximum_pdu_size = self.cfg.max_pdu
        tls = None if self.tls is None else (self.tls, self.dest.host)
        try:
            assoc = ae.associate(self.dest.host, self.dest.port, ae_title=self.dest.ae_title, tls_args=tls)
        except OSError as e:  # a TLS handshake refused (certificate, CA, host name)
            raise SendFailed(f"cannot associate with {self.dest}: {_one_line(e)}") from None
        if not assoc.is_established:
            raise SendFailed(f"cannot associate with {self.dest}")
        _no_delay(assoc)
        return assoc

    def send(self, session: Any, path: Path) -> None:
        """C-STORE the file (streamed from disk, not re-encoded)."""
        try:
            status = session.send_c_store(path)
        except Exception as e:  # a dropped association, a context the peer refused
            raise SendFailed(_one_line(e)) from None
        code = int(getattr(status, "Status", -1)) if status else -1
        if code != STATUS_SUCCESS and not 0xB000 <= code <= 0xBFFF:  # warnings are stored too
            why = "no response" if code == -1 else f"status 0x{code:04X}"
            raise SendFailed(f"{self.dest} answered {why}", max(code, 0))

    def close(self, session: Any) -> None:
        """Release the association."""
        if session.is_established:
            session.release()

    def participant(self) -> dict[str, Any]:
        """The PACS as an audit participant."""
        d = self.dest
        return {"UserID": d.ae_title, "NetworkAccessPointID": f"{d.host}:{d.port}", "UserIsRequestor": False}


class StowDestination:
    """STOW-RS to ``cfg.forward_stow`` (see the module docstring)."""

    key, transport = "stow", "stow-rs"

    def __init__(self, cfg: NodeConfig, https: ssl.SSLContext | None) -> None:
        if cfg.forward_stow is None:
            raise ValueError("a STOW-RS destination needs --forward-stow URL")
        self.url = cfg.forward_stow.rstrip("/")
        self.label = self.url
        self.timeout = 30.0
        self.context: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            self.context = https if https is not None else ssl.create_default_context()
            self.transport = "stow-rs+tls"

    def open(self) -> Any:
        """Nothing to open: each object is one request (urllib keeps no connection)."""
        return None

    def send(self, session: Any, path: Path) -> None:
        """POST one file to ``URL/studies``; returns when the server stored it."""
        boundary = f"omsf2-{uuid.uuid4().hex}"
        body = b"".join([
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            path.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ])  # fmt: skip
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        req = urllib.request.Request(f"{self.url}/studies", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                status, answer = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            raise SendFailed(f"{self.url} answered HTTP {e.code} {e.reason}", e.code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SendFailed(f"cannot reach {self.url}: {_one_line(reason)}") from None
        if status == 202 and _failed_sop(answer):
            raise SendFailed(f"{self.url} answered HTTP 202 without storing the instance", status)
        if status not in (200, 202):
            raise SendFailed(f"{self.url} answered HTTP {status}", status)

    def close(self, session: Any) -> None:
        """Nothing to close."""

    def participant(self) -> dict[str, Any]:
        """The DICOMweb server as an audit participant."""
        return {"UserID": self.url, "NetworkAccessPointID": self.url, "UserIsRequestor": False}


def _failed_sop(answer: bytes) -> bool:
    """Whether a STOW-RS response (DICOM JSON) lists a Failed SOP Sequence (0008,1198)."""
    try:
        doc = json.loads(answer or b"{}")
    except ValueError:
        return False
    return bool((doc.get("00081198") or {}).get("Value")) if isinstance(doc, dict) else False


def transports_of(cfg: NodeConfig, tls: Any, https: ssl.SSLContext | None = None) -> list[Transport]:
    """The destinations ``cfg`` names: ``--forward`` (C-STORE) and/or ``--forward-stow`` (STOW-RS).

    ``tls`` is ``--forward-tls``'s client context; ``https`` verifies an https STOW server (None: the
    system's CAs).
    """
    out: list[Transport] = []
    if cfg.forward is not None:
        out.append(DimseDestination(cfg, tls))
    if cfg.forward_stow is not None:
        out.append(StowDestination(cfg, https))
    return out
