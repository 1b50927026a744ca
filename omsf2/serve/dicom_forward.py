"""The DICOM node's sending side: results to the PACS, forgotten only after every destination acknowledged every object.

Destinations (:mod:`omsf2.serve.dicom_transports`): ``--forward`` (C-STORE, over TLS with
``--forward-tls``) and ``--forward-stow`` (DICOMweb STOW-RS), either or both. A delivery round opens
one connection per destination that has work; each object a destination acknowledged is written
to the result's ``meta.json`` (``sent``) at once, so after a crash or a failed try only what was not
acknowledged is sent again, and since result UIDs are derived from the source and the bundle, a
repeated object is the same instance at the destination, never a second one. A result is recorded
as delivered and its files deleted only when every destination has every object. A failed try is
retried with exponential backoff capped at ``max_retry_delay``, for as long as the node runs: after
``retries`` tries the result is reported as failing (an event, ``--status``) but still retried, so a
PACS that comes back after a long outage gets everything without a restart. Every try is audited.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from omsf2.serve.audit import AuditTrail
from omsf2.serve.dicom_config import NodeConfig
from omsf2.serve.dicom_spool import PendingResult, Spool
from omsf2.serve.dicom_transports import SendFailed, Transport, transports_of

Emit = Callable[..., None]


def sent_key(dest: Transport, name: str) -> str:
    """How ``meta.json``'s ``sent`` names an object acknowledged by a destination."""
    return f"{dest.key}:{name}"


class Forwarder:
    """Delivers the spool's results to every configured destination; see the module docstring.

    Args:
        cfg: the node's configuration (destinations, retry policy).
        spool: where results wait.
        audit: the audit trail.
        emit: the node's operational event logger.
        tls: the client SSL context of ``--forward-tls`` (None: plain C-STORE).
        https: the client SSL context for an ``https`` STOW URL (None: the system's CAs).
    """

    def __init__(
        self, cfg: NodeConfig, spool: Spool, audit: AuditTrail, emit: Emit, tls: Any = None, https: Any = None
    ) -> None:
        self.cfg, self.spool, self.audit, self.emit = cfg, spool, audit, emit
        self._next_try: dict[str, float] = {}
        self.destinations = transports_of(cfg, tls, https)

    def due(self) -> list[PendingResult]:
        """Results whose next try is due, oldest receipt first."""
        now = time.monotonic()
        return [r for r in self.spool.pending_results() if self._next_try.get(r.entry, 0.0) <= now]

    def wait_s(self) -> float:
        """How long to sleep before the next try is due (at most 1 s)."""
        if not self._next_try:
            return 1.0
        return min(1.0, max(0.01, min(self._next_try.values()) - time.monotonic()))

    def loop(self, stopping: threading.Event, produced: threading.Event, predict: threading.Thread | None) -> None:
        """Deliver until ``stopping``; then wait for the predictor (up to half the drain time) and make a last round."""
        while True:
            stop = stopping.is_set()
            if stop and predict is not None:
                predict.join(self.cfg.drain_timeout / 2)
            due = self.due()
            if due:
                self.deliver(due)
            if stop:
                return
            if not due:
                produced.wait(self.wait_s())
                produced.clear()

    def deliver(self, results: list[PendingResult]) -> None:
        """One round over one connection per destination; each result is marked delivered as soon as it is complete.

        A result counts as delivered once every destination acknowledged every object of it, and it is
        marked so right then rather than at the end of the round: a round can hold hundreds of results,
        and their receipt-to-delivery time must not wait for the last of them. A result that fails on one
        destination is not tried on the next in this round; it is retried with backoff.
        """
        sessions: dict[int, Any] = {}
        down: dict[int, tuple[str, int]] = {}
        for i, dest in enumerate(self.destinations):
            if any(self._missing(r, dest) for r in results):
                try:
                    sessions[i] = dest.open()
                except SendFailed as e:
                    down[i] = (str(e), e.code)
        try:
            for r in results:
                started, error = time.perf_counter(), None
                for i, dest in enumerate(self.destinations):
                    if not self._missing(r, dest):
                        continue
                    if i in down:
                        error = down[i]
                        break
                    r, error = self._send_all(sessions[i], dest, r)
                    if error is not None:
                        break
                if error is not None:
                    self.retry_later(r, *error)
                else:
                    self._delivered(r, time.perf_counter() - started)
        finally:
            for i, session in sessions.items():
                self.destinations[i].close(session)

    def _missing(self, r: PendingResult, dest: Transport) -> list[str]:
        sent = set(r.meta.get("sent", []))
        if dest.key == "dimse":  # a spool from before destinations were named: bare names went by C-STORE
            sent |= {f"dimse:{n}" for n in sent if ":" not in n}
        return [n for n in _objects(r) if sent_key(dest, n) not in sent]

    def _send_all(
        self, session: Any, dest: Transport, r: PendingResult
    ) -> tuple[PendingResult, tuple[str, int] | None]:
        """Send what ``dest`` lacks of ``r``, recording each acknowledgement; (the result, (error, status) or None)."""
        for name in self._missing(r, dest):
            try:
                dest.send(session, r.folder / name)
            except SendFailed as e:
                return r, (f"{name}: {e}", e.code)
            r = self.spool.update_meta(r, sent=[*r.meta.get("sent", []), sent_key(dest, name)])
        return r, None

    def _delivered(self, r: PendingResult, send_s: float) -> None:
        delivered_at = time.time()
        where = ", ".join(d.label for d in self.destinations)
        self.spool.mark_delivered(r, delivered_at=delivered_at, destination=where)
        self._next_try.pop(r.entry, None)
        attempts = int(r.meta.get("attempts", 0)) + 1
        self.emit(
            "forwarded",
            sop_instance_uid=r.uid,
            objects=_objects(r),
            **{k: r.meta[k] for k in ("sr_uid", "pm_uid", "sc_uid") if k in r.meta},
            destination=where,
            send_ms=round(1000 * send_s, 2),
            receipt_to_delivery_s=round(delivered_at - float(r.meta["received_at"]), 4),
            attempts=attempts,
        )
        self._audit(r, 0, None, attempts)

    def _audit(self, r: PendingResult, outcome: int, error: str | None, attempts: int, code: int = 0) -> None:
        objects = [
            {"ParticipantObjectID": r.meta.get(f"{n.removesuffix('.dcm')}_uid"), "ParticipantObjectTypeCode": 2,
             "role": n.removesuffix(".dcm")}
            for n in _objects(r)
        ]  # fmt: skip
        objects.append({"ParticipantObjectID": r.uid, "ParticipantObjectTypeCode": 2, "role": "source"})
        participants = [{"UserID": self.cfg.ae_title, "UserIsRequestor": True}]
        participants += [d.participant() for d in self.destinations]
        event = "result_sent" if outcome == 0 else "result_failed"
        self.audit.record(event, outcome, error, participants=participants, objects=objects, attempts=attempts,
                          status=f"0x{code:04X}" if code else ("0x0000" if outcome == 0 else None),
                          transport=", ".join(d.transport for d in self.destinations))  # fmt: skip

    def retry_later(self, r: PendingResult, error: str, code: int = 0) -> None:
        """Schedule the next try (backoff capped at max_retry_delay); past ``retries`` tries, report it as failing."""
        attempts = int(r.meta.get("attempts", 0)) + 1
        failing = attempts >= self.cfg.retries
        self.spool.update_meta(r, attempts=attempts, last_error=error, failed=failing)
        delay = min(self.cfg.max_retry_delay, self.cfg.retry_delay * 2 ** min(attempts - 1, 30))
        self._next_try[r.entry] = time.monotonic() + delay
        self._audit(r, 4, error, attempts, code)
        if attempts == self.cfg.retries:  # once, when the budget is spent; the retries go on
            self.emit("failed", logging.ERROR, stage="forward", sop_instance_uid=r.uid, attempts=attempts,
                      error=error, next_try_s=delay)  # fmt: skip
        self.emit("retry", logging.WARNING, sop_instance_uid=r.uid, attempts=attempts, delay_s=delay, error=error)


def _objects(r: PendingResult) -> list[str]:
    """The result's files to deliver, in order (SR first); an older result lists none and has sr and sc."""
    names = r.meta.get("objects") or ["sr.dcm", "sc.dcm"]
    order = {"sr.dcm": 0, "pm.dcm": 1, "sc.dcm": 2}
    return sorted(names, key=lambda n: order.get(n, 9))
