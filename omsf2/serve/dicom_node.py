"""The DICOM AI node: a pynetdicom Storage SCP in front of the runtime Predictor, results back by C-STORE.

Three parts, each on its own thread, joined only through the spool (:mod:`omsf2.serve.dicom_spool`):

1. **Receive** (pynetdicom's association threads): C-ECHO, and C-STORE of CR and DX image storage
   SOP classes from the calling AE titles allowed. Each instance is checked (UIDs, a grayscale
   image header, a native pixel payload of the length its header says) and written to the spool
   atomically *before* the success status goes back; a refused one gets a DICOM failure status and
   the node goes on. A SOP Instance UID the spool already knows is acknowledged and not redone.
2. **Predict** (one thread): takes what arrived together (up to the bundle's ``max_batch``),
   reads each file with :func:`omsf2.data.io.read_image`, runs one batch through the Predictor and
   writes the SR and SC (:mod:`omsf2.serve.dicom_results`) as one result folder in the spool.
3. **Forward** (one thread): sends each result to ``--forward`` over one association per round;
   a result is forgotten only after the destination acknowledged both objects. A failed round is
   retried with exponential backoff; after ``retries`` attempts a result stays in the spool marked
   failed (logged; ``omsf2 serve dicom --status``) and is tried again when the node restarts.

Every event is one JSON line on the ``omsf2.serve.dicom.events`` logger (:class:`JsonLineFormatter`).
:func:`serve_dicom` runs a node until SIGTERM or Ctrl-C, then stops accepting, predicts what was
received, makes one last delivery round and returns.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omsf2.serve.dicom_config import (
    ACCEPTED_TRANSFER_SYNTAXES,
    RADIOGRAPH_SOP_CLASSES,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    NodeConfig,
    pixel_problem,
)
from omsf2.serve.dicom_spool import PendingResult, Spool

events = logging.getLogger("omsf2.serve.dicom.events")


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC ISO), ``event`` (the message) and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        obj = {"ts": ts, "event": record.getMessage(), **getattr(record, "fields", {})}
        return json.dumps(obj, default=str, sort_keys=False)


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event as a JSON line (on the ``omsf2.serve.dicom.events`` logger)."""
    events.log(level, event, extra={"fields": fields})


class DicomNode:
    """One running node; see the module docstring. ``start()`` then ``stop()``."""

    def __init__(self, cfg: NodeConfig, predictor: Any = None) -> None:
        """Check the configuration, take the spool and load the model (nothing listens yet).

        Raises:
            ValueError: the spool is in use or not writable, or the bundle cannot run here.
        """
        from omsf2.runtime.predictor import Predictor
        from omsf2.serve.dicom_results import ModelInfo

        self.cfg = cfg
        self.spool = Spool(cfg.spool)
        self.spool.lock()
        try:
            self.predictor = predictor or Predictor.from_bundle(cfg.model, cfg.backend, cfg.threads)
        except BaseException:
            self.spool.unlock()
            raise
        meta = self.predictor.bundle.metadata
        self.model = ModelInfo(
            name=str(meta.get("name") or Path(cfg.model).name),
            version=str(meta.get("version") or meta.get("omsf2_version") or "unversioned"),
            digest=self.predictor.bundle.digest,
            backend=self.predictor.backend,
            classes=tuple(self.predictor.classes),
        )
        self.port = cfg.port
        self._server: Any = None
        self._ae: Any = None
        self._arrived = threading.Event()
        self._produced = threading.Event()
        self._stopping = threading.Event()
        self._store_lock = threading.Lock()
        self._next_try: dict[str, float] = {}
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Resolve the spool, start the predict and forward threads, then listen."""
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        cleaned = self.spool.recover()
        st = self.spool.status()
        pending = st.pending + len(st.failed)
        emit(
            "recovered",
            spool=str(self.spool.root),
            incoming=st.incoming,
            pending=pending,
            cleaned={k: v for k, v in cleaned.items() if v},
        )
        for r in self.spool.pending_results():  # a failed result gets a fresh budget on restart
            if r.meta.get("failed"):
                self.spool.update_meta(r, failed=False, attempts=0)
        ae = AE(ae_title=self.cfg.ae_title)
        ae.add_supported_context(Verification)
        for uid in RADIOGRAPH_SOP_CLASSES:
            ae.add_supported_context(uid, list(ACCEPTED_TRANSFER_SYNTAXES))
        ae.require_calling_aet = list(self.cfg.allow_ae)
        ae.maximum_pdu_size = 0
        for target, name in ((self._predict_loop, "omsf2-predict"), (self._forward_loop, "omsf2-forward")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REJECTED, self._on_rejected)]
        self._ae = ae
        self._server = ae.start_server((self.cfg.host, self.cfg.port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        emit(
            "listening",
            ae_title=self.cfg.ae_title,
            host=self.cfg.host,
            port=self.port,
            forward=str(self.cfg.forward),
            model=self.model.name,
            backend=self.model.backend,
            bundle_sha256=self.model.digest,
        )
        self._arrived.set()  # predict what a previous run left
        self._produced.set()

    def stop(self) -> None:
        """Stop accepting, predict what was received, make a last delivery round, release the spool."""
        emit("stopping")
        deadline = time.monotonic() + self.cfg.drain_timeout
        if self._server is not None:
            self._server.shutdown()  # no new associations; the open ones finish what they send
            while self._ae is not None and self._ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
        self._stopping.set()
        self._arrived.set()
        self._produced.set()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        st = self.spool.status()
        emit("stopped", incoming=st.incoming, pending=st.pending, failed=len(st.failed), delivered=st.delivered)
        self.spool.unlock()

    # ------------------------------------------------------------------ receive

    def _on_rejected(self, event: Any) -> None:
        emit("association_rejected", logging.WARNING, calling_ae=_calling_ae(event), address=_address(event))

    def _on_store(self, event: Any) -> int:
        """EVT_C_STORE: check, spool durably, then acknowledge (a failure status otherwise)."""
        t0 = time.perf_counter()
        calling = _calling_ae(event)
        uid = str(event.request.AffectedSOPInstanceUID)
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            why = pixel_problem(ds, str(event.context.transfer_syntax))
            if why is None and str(ds.SOPInstanceUID) != uid:
                why = "dataset SOPInstanceUID differs from the C-STORE request's"
        except Exception as e:  # a payload pydicom cannot decode
            why = f"cannot decode the dataset ({' '.join(str(e).split()) or type(e).__name__})"
        if why is not None:
            emit("refused", logging.WARNING, sop_instance_uid=uid, calling_ae=calling, reason=why)
            return STATUS_CANNOT_UNDERSTAND if why.startswith("cannot decode") else STATUS_MISMATCH
        with self._store_lock:
            state = self.spool.state(uid)
            if state is not None:
                emit("duplicate", sop_instance_uid=uid, calling_ae=calling, state=state)
                return STATUS_SUCCESS
            try:
                self.spool.store_incoming(uid, event.encoded_dataset())
            except (OSError, ValueError) as e:
                emit("failed", logging.ERROR, stage="store", sop_instance_uid=uid, error=str(e))
                return STATUS_OUT_OF_RESOURCES
        emit(
            "received",
            sop_instance_uid=uid,
            calling_ae=calling,
            sop_class_uid=str(event.request.AffectedSOPClassUID),
            store_ms=round(1000 * (time.perf_counter() - t0), 2),
        )
        self._arrived.set()
        return STATUS_SUCCESS

    # ------------------------------------------------------------------ predict

    def _predict_loop(self) -> None:
        while True:
            self._arrived.wait(0.5)
            if not self._arrived.is_set() and not self._stopping.is_set():
                continue
            if not self._stopping.is_set():
                time.sleep(self.cfg.batch_window)  # let images that arrive together batch together
            self._arrived.clear()
            pending = self.spool.pending_incoming()
            if not pending:
                if self._stopping.is_set():
                    return
                continue
            for i in range(0, len(pending), self.predictor.max_batch):
                try:
                    self._predict_batch(pending[i : i + self.predictor.max_batch])
                except Exception as e:  # never let one batch stop the node; the files stay spooled
                    emit("failed", logging.ERROR, stage="predict", error=" ".join(str(e).split()) or type(e).__name__)
                    time.sleep(1.0)
                self._produced.set()

    def _predict_batch(self, paths: Sequence[Path]) -> None:
        import pydicom

        from omsf2.data.io import read_image

        loaded = []
        for p in paths:
            uid, received_at = p.stem, time.time()
            try:
                received_at = p.stat().st_mtime
                t0 = time.perf_counter()
                source = pydicom.dcmread(p, stop_before_pixels=True)
                loaded.append((uid, received_at, source, read_image(p), time.perf_counter() - t0))
            except FileNotFoundError:
                continue
            except Exception as e:
                self._reject(uid, received_at, "read", e, p)
        if loaded:
            self._infer(loaded)

    def _reject(self, uid: str, received_at: float, stage: str, e: BaseException, path: Path | None = None) -> None:
        reason = " ".join(str(e).split()) or type(e).__name__
        if path is not None:
            reason = reason.replace(f"cannot read '{path}': ", "")
        self.spool.reject(uid, reason, received_at)
        emit("failed", logging.WARNING, stage=stage, sop_instance_uid=uid, error=reason)

    def _infer(self, loaded: list[tuple[str, float, Any, Any, float]]) -> None:
        """Predict a batch and write its results; a batch that fails is retried one image at a time."""
        t0 = time.perf_counter()
        try:
            preds = self.predictor.predict([img for _, _, _, img, _ in loaded])
        except (ValueError, TypeError, FloatingPointError, RuntimeError, MemoryError) as e:
            if len(loaded) > 1:
                for item in loaded:
                    self._infer([item])
            else:
                self._reject(loaded[0][0], loaded[0][1], "predict", e)
            return
        infer_s = time.perf_counter() - t0
        for (uid, received_at, source, img, read_s), pred in zip(loaded, preds, strict=True):
            t1 = time.perf_counter()
            try:
                meta = self._write_result(uid, received_at, source, img, pred)
            except (ValueError, TypeError, AttributeError, KeyError) as e:  # a header highdicom cannot build on
                self._reject(uid, received_at, "encode", e)
                continue
            emit(
                "predicted",
                sop_instance_uid=uid,
                label=pred.label,
                probability=round(pred.probabilities[pred.label], 6),
                batch=len(loaded),
                read_ms=round(1000 * read_s, 2),
                infer_ms=round(1000 * infer_s, 2),
                encode_ms=round(1000 * (time.perf_counter() - t1), 2),
                sr_uid=meta["sr_uid"],
                sc_uid=meta["sc_uid"],
            )

    def _write_result(self, uid: str, received_at: float, source: Any, img: Any, pred: Any) -> dict[str, Any]:
        from io import BytesIO

        from omsf2.serve.dicom_results import build_sc, build_sr, result_uids

        uids = result_uids(uid, self.model)
        files = {}
        for name, obj in (
            ("sr.dcm", build_sr(source, pred.label, pred.probabilities, self.model, uids)),
            ("sc.dcm", build_sc(source, img, pred.heatmap, pred.label, uids)),
        ):
            buf = BytesIO()
            obj.save_as(buf, enforce_file_format=True)
            files[name] = buf.getvalue()
        meta = {
            "sop_instance_uid": uid,
            "study_instance_uid": str(source.StudyInstanceUID),
            "received_at": received_at,
            "predicted_at": time.time(),
            "label": pred.label,
            "probabilities": pred.probabilities,
            "sr_series_uid": uids.sr_series,
            "sc_series_uid": uids.sc_series,
            "sr_uid": uids.sr,
            "sc_uid": uids.sc,
            "sent": [],
            "attempts": 0,
            "failed": False,
            "last_error": None,
        }
        self.spool.put_result(uid, files, meta)
        return meta

    # ------------------------------------------------------------------ forward

    def _due(self) -> list[PendingResult]:
        now = time.monotonic()
        return [
            r
            for r in self.spool.pending_results()
            if not r.meta.get("failed") and self._next_try.get(r.uid, 0.0) <= now
        ]

    def _forward_loop(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            if stopping:  # deliver what the predictor finishes, then return
                predict = [t for t in self._threads if t.name == "omsf2-predict"]
                for t in predict:
                    t.join(self.cfg.drain_timeout / 2)
            due = self._due()
            if due:
                self._deliver(due)
            if stopping:
                return
            if not due:
                self._produced.wait(self._wait_s())
                self._produced.clear()

    def _wait_s(self) -> float:
        if not self._next_try:
            return 1.0
        return min(1.0, max(0.01, min(self._next_try.values()) - time.monotonic()))

    def _deliver(self, results: list[PendingResult]) -> None:
        """One association to the destination; each result is forgotten once both objects were acknowledged."""
        from pynetdicom import AE
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            Comprehensive3DSRStorage,
            SecondaryCaptureImageStorage,
        )

        dest = self.cfg.forward
        ae = AE(ae_title=self.cfg.ae_title)
        ae.add_requested_context(Comprehensive3DSRStorage)
        ae.add_requested_context(SecondaryCaptureImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            for r in results:
                self._retry_later(r, f"cannot associate with {dest}")
            return
        try:
            for r in results:
                self._send_one(assoc, r)
        finally:
            if assoc.is_established:
                assoc.release()

    def _send_one(self, assoc: Any, r: PendingResult) -> None:
        t0 = time.perf_counter()
        sent = list(r.meta.get("sent", []))
        for name in ("sr.dcm", "sc.dcm"):
            if name in sent:
                continue
            try:
                status = assoc.send_c_store(r.folder / name)  # streamed from the file, not re-encoded
            except Exception as e:  # a dropped association, a context the peer refused
                self._retry_later(r, f"{name}: {' '.join(str(e).split()) or type(e).__name__}")
                return
            code = int(getattr(status, "Status", -1)) if status else -1
            if code != STATUS_SUCCESS and not 0xB000 <= code <= 0xBFFF:  # warnings are stored too
                why = "no response" if code == -1 else f"status 0x{code:04X}"
                self._retry_later(r, f"{name}: {self.cfg.forward} answered {why}")
                return
            sent.append(name)
            r = self.spool.update_meta(r, sent=sent)
        delivered_at = time.time()
        self.spool.mark_delivered(r, delivered_at=delivered_at, destination=str(self.cfg.forward))
        self._next_try.pop(r.uid, None)
        emit(
            "forwarded",
            sop_instance_uid=r.uid,
            sr_uid=r.meta["sr_uid"],
            sc_uid=r.meta["sc_uid"],
            destination=str(self.cfg.forward),
            send_ms=round(1000 * (time.perf_counter() - t0), 2),
            receipt_to_delivery_s=round(delivered_at - float(r.meta["received_at"]), 4),
            attempts=int(r.meta.get("attempts", 0)) + 1,
        )

    def _retry_later(self, r: PendingResult, error: str) -> None:
        attempts = int(r.meta.get("attempts", 0)) + 1
        failed = attempts >= self.cfg.retries
        self.spool.update_meta(r, attempts=attempts, last_error=error, failed=failed)
        if failed:
            self._next_try.pop(r.uid, None)
            emit("failed", logging.ERROR, stage="forward", sop_instance_uid=r.uid, attempts=attempts, error=error)
            return
        delay = min(self.cfg.max_retry_delay, self.cfg.retry_delay * 2 ** (attempts - 1))
        self._next_try[r.uid] = time.monotonic() + delay
        emit("retry", logging.WARNING, sop_instance_uid=r.uid, attempts=attempts, delay_s=delay, error=error)


def _calling_ae(event: Any) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except AttributeError:
        return ""


def _address(event: Any) -> str:
    try:
        return f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"
    except AttributeError:
        return ""


def serve_dicom(cfg: NodeConfig, on_ready: Callable[[DicomNode], None] | None = None) -> DicomNode:
    """Run a node until SIGTERM or SIGINT (Ctrl-C), then stop it gracefully; call from the main thread.

    Returns:
        The stopped node (its spool tells what is left).

    Raises:
        ValueError: bad configuration, spool in use, or a bundle that cannot run here.
        OSError: the address cannot be bound.
    """
    node = DicomNode(cfg)
    done = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum: int, _frame: Any) -> None:
        emit("signal", signal=signal.Signals(signum).name)
        done.set()

    for s in previous:
        signal.signal(s, on_signal)
    try:
        try:
            node.start()
        except OSError as e:
            node.stop()
            raise OSError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from e
        except BaseException:
            node.stop()
            raise
        if on_ready is not None:
            on_ready(node)
        while not done.wait(0.5):
            pass
        node.stop()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return node
