"""Peers of the DICOM node tests that run in the test's own process: a Storage SCP, an event log, a CA.

Loaded by ``conftest.py`` (by path, as conftest itself is loaded by ``bench/dicom_load.py``).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StoreSink:
    """A minimal Storage SCP in this process (pynetdicom): the SOP Instance UIDs it acknowledged.

    Faster than Orthanc where a test only needs a destination that acknowledges (or none yet:
    ``start()`` may come later, on the port chosen at construction).
    """

    def __init__(self, ae_title: str = "SINK", port: int | None = None) -> None:
        self.ae_title, self.port = ae_title, port or free_port()
        self.received: list[str] = []
        self._server: Any = None

    @property
    def forward(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def start(self) -> StoreSink:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
        from pynetdicom.presentation import AllStoragePresentationContexts

        def on_store(event: Any) -> int:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
            return 0

        ae = AE(ae_title=self.ae_title)
        for cx in AllStoragePresentationContexts:  # compressed too: the node's PM is JPEG-LS, its SC JPEG
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class EventLog(logging.Handler):
    """The node's JSON-line events, as dicts, for an in-process node."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append({"event": record.getMessage(), **getattr(record, "fields", {})})

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == name]


def make_pki(root: Path) -> dict[str, dict[str, Path] | Path]:
    """A test CA and certificates it signs (RSA 2048, PEM): ``node``, ``orthanc``, ``scanner`` (each
    with ``cert`` and ``key``, for 127.0.0.1 and localhost, server and client use), ``stranger``
    (signed by another CA), and ``ca``: the CA's certificate."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    root.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> Any:
        return x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "omsf2 tests"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        )

    def key() -> Any:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def write(stem: str, cert: Any, k: Any) -> dict[str, Path]:
        (root / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem = k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        (root / f"{stem}.key").write_bytes(pem)
        return {"cert": root / f"{stem}.crt", "key": root / f"{stem}.key"}

    def ca(cn: str) -> tuple[Any, Any]:
        k = key()
        cert = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(k.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(k, hashes.SHA256())
        )  # fmt: skip
        return cert, k

    def leaf(cn: str, issuer: tuple[Any, Any]) -> tuple[Any, Any]:
        k = key()
        san = x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        )
        eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        cert = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer[0].subject).public_key(k.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(eku, critical=False).sign(issuer[1], hashes.SHA256())
        )  # fmt: skip
        return cert, k

    authority, other = ca("omsf2 test CA"), ca("someone else's CA")
    (root / "ca.crt").write_bytes(authority[0].public_bytes(serialization.Encoding.PEM))
    out: dict[str, Any] = {"ca": root / "ca.crt"}
    for cn in ("node", "orthanc", "scanner"):
        out[cn] = write(cn, *leaf(f"{cn}.omsf2.test", authority))
    out["stranger"] = write("stranger", *leaf("stranger.example", other))
    return out
