"""DICOM over TLS for the node: SSL contexts, the TLS listener, and who is on the other end.

pynetdicom takes an ``ssl.SSLContext`` for a listener (``AE.start_server(..., ssl_context=)``) and
for an association it requests (``tls_args=(context, server_hostname)``); this module builds them
from PEM files with TLS 1.2 or newer, as the BCP 195 profiles of DICOM PS3.15 Annex B ask, and with
a CA given, the listener requires and verifies a client certificate (mutual TLS).

pynetdicom's server does the TLS handshake in its accept loop, so one caller that connects and
sends nothing would hold up every other caller. :class:`NodeAE` makes the listener accept first
and shake hands in the connection's own thread, under the network timeout, and reports a failed
handshake (no client certificate, an unknown CA) through ``on_tls_failure`` for the audit trail.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

__all__ = ["NodeAE", "client_context", "peer_subject", "server_context"]
#: RFC 4514's short names of the attributes ``ssl`` spells out.
_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "domainComponent": "DC",
}


def server_context(cert: str | None, key: str | None, ca: str | None) -> ssl.SSLContext:
    """The listener's context: our certificate; with ``ca``, a client certificate is required and verified.

    Raises:
        ValueError: a file that is not a PEM certificate or key (one line).
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx, cert, key, ca)
    if ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: str, cert: str | None, key: str | None) -> ssl.SSLContext:
    """The context to forward with: the PACS verified against ``ca`` (host name included), our certificate shown.

    Raises:
        ValueError: a file that is not a PEM certificate or key (one line).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx, cert, key, ca)
    return ctx


def _load(ctx: ssl.SSLContext, cert: str | None, key: str | None, ca: str | None) -> None:
    try:
        if cert is not None:
            ctx.load_cert_chain(cert, key)
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as e:
        raise ValueError(f"TLS: cannot load the certificate, key or CA ({e.strerror or e})") from None


def peer_subject(sock: Any) -> str | None:
    """The verified peer certificate's subject as ``CN=...,O=...``; None without TLS or certificate."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    try:
        cert = sock.getpeercert()
    except (ValueError, OSError):
        return None
    if not cert:
        return None
    subject: Any = cert.get("subject", ())
    return ",".join(f"{_SHORT.get(k, k)}={v}" for rdn in subject for k, v in rdn)


class _HandshakeInThreadServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, the TLS handshake moved from the accept loop to the connection's thread."""

    on_tls_failure: Callable[[tuple[str, int], str], None] | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept only; a TLS socket is wrapped without its handshake (see :meth:`process_request_thread`)."""
        if self.socket is None:  # socketserver closed it: nothing more to accept
            raise OSError("the listening socket is closed")
        client, address = self.socket.accept()
        if self.ssl_context:
            client.settimeout(self.ae.network_timeout)
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Shake hands (under the network timeout), then serve the association as pynetdicom does."""
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
                request.settimeout(None)  # pynetdicom's own timeouts govern the association from here
            except (OSError, ValueError) as e:
                reason = " ".join(str(e).split()) or type(e).__name__
                if self.on_tls_failure is not None:
                    self.on_tls_failure(client_address, reason)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


class NodeAE(AE):
    """pynetdicom's AE whose non-blocking listeners shake hands off the accept loop."""

    on_tls_failure: Callable[[tuple[str, int], str], None] | None = None

    def make_server(self, address: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """As pynetdicom's, with the threaded server replaced by one that handshakes per connection."""
        if kwargs.get("server_class") is ThreadedAssociationServer:
            kwargs["server_class"] = _HandshakeInThreadServer
        server: Any = super().make_server(address, **kwargs)
        server.on_tls_failure = self.on_tls_failure
        return server
