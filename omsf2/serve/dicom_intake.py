"""The DICOM node's receiving side: associations, C-STORE checks and bounds, store-then-acknowledge.

pynetdicom calls these handlers on its association threads (plain and TLS listeners alike). An
instance is checked (UIDs, a grayscale header, the pixel payload's length, the pixel bound), then
written into the spool under a name only one association can create (``link(2)``: no lock across
the fsyncs), and only then acknowledged. Past the pixel bound or the spool's byte bound the caller
gets 0xA700 (out of resources), the event is audited, and the node goes on; nothing already
acknowledged is touched. Every association accepted or rejected, and every TLS handshake that
failed, is audited with the peer's address, AE titles and certificate subject.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from omsf2.serve.audit import AuditTrail
from omsf2.serve.dicom_config import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    NodeConfig,
    pixel_count,
    pixel_problem,
)
from omsf2.serve.dicom_spool import DuplicateInstance, Spool, SpoolFull

Emit = Callable[..., None]


def _requestor(event: Any) -> tuple[str, str]:
    """(calling AE title, ``address:port``) of an event's association, or empty strings."""
    try:
        req = event.assoc.requestor
        return str(req.ae_title).strip(), f"{req.address}:{req.port}"
    except AttributeError:
        return "", ""


def _tls_subject(event: Any) -> str | None:
    from omsf2.serve.tls import peer_subject

    try:
        return peer_subject(event.assoc.dul.socket.socket)
    except AttributeError:
        return None


def _transport(event: Any) -> str:
    import ssl

    try:
        return "tls" if isinstance(event.assoc.dul.socket.socket, ssl.SSLSocket) else "plain"
    except AttributeError:
        return "plain"


class Intake:
    """The handlers of the node's listeners; see the module docstring.

    Args:
        cfg: the node's configuration (bounds, AE title).
        spool: where instances are stored.
        audit: the audit trail.
        emit: the node's operational event logger (JSON lines).
        arrived: set after each stored instance (wakes the predictor).
    """

    def __init__(self, cfg: NodeConfig, spool: Spool, audit: AuditTrail, emit: Emit, arrived: threading.Event) -> None:
        self.cfg, self.spool, self.audit, self.emit, self.arrived = cfg, spool, audit, emit, arrived

    def handlers(self) -> list[Any]:
        """The ``evt_handlers`` of a listener (pynetdicom's event -> handler pairs)."""
        from pynetdicom import evt

        return [
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
        ]

    def _participants(self, event: Any) -> list[dict[str, Any]]:
        calling, address = _requestor(event)
        peer: dict[str, Any] = {"UserID": calling, "NetworkAccessPointID": address, "UserIsRequestor": True}
        subject = _tls_subject(event)
        if subject:
            peer["TLSPeerSubject"] = subject
        return [peer, {"UserID": self.cfg.ae_title, "UserIsRequestor": False}]

    # ------------------------------------------------------------------ associations

    def on_accepted(self, event: Any) -> None:
        """EVT_ACCEPTED: audit who came in, and how."""
        self.audit.record("association_accepted", participants=self._participants(event), transport=_transport(event))

    def on_rejected(self, event: Any) -> None:
        """EVT_REJECTED: log and audit the caller that was turned away (an AE title not allowed ...)."""
        calling, address = _requestor(event)
        self.emit("association_rejected", logging.WARNING, calling_ae=calling, address=address)
        self.audit.record(
            "association_rejected",
            4,
            "calling AE title not allowed",
            participants=self._participants(event),
            transport=_transport(event),
        )

    def on_tls_failure(self, address: tuple[str, int], reason: str) -> None:
        """A TLS handshake that failed (no client certificate, an unknown CA, not TLS at all)."""
        where = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        self.emit("tls_rejected", logging.WARNING, address=where, reason=reason)
        self.audit.record(
            "tls_rejected",
            4,
            reason,
            participants=[{"NetworkAccessPointID": where, "UserIsRequestor": True}],
            transport="tls",
        )

    # ------------------------------------------------------------------ C-STORE

    def _check(self, event: Any, uid: str) -> tuple[str | None, int, Any]:
        """(why it is refused or None, the status to answer, the dataset)."""
        why: str | None
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as e:  # a payload pydicom cannot decode
            return f"cannot decode the dataset ({' '.join(str(e).split()) or type(e).__name__})", 0, None
        try:
            pixels = pixel_count(ds)
            if pixels > self.cfg.max_pixels:
                why = f"{pixels} pixels exceed the bound of {self.cfg.max_pixels} (--max-pixels)"
                return why, STATUS_OUT_OF_RESOURCES, ds
            why = pixel_problem(ds, str(event.context.transfer_syntax))
            if why is None and str(ds.SOPInstanceUID) != uid:
                why = "dataset SOPInstanceUID differs from the C-STORE request's"
        except Exception as e:  # an element pydicom decodes lazily and cannot
            why = f"cannot decode the dataset ({' '.join(str(e).split()) or type(e).__name__})"
        status = STATUS_CANNOT_UNDERSTAND if why and why.startswith("cannot decode") else STATUS_MISMATCH
        return why, status, ds

    def _refuse(self, event: Any, uid: str, why: str, status: int, ds: Any) -> int:
        calling, _ = _requestor(event)
        status = status or STATUS_CANNOT_UNDERSTAND
        self.emit("refused", logging.WARNING, sop_instance_uid=uid, calling_ae=calling, reason=why,
                  status=f"0x{status:04X}")  # fmt: skip
        obj = {"ParticipantObjectID": uid, "ParticipantObjectTypeCode": 2, "status": f"0x{status:04X}"}
        if ds is not None:
            obj.update(phi_fields(ds))
        outcome = 8 if status == STATUS_OUT_OF_RESOURCES else 4
        self.audit.record("instance_refused", outcome, why, participants=self._participants(event), objects=[obj],
                          transport=_transport(event))  # fmt: skip
        return status

    def on_store(self, event: Any) -> int:
        """EVT_C_STORE: check, spool durably, then acknowledge (a failure status otherwise)."""
        t0 = time.perf_counter()
        calling, _ = _requestor(event)
        uid = str(event.request.AffectedSOPInstanceUID)
        why, status, ds = self._check(event, uid)
        if why is not None:
            return self._refuse(event, uid, why, status, ds)
        state = self.spool.state(uid)
        if state is not None:
            self.emit("duplicate", sop_instance_uid=uid, calling_ae=calling, state=state)
            return STATUS_SUCCESS
        data = event.encoded_dataset()
        try:
            self.spool.store_incoming(uid, data, limit=self.cfg.max_spool_bytes)
        except DuplicateInstance:
            self.emit("duplicate", sop_instance_uid=uid, calling_ae=calling, state="incoming")
            return STATUS_SUCCESS
        except SpoolFull as e:
            return self._refuse(event, uid, f"{e} (--max-spool)", STATUS_OUT_OF_RESOURCES, ds)
        except (OSError, ValueError) as e:
            self.emit("failed", logging.ERROR, stage="store", sop_instance_uid=uid, error=str(e))
            return self._refuse(event, uid, f"cannot store: {e}", STATUS_OUT_OF_RESOURCES, ds)
        self.emit(
            "received",
            sop_instance_uid=uid,
            calling_ae=calling,
            sop_class_uid=str(event.request.AffectedSOPClassUID),
            store_ms=round(1000 * (time.perf_counter() - t0), 2),
        )
        obj = {"ParticipantObjectID": uid, "ParticipantObjectTypeCode": 2, "SOPClass": str(ds.SOPClassUID),
               "size": len(data), **phi_fields(ds)}  # fmt: skip
        self.audit.record("instance_received", participants=self._participants(event), objects=[obj],
                          transport=_transport(event))  # fmt: skip
        self.arrived.set()
        return STATUS_SUCCESS


def phi_fields(ds: Any) -> dict[str, str]:
    """The patient fields of a dataset (the audit trail drops them unless --audit-phi)."""
    out = {}
    for kw in ("PatientID", "PatientName", "AccessionNumber"):
        try:
            value = ds.get(kw)
        except Exception:  # a malformed element: nothing to record
            continue
        if value not in (None, ""):
            out[kw] = str(value)
    return out
