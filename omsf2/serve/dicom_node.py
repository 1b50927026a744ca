"""The DICOM AI node: a pynetdicom Storage SCP in front of the runtime Predictor, results back by C-STORE.

Three parts, each on its own thread, joined only through the spool (:mod:`omsf2.serve.dicom_spool`):

1. **Receive** (:mod:`omsf2.serve.dicom_intake`, on pynetdicom's association threads, plain and
   TLS listeners alike): C-ECHO, and C-STORE of CR and DX image storage SOP classes from the
   calling AE titles allowed. Each instance is checked and bounded, written to the spool
   atomically *before* the success status goes back; a refused one gets a DICOM failure status and
   the node goes on.
2. **Analyse** (:mod:`omsf2.serve.dicom_pipeline`: the predict thread, a decode pool and result
   workers, overlapping): the clinical gating declines what the bundle may not analyse, with its
   reason; the rest is decoded, batched across associations up to the bundle's ``max_batch``, run
   through the Predictor (local, or on a shared Triton server with ``--backend triton``) and its
   SR, PM and SC (``--results``) built in parallel and written as one result folder in the spool.
   A batch the backend fails on is retried one image at a time; an image the backend still fails on
   stays in the spool and is retried with backoff, without waiting for new traffic.
3. **Forward** (:mod:`omsf2.serve.dicom_forward`, one thread): sends each result to ``--forward``
   (C-STORE) and/or ``--forward-stow`` (STOW-RS) and forgets it only after every destination
   acknowledged every object; failures are retried with capped backoff for as long as the node runs.

Every analysis is keyed by the bundle's digest and the backend (:func:`omsf2.serve.dicom_spool.analysis_key`):
a resend under the same bundle is a duplicate, under a new bundle it is analysed again, and
``--reanalyse`` runs what the spool kept through the new bundle.

Every event is one JSON line on the ``omsf2.serve.dicom.events`` logger (:class:`JsonLineFormatter`);
security-relevant ones also go to the audit trail (:mod:`omsf2.serve.audit`). :func:`serve_dicom`
runs a node until SIGTERM or Ctrl-C, then stops accepting, predicts what was received, makes one
last delivery round and returns; a node that fails to start leaves nothing behind (no events of a
node that never ran, no spool it created).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from omsf2.serve.audit import AuditTrail
from omsf2.serve.dicom_config import ACCEPTED_TRANSFER_SYNTAXES, RADIOGRAPH_SOP_CLASSES, NodeConfig, parse_syslog_url
from omsf2.serve.dicom_spool import Spool, analysis_key

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


def node_result_uids(source_uid: str, model: Any) -> Any:
    """The result UIDs of ``source_uid``: derived from it, the bundle's digest and the backend.

    The same image through the same bundle on the same backend always gets the same SR and SC
    instances (a re-send after a crash is the same instance at the PACS); another backend, whose
    numbers may differ in the last digits, gets other instances rather than a second SR under one UID.
    """
    from omsf2.serve.dicom_results import result_uids

    return result_uids(source_uid, dataclasses.replace(model, digest=f"{model.digest}/{model.backend}"))


class DicomNode:
    """One running node; see the module docstring. ``start()`` then ``stop()``."""

    def __init__(self, cfg: NodeConfig, predictor: Any = None) -> None:
        """Check the configuration, take the spool and load the model (nothing listens yet).

        Raises:
            ModuleNotFoundError: pynetdicom is missing (before anything is created).
            ValueError: the spool is in use or not writable, an export folder without
                ``allow_unsigned``, or a bundle that is refused or cannot run here.
        """
        import pynetdicom  # noqa: F401  # a missing [dicom] extra fails before a spool is made

        from omsf2.serve.tls import client_context, server_context

        self.cfg = cfg
        tls = cfg.tls  # certificates are read now, so a bad one is refused before a spool is made
        self._server_tls = server_context(tls.cert, tls.key, tls.ca) if cfg.tls_port is not None else None
        client_tls = client_context(tls.ca, tls.cert, tls.key) if cfg.forward_tls and tls.ca else None
        https = cfg.forward_stow is not None and cfg.forward_stow.startswith("https://")
        https_tls = client_context(tls.ca, tls.cert, tls.key) if https and tls.ca is not None else None
        syslog = parse_syslog_url(cfg.audit_syslog) if cfg.audit_syslog else None
        self.audit = AuditTrail(cfg.audit, phi=cfg.audit_phi, syslog=syslog, source_id=cfg.ae_title)
        self.spool = Spool(cfg.spool, keep_sources=cfg.keep_sources)
        try:
            self.spool.lock()
            self.predictor = predictor or self._load_model()
            # refused before anything listens: a node that cannot watch as asked does not start
            self._monitor_parts = None if cfg.monitor is None else self._monitor_reference(cfg.monitor)
        except BaseException:
            self.spool.remove_if_unused()
            self.audit.close()
            raise
        self.model = self._model_info()
        self.spool.key = analysis_key(self.model.digest, self.model.backend)
        self.policy = self.predictor.gate_policy(allow_missing=cfg.allow_missing)
        self.monitor: Any = None
        self.pipeline: Any = None
        self.port, self.tls_port = cfg.port, cfg.tls_port
        self._servers: list[Any] = []
        self._ae: Any = None
        self._started = self._closed = False
        self._arrived = threading.Event()
        self._produced = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        from omsf2.serve.dicom_forward import Forwarder
        from omsf2.serve.dicom_intake import Intake

        self.intake = Intake(cfg, self.spool, self.audit, emit, self._arrived)
        self.forwarder = Forwarder(cfg, self.spool, self.audit, emit, client_tls, https_tls)

    def _load_model(self) -> Any:
        from omsf2.runtime.bundle import is_bundle
        from omsf2.runtime.predictor import Predictor

        if not is_bundle(self.cfg.model):
            if not self.cfg.allow_unsigned:
                raise ValueError(
                    f"--model '{self.cfg.model}' is an export folder, not a bundle: bundle it (omsf2 bundle EXPORT "
                    "--out BUNDLE --sign KEY), or pass --allow-unsigned to run it anyway"
                )
            emit(
                "unsigned_model",
                logging.WARNING,
                model=self.cfg.model,
                reason="export folder run with --allow-unsigned",
            )
        from omsf2.runtime.sessions import SessionOptions

        options = SessionOptions(triton_url=self.cfg.triton_url, triton_model=self.cfg.triton_model)
        return Predictor.from_bundle(self.cfg.model, self.cfg.backend, self.cfg.threads, trust=self.cfg.trust,
                                     options=options)  # fmt: skip

    def _monitor_reference(self, spec: Any) -> tuple[Any, Any, str]:
        """(FP32 reference Predictor, gate bound, deployed file) for ``--monitor``, checked before anything listens.

        Raises:
            ValueError: the node runs FP32 (nothing to compare), the bundle has no FP32 ONNX, or no gate bound.
        """
        from omsf2.runtime.predictor import Predictor
        from omsf2.serve.int8_monitor import gate_bound

        p, bundle = self.predictor, self.predictor.bundle
        if p.artifact is None or "int8" not in p.artifact:  # onnx_int8, onnx_int8_cpu, engine_int8
            raise ValueError(
                f"--monitor compares the deployed INT8 model with FP32, and backend {p.backend} runs "
                f"{p.artifact or 'a remote model'}: choose an INT8 backend (ort-int8, openvino-int8, tensorrt with an "
                "INT8 engine)"
            )
        deployed = bundle.artifacts[p.artifact].name
        bound = gate_bound(bundle.metadata, deployed, spec.bound)
        if "onnx" not in bundle.artifacts:
            raise ValueError("--monitor needs the bundle's FP32 model.onnx as its reference; this bundle has none")
        reference = Predictor.from_bundle(self.cfg.model, "ort", spec.threads, artifact="onnx",
                                          trust=self.cfg.trust)  # fmt: skip
        return reference, bound, deployed

    def _start_monitor(self) -> None:
        from omsf2.serve.int8_monitor import STATUS_FILE, Int8Monitor

        if self._monitor_parts is None or self.cfg.monitor is None:
            return
        reference, bound, deployed = self._monitor_parts

        def on_drift(event: str, fields: dict[str, Any]) -> None:
            emit(event, logging.WARNING if event == "int8_drift" else logging.INFO, **fields)
            lo, hi = fields["ci"]
            why = (f"INT8 agreement with FP32 in {fields['attribute']}={fields['group']} is {fields['agreement']:.3f} "
                   f"(CI {lo:.3f}-{hi:.3f}, n {fields['n']}); the bound is {fields['bound']:g}")  # fmt: skip
            self.audit.record(event, 4 if event == "int8_drift" else 0, why if event == "int8_drift" else None,
                              bundle_sha256=self.model.digest, **fields)  # fmt: skip

        about = {"bundle_sha256": self.model.digest, "backend": self.model.backend, "deployed": deployed}
        self.monitor = Int8Monitor(self.cfg.monitor, reference, bound, self.spool.root / STATUS_FILE, on_drift, about)
        emit("monitor", fraction=self.cfg.monitor.fraction, window=self.cfg.monitor.window, deployed=deployed,
             bound=dataclasses.asdict(bound))  # fmt: skip

    def _model_info(self) -> Any:
        from omsf2.serve.dicom_results import ModelInfo

        bundle = self.predictor.bundle
        model = ModelInfo(  # the algorithm's identity from the manifest, never from a file name
            name=bundle.name,
            version=bundle.version,
            digest=bundle.digest,
            backend=self.predictor.backend,
            classes=tuple(self.predictor.classes),
        )
        trust = self.cfg.trust
        checked = "signature" if trust and trust.keys else "digest" if trust and trust.expect_sha256 else "none"
        self.audit.record("bundle_loaded", objects=[{
            "ParticipantObjectID": bundle.digest, "ParticipantObjectTypeCode": 2, "role": "bundle",
            "path": str(bundle.root), "name": model.name, "version": model.version, "backend": model.backend,
            "signer": getattr(bundle, "signer", None), "trust": checked,
            "kind": "bundle" if (bundle.root / "manifest.json").is_file() else "export folder (--allow-unsigned)",
        }])  # fmt: skip
        return model

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Resolve the spool, listen (plain and/or TLS), then start the predict and forward threads.

        Raises:
            OSError: an address cannot be bound (``cannot listen on HOST:PORT: ...``); nothing keeps running.
        """
        cleaned = self.spool.recover()
        st = self.spool.status()
        emit("recovered", spool=str(self.spool.root), incoming=st.incoming, pending=st.pending + len(st.failed),
             cleaned={k: v for k, v in cleaned.items() if v})  # fmt: skip
        for r in self.spool.pending_results():  # a failing result gets a fresh budget on restart
            if r.meta.get("failed"):
                self.spool.update_meta(r, failed=False, attempts=0)
        if self.cfg.reanalyse:
            emit(
                "reanalyse", images=self.spool.reanalyse(), bundle_sha256=self.model.digest, backend=self.model.backend
            )
        from omsf2.serve.dicom_pipeline import Pipeline

        self._start_monitor()
        self.pipeline = Pipeline(self, emit, self._produced)
        self._ae = self._make_ae()
        try:
            self._listen()
        except BaseException:
            self._shutdown_servers()
            self.pipeline.close()
            if self.monitor is not None:
                self.monitor.close()
            raise
        self._started = True
        threads = ((self._predict_loop, "omsf2-predict"), (self._forward_loop, "omsf2-forward"))
        for target, name in threads:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        emit("listening", ae_title=self.cfg.ae_title, host=self.cfg.host, port=self.port if self.cfg.plain else None,
             tls_port=self.tls_port, forward=None if self.cfg.forward is None else str(self.cfg.forward),
             forward_stow=self.cfg.forward_stow, forward_tls=self.cfg.forward_tls, results=list(self.cfg.results),
             model=self.model.name, version=self.model.version, backend=self.model.backend,
             bundle_sha256=self.model.digest)  # fmt: skip
        self.audit.record("node_started", configuration=self._configuration())
        self._arrived.set()  # predict what a previous run left
        self._produced.set()

    def _make_ae(self) -> Any:
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        from omsf2.serve.tls import NodeAE

        ae = NodeAE(ae_title=self.cfg.ae_title)
        ae.on_tls_failure = self.intake.on_tls_failure
        ae.add_supported_context(Verification)
        for uid in RADIOGRAPH_SOP_CLASSES:
            ae.add_supported_context(uid, list(ACCEPTED_TRANSFER_SYNTAXES))
        ae.require_calling_aet = list(self.cfg.allow_ae)
        ae.maximum_pdu_size = self.cfg.max_pdu
        return ae

    def _listen(self) -> None:
        handlers = self.intake.handlers()
        ports: list[tuple[int, Any]] = []
        if self.cfg.plain:
            ports.append((self.cfg.port, None))
        if self.cfg.tls_port is not None:
            ports.append((self.cfg.tls_port, self._server_tls))
        for port, ctx in ports:
            try:
                server = self._ae.start_server((self.cfg.host, port), block=False, ssl_context=ctx,
                                               evt_handlers=handlers)  # fmt: skip
            except OSError as e:
                raise OSError(f"cannot listen on {self.cfg.host}:{port}: {e.strerror or e}") from e
            self._servers.append(server)
            bound = int(server.server_address[1])
            if ctx is None:
                self.port = bound
            else:
                self.tls_port = bound

    def _configuration(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "host": c.host, "port": self.port if c.plain else None, "tls_port": self.tls_port,
            "mutual_tls": c.tls.ca is not None and c.tls_port is not None,
            "forward": None if c.forward is None else str(c.forward), "forward_stow": c.forward_stow,
            "forward_tls": c.forward_tls, "results": list(c.results), "allow_missing": list(c.allow_missing),
            "triton_url": c.triton_url, "allow_ae": list(c.allow_ae) or "any (loopback only)",
            "max_pdu": c.max_pdu, "max_pixels": c.max_pixels, "max_spool_bytes": c.max_spool_bytes,
            "spool": str(self.spool.root), "bundle_sha256": self.model.digest, "backend": self.model.backend,
            "audit_phi": c.audit_phi, "audit_syslog": c.audit_syslog,
        }  # fmt: skip

    def _shutdown_servers(self) -> None:
        for server in self._servers:
            server.shutdown()
        self._servers = []

    def stop(self) -> None:
        """Stop accepting, predict what was received, make a last delivery round, release the spool.

        The spool's lock is released only once both threads have returned; a thread still busy at the
        drain deadline keeps it (the OS releases it when the process exits), so no second node can
        take a spool this one may still write. A node that never started is closed quietly.
        """
        if self._closed:
            return
        self._closed = True
        if not self._started:
            self._shutdown_servers()
            self.spool.remove_if_unused()
            self.spool.unlock()
            self.audit.close()
            return
        emit("stopping")
        deadline = time.monotonic() + self.cfg.drain_timeout
        self._shutdown_servers()  # no new associations; the open ones finish what they send
        while self._ae is not None and self._ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stopping.set()
        self._arrived.set()
        self._produced.set()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self._threads if t.is_alive()]
        if not busy and self.pipeline is not None:
            self.pipeline.close()
        if self.monitor is not None:
            self.monitor.close()
        st = self.spool.status()
        emit("stopped", incoming=st.incoming, pending=st.pending, failed=len(st.failed), delivered=st.delivered)
        self.audit.record("node_stopped", 0 if not busy else 4, None if not busy else f"still busy: {busy}")
        if busy:
            emit("stop_timeout", logging.WARNING, threads=busy, note="the spool stays locked until the process exits")
        else:
            self.spool.unlock()
        self.audit.close()

    # ------------------------------------------------------------------ analyse

    def _predict_loop(self) -> None:
        self.pipeline.run(self._stopping, self._arrived)

    # ------------------------------------------------------------------ forward

    def _forward_loop(self) -> None:
        predict = next((t for t in self._threads if t.name == "omsf2-predict"), None)
        self.forwarder.loop(self._stopping, self._produced, predict)


def serve_dicom(cfg: NodeConfig, on_ready: Callable[[DicomNode], None] | None = None) -> DicomNode:
    """Run a node until SIGTERM or SIGINT (Ctrl-C), then stop it gracefully; call from the main thread.

    Any failure after the node was made (a port in use, ``on_ready`` raising) stops it before the
    error propagates: no thread keeps running and no lock stays held.

    Returns:
        The stopped node (its spool tells what is left).

    Raises:
        ValueError: bad configuration, spool in use, or a bundle that is refused or cannot run here.
        OSError: an address cannot be bound.
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
            if on_ready is not None:
                on_ready(node)
            while not done.wait(0.5):
                pass
        finally:
            node.stop()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return node
