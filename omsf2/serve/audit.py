"""The DICOM node's audit trail: one JSON line per security-relevant event, in IHE ATNA's vocabulary.

What a reviewer asks of an AI node is who connected, what came in, what went out, which model
judged it and how the node was configured. Each event is one JSON object on one line, with the
fields of the DICOM audit message it corresponds to (PS3.15 A.5; IHE ITI ATNA):

========================  =======================================  ===================  ======
event                     EventID (DCM)                            EventTypeCode (DCM)  action
========================  =======================================  ===================  ======
``node_started``          110100 Application Activity              110120 App. Start    E
``node_stopped``          110100 Application Activity              110121 App. Stop     E
``bundle_loaded``         110100 Application Activity              110131 Software Cfg  R
``association_accepted``  110114 User Authentication               110122 Login         E
``association_rejected``  110114 User Authentication               110122 Login         E
``tls_rejected``          110113 Security Alert                    110126 Node Auth.    E
``instance_received``     110104 DICOM Instances Transferred       -                    C
``instance_refused``      110104 DICOM Instances Transferred       -                    C
``instance_declined``     110100 Application Activity              -                    E
``result_sent``           110104 DICOM Instances Transferred       -                    R
``result_failed``         110104 DICOM Instances Transferred       -                    R
========================  =======================================  ===================  ======

with ``EventOutcomeIndicator`` 0 (success), 4 (minor failure: refused input, a failed delivery that
is retried) or 8 (serious failure: a bound exceeded), ``ActiveParticipant`` (AE titles, network
address, TLS peer subject) and ``ParticipantObject`` (SOP Instance UIDs, sizes, the bundle's
digest and signer). Patient names and IDs are left out unless ``phi`` is set (``--audit-phi``).
The trade-off: JSON, not the DICOM audit XML schema, so the lines read with ``jq`` and ship to a
log collector as they are; the codes are the schema's, so mapping to XML is mechanical.

Optionally each line also goes to a syslog collector as an RFC 5424 message (facility 10,
security/authorization; severity by outcome) over UDP (RFC 5426) or TCP with octet counting
(RFC 6587). Syslog over TLS (RFC 5425), which ATNA's secure transport needs, is not implemented.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["EVENTS", "AuditTrail"]

_DCM = "DCM"
_APP, _TRANSFER = ("110100", "Application Activity"), ("110104", "DICOM Instances Transferred")
_SECURITY, _AUTH = ("110113", "Security Alert"), ("110114", "User Authentication")
#: event -> (EventID, EventTypeCode or None, EventActionCode)
EVENTS: dict[str, tuple[tuple[str, str], tuple[str, str] | None, str]] = {
    "node_started": (_APP, ("110120", "Application Start"), "E"),
    "node_stopped": (_APP, ("110121", "Application Stop"), "E"),
    "bundle_loaded": (_APP, ("110131", "Software Configuration"), "R"),
    "association_accepted": (_AUTH, ("110122", "Login"), "E"),
    "association_rejected": (_AUTH, ("110122", "Login"), "E"),
    "tls_rejected": (_SECURITY, ("110126", "Node Authentication"), "E"),
    "instance_received": (_TRANSFER, None, "C"),
    "instance_refused": (_TRANSFER, None, "C"),
    # stored but not analysed: the clinical gating found it not applicable (the reason is the outcome's)
    "instance_declined": (_APP, None, "E"),
    "result_sent": (_TRANSFER, None, "R"),
    "result_failed": (_TRANSFER, None, "R"),
    # the live INT8 monitor: agreement with FP32 fell below the gate's bound in a group, and came back
    "int8_drift": (_APP, None, "E"),
    "int8_drift_cleared": (_APP, None, "E"),
}
#: Fields that identify a patient: kept only with ``phi``.
PHI_FIELDS = frozenset({"PatientID", "PatientName", "PatientBirthDate", "AccessionNumber"})
SYSLOG_FACILITY = 10  # security/authorization messages (RFC 5424 table 1)


def _code(pair: tuple[str, str]) -> dict[str, str]:
    return {"code": pair[0], "codeSystemName": _DCM, "displayName": pair[1]}


@dataclasses.dataclass
class _Syslog:
    """An RFC 5424 sender over UDP or TCP (reconnecting once per message when TCP drops)."""

    proto: str
    host: str
    port: int
    sock: socket.socket | None = None

    def send(self, line: str, severity: int, hostname: str) -> None:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1_000_000:06d}Z"
        msg = f"<{SYSLOG_FACILITY * 8 + severity}>1 {ts} {hostname} omsf2 {os.getpid()} omsf2-audit - {line}"
        data = msg.encode("utf-8")
        try:
            if self.proto == "udp":
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(data, (self.host, self.port))
                return
            for attempt in range(2):
                try:
                    if self.sock is None:
                        self.sock = socket.create_connection((self.host, self.port), timeout=5)
                    self.sock.sendall(f"{len(data)} ".encode() + data)  # octet counting (RFC 6587 3.4.1)
                    return
                except OSError:
                    self.close()
                    if attempt:
                        raise
        except OSError as e:  # the local file keeps the record; the collector's outage is logged once per line
            log.warning("audit syslog %s://%s:%d: %s", self.proto, self.host, self.port, e.strerror or e)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class AuditTrail:
    """Writes audit events (see the module docstring); safe to call from several threads.

    Args:
        path: append JSON lines here (created 0640); None: no file.
        phi: keep patient names and IDs in the records.
        syslog: ``(proto, host, port)`` of a collector (:func:`omsf2.serve.dicom_config.parse_syslog_url`).
        source_id: the AuditSourceID (the node's AE title).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        phi: bool = False,
        syslog: tuple[str, str, int] | None = None,
        source_id: str = "OMSF2",
    ) -> None:
        self.phi, self.source_id = phi, source_id
        self.hostname = socket.gethostname() or "-"
        self._lock = threading.Lock()
        self._fd: int | None = None
        if path is not None:
            p = Path(path)
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            except OSError as e:
                raise ValueError(f"--audit '{p}': {e.strerror or e}") from None
        self._syslog = _Syslog(*syslog) if syslog is not None else None

    def record(
        self,
        event: str,
        outcome: int = 0,
        description: str | None = None,
        participants: list[dict[str, Any]] | None = None,
        objects: list[dict[str, Any]] | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        """Write one event; returns the record as written (PHI removed unless ``phi``).

        Args:
            event: a key of :data:`EVENTS`.
            outcome: EventOutcomeIndicator: 0 success, 4 minor failure, 8 serious failure.
            description: EventOutcomeDescription (why it failed).
            participants: ActiveParticipant entries (UserID, NetworkAccessPointID, UserIsRequestor, ...).
            objects: ParticipantObject entries (SOP Instance UIDs, sizes, PatientID only with ``phi``).
            details: further fields of the event (configuration, transport ...).
        """
        event_id, type_code, action = EVENTS[event]
        rec: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
            "event": event,
            "EventID": _code(event_id),
            "EventActionCode": action,
            "EventOutcomeIndicator": outcome,
        }
        if type_code is not None:
            rec["EventTypeCode"] = _code(type_code)
        if description:
            rec["EventOutcomeDescription"] = description
        rec["AuditSourceID"] = self.source_id
        if participants:
            rec["ActiveParticipant"] = participants
        if objects:
            rec["ParticipantObject"] = [self._scrub(o) for o in objects]
        rec.update(self._scrub(details))
        self._write(rec, outcome)
        return rec

    def _scrub(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self.phi:
            return fields
        return {k: v for k, v in fields.items() if k not in PHI_FIELDS}

    def _write(self, rec: dict[str, Any], outcome: int) -> None:
        line = json.dumps(rec, default=str, separators=(",", ":"))
        with self._lock:
            if self._fd is not None:
                os.write(self._fd, (line + "\n").encode("utf-8"))  # O_APPEND: one write, one whole line
            if self._syslog is not None:
                self._syslog.send(line, 5 if outcome == 0 else 4 if outcome == 4 else 3, self.hostname)

    def close(self) -> None:
        """Flush to disk and close the file and the collector's connection."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            if self._syslog is not None:
                self._syslog.close()
