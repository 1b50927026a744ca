"""The DICOM node's analysis side: gate, decode, infer and build results, each overlapping the others.

Three stages, joined by queues rather than run one after the other, so the model never waits for
a decoder or a result encoder:

1. **Decode** (a thread pool, ``--decode-workers``): read the header, apply the clinical gating
   (:mod:`omsf2.runtime.gating`; an image that is not applicable is declined with its reason, logged
   and audited, and gets no result), then read and preprocess the pixels with :mod:`omsf2.data`.
2. **Infer** (the predict thread): whatever has been decoded, from any association, is batched up
   to the bundle's ``max_batch`` and run through :meth:`~omsf2.runtime.predictor.Predictor.run_batch`
   (the runtime's one inference call, local or on a Triton server). A batch that fails is run again
   one image at a time; an image the backend still fails on (:class:`~omsf2.runtime.errors.InferenceError`)
   stays in the spool and is retried with backoff, without waiting for new traffic; one whose input is
   at fault is rejected.
3. **Build** (``--result-workers`` processes, or a thread with 0): the SR, PM and SC
   (:mod:`omsf2.serve.dicom_build`), encoded in parallel with the next batch's decoding and
   inference; the files are written to the spool as one result, which the forwarder delivers.

At most :attr:`Pipeline.max_in_flight` images are between the spool's ``incoming/`` and its
``results/`` at once, so memory stays bounded however much has arrived; the rest waits on disk.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.serve.dicom_build import BuildJob, Built, build_files, init_worker, warm_up

Emit = Callable[..., None]


@dataclasses.dataclass
class Decoded:
    """An image ready for the model: its header, model input and what its results need."""

    uid: str
    received_at: float
    header: Any
    x: np.ndarray
    original_hw: tuple[int, int]
    sc_image: np.ndarray | None
    read_s: float


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class Pipeline:
    """The predict thread's work; see the module docstring.

    Args:
        node: the :class:`~omsf2.serve.dicom_node.DicomNode` (config, spool, predictor, model, audit, policy).
        emit: the node's event logger.
        produced: set when a result is in the spool (wakes the forwarder).
    """

    def __init__(self, node: Any, emit: Emit, produced: threading.Event) -> None:
        self.node, self.cfg, self.spool, self.emit, self.produced = node, node.cfg, node.spool, emit, produced
        self.predictor = node.predictor
        self.max_in_flight = max(4 * self.predictor.max_batch, 2 * self.cfg.decode_workers)
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._retry: dict[str, tuple[int, float]] = {}  # uid -> (attempts, monotonic time of the next try)
        self._builds: set[cf.Future[Built]] = set()
        self._decoder = cf.ThreadPoolExecutor(self.cfg.decode_workers, thread_name_prefix="omsf2-decode")
        self._builder = self._make_builder()

    def _make_builder(self) -> cf.Executor:
        model = self.node.model
        args = (model, self.predictor.spec, tuple(self.cfg.results), f"{model.digest}/{model.backend}")
        if self.cfg.result_workers == 0:
            init_worker(*args)
            return cf.ThreadPoolExecutor(1, thread_name_prefix="omsf2-build")
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads and a backend
        pool = cf.ProcessPoolExecutor(self.cfg.result_workers, mp_context=ctx, initializer=init_worker, initargs=args)
        try:  # workers import highdicom and build once now, not while the first image waits
            for f in [pool.submit(warm_up) for _ in range(self.cfg.result_workers)]:
                f.result(timeout=300)
        except Exception as e:
            pool.shutdown(wait=False, cancel_futures=True)
            raise RuntimeError(f"the result workers cannot build results: {_one_line(e)}") from e
        return pool

    def close(self) -> None:
        """Stop the pools (after :meth:`run` returned: nothing is in flight)."""
        self._decoder.shutdown(wait=True)
        self._builder.shutdown(wait=True)

    # ------------------------------------------------------------------ the loop

    def run(self, stopping: threading.Event, arrived: threading.Event) -> None:
        """Analyse what arrives until ``stopping``; then finish what was received and return."""
        while True:
            wait = self._next_retry_in()
            arrived.wait(0.5 if wait is None else max(0.0, min(0.5, wait)))
            if arrived.is_set() and not stopping.is_set():
                time.sleep(self.cfg.batch_window)  # let images that arrive together batch together
            arrived.clear()
            due = self._due(self.spool.pending_incoming())
            if due:
                self._round(due[: self.max_in_flight - len(self._in_flight)])
                arrived.set()  # more may be waiting: look again at once
                continue
            if stopping.is_set() and (not self._in_flight or self._waiting_for_retry_only()):
                self._wait_builds()
                if not self._in_flight or self._waiting_for_retry_only():
                    return  # what the backend still fails on stays in the spool for the next start

    def _due(self, pending: list[Path]) -> list[Path]:
        now = time.monotonic()
        with self._lock:
            busy = len(self._in_flight) >= self.max_in_flight
            return [] if busy else [
                p for p in pending if p.stem not in self._in_flight and self._retry.get(p.stem, (0, 0.0))[1] <= now
            ]  # fmt: skip

    def _next_retry_in(self) -> float | None:
        with self._lock:
            return None if not self._retry else min(t for _, t in self._retry.values()) - time.monotonic()

    def _waiting_for_retry_only(self) -> bool:
        with self._lock:
            return not self._builds and self._in_flight <= set(self._retry)

    def _wait_builds(self) -> None:
        with self._lock:
            builds = set(self._builds)
        cf.wait(builds)

    def _round(self, paths: list[Path]) -> None:
        """Decode ``paths`` in the pool and infer in batches as they come (decode overlaps inference)."""
        with self._lock:
            self._in_flight.update(p.stem for p in paths)
        futures = [self._decoder.submit(self._decode, p) for p in paths]
        batch: list[Decoded] = []
        for f in cf.as_completed(futures):
            item = f.result()
            if item is not None:
                batch.append(item)
            if len(batch) >= self.predictor.max_batch:
                self._infer(batch)
                batch = []
        if batch:
            self._infer(batch)

    def _release(self, uid: str) -> None:
        with self._lock:
            self._in_flight.discard(uid)

    # ------------------------------------------------------------------ decode (pool threads)

    def _decode(self, path: Path) -> Decoded | None:
        import pydicom

        from omsf2.data.io import read_image
        from omsf2.data.preprocess import preprocess
        from omsf2.runtime.gating import InputAttributes, not_applicable

        uid, received_at = path.stem, time.time()
        try:
            received_at = path.stat().st_mtime
            t0 = time.perf_counter()
            header = pydicom.dcmread(path, stop_before_pixels=True)
            why = not_applicable(InputAttributes.from_dataset(header), self.node.policy)
            if why is not None:
                self._decline(uid, received_at, why, header)
                return None
            img = read_image(path)
            x = preprocess(img, self.predictor.spec)
            sc = _sc_image(img) if "sc" in self.cfg.results else None
            return Decoded(uid, received_at, header, x, img.shape, sc, time.perf_counter() - t0)
        except FileNotFoundError:
            self._release(uid)
            return None
        except Exception as e:
            self._reject(uid, received_at, "read", e, path)
            return None

    def _decline(self, uid: str, received_at: float, why: str, header: Any) -> None:
        from omsf2.serve.dicom_intake import phi_fields

        self.spool.decline(uid, why, received_at, bundle_sha256=self.node.model.digest)
        self.emit("declined", logging.WARNING, sop_instance_uid=uid, reason=why)
        obj = {"ParticipantObjectID": uid, "ParticipantObjectTypeCode": 2, **phi_fields(header)}
        self.node.audit.record("instance_declined", 4, why, objects=[obj], bundle_sha256=self.node.model.digest)
        self._release(uid)

    def _reject(self, uid: str, received_at: float, stage: str, e: BaseException, path: Path | None = None) -> None:
        reason = _one_line(e)
        if path is not None:
            reason = reason.replace(f"cannot read '{path}': ", "")
        self.spool.reject(uid, reason, received_at)
        self.emit("failed", logging.WARNING, stage=stage, sop_instance_uid=uid, error=reason)
        with self._lock:
            self._retry.pop(uid, None)
        self._release(uid)

    # ------------------------------------------------------------------ infer (the predict thread)

    def _infer(self, batch: list[Decoded]) -> None:
        """Run a batch and hand each image to a result worker; a failing batch is retried one image at a time."""
        from omsf2.runtime.errors import InferenceError

        t0 = time.perf_counter()
        try:
            probs, heat = self.predictor.run_batch(np.stack([d.x for d in batch]))
        except (ValueError, TypeError, FloatingPointError, RuntimeError, MemoryError) as e:
            if len(batch) > 1:
                for d in batch:
                    self._infer([d])
                return
            d = batch[0]
            if isinstance(e, InferenceError | MemoryError):
                self._retry_later(d.uid, e)
            else:
                self._reject(d.uid, d.received_at, "predict", e)
            return
        infer_s = time.perf_counter() - t0
        classes = self.predictor.classes
        n = len(batch)

        def done(f: cf.Future[Built], d: Decoded, job: BuildJob) -> Callable[[cf.Future[Built]], None]:
            return lambda future: self._built(future, d, job, infer_s, n)

        monitor = self.node.monitor
        for k, d in enumerate(batch):
            label = classes[int(probs[k].argmax())]
            if monitor is not None:  # a sampled image's input and INT8 answer, queued; FP32 runs elsewhere
                monitor.offer(d.uid, d.header, d.x, probs[k])
            job = BuildJob(d.uid, d.header, label, {c: float(p) for c, p in zip(classes, probs[k], strict=True)},
                           heat[k], d.original_hw, d.sc_image)  # fmt: skip
            with self._lock:
                self._retry.pop(d.uid, None)
                future = self._builder.submit(build_files, job)
                self._builds.add(future)
            future.add_done_callback(done(future, d, job))

    def _retry_later(self, uid: str, e: BaseException) -> None:
        with self._lock:
            attempts = self._retry.get(uid, (0, 0.0))[0] + 1
            delay = min(self.cfg.max_retry_delay, self.cfg.retry_delay * 2 ** min(attempts - 1, 30))
            self._retry[uid] = (attempts, time.monotonic() + delay)
        self.emit("failed", logging.ERROR, stage="predict", sop_instance_uid=uid, error=_one_line(e), retry=True)
        self.emit("retry", logging.WARNING, stage="predict", sop_instance_uid=uid, attempts=attempts, delay_s=delay)
        self._release(uid)

    # ------------------------------------------------------------------ build (done callbacks)

    def _built(self, future: cf.Future[Built], d: Decoded, job: BuildJob, infer_s: float, batch: int) -> None:
        try:
            try:
                built = future.result()
            except (ValueError, TypeError, AttributeError, KeyError) as e:  # a header highdicom cannot build on
                self._reject(d.uid, d.received_at, "encode", e)
                return
            except Exception as e:  # a worker that died: the image stays in the spool for the next round
                self.emit("failed", logging.ERROR, stage="encode", sop_instance_uid=d.uid, error=_one_line(e))
                self._release(d.uid)
                return
            meta = self._meta(d, job, built)
            self.spool.put_result(d.uid, built.files, meta)
            self.emit("predicted", sop_instance_uid=d.uid, label=job.label,
                      probability=round(job.probabilities[job.label], 6), batch=batch,
                      read_ms=round(1000 * d.read_s, 2), infer_ms=round(1000 * infer_s, 2),
                      encode_ms=round(1000 * built.build_s, 2), objects=sorted(built.files),
                      **{f"{k}_uid": v for k, v in built.uids.items()})  # fmt: skip
            self.produced.set()
            self._release(d.uid)
        except Exception as e:  # never let a callback die silently
            self.emit("failed", logging.ERROR, stage="store", sop_instance_uid=d.uid, error=_one_line(e))
            self._release(d.uid)
        finally:
            with self._lock:
                self._builds.discard(future)

    def _meta(self, d: Decoded, job: BuildJob, built: Built) -> dict[str, Any]:
        return {
            "sop_instance_uid": d.uid,
            "study_instance_uid": str(d.header.StudyInstanceUID),
            "received_at": d.received_at,
            "predicted_at": time.time(),
            "label": job.label,
            "probabilities": job.probabilities,
            "bundle_sha256": self.node.model.digest,
            "backend": self.node.model.backend,
            "objects": sorted(built.files),
            **{f"{k}_uid": v for k, v in built.uids.items()},
            "sent": [],
            "attempts": 0,
            "failed": False,
            "last_error": None,
        }


def _sc_image(img: np.ndarray) -> np.ndarray:
    """The radiograph at the SC's size (:func:`omsf2.serve.dicom_maps.sc_size`), [0, 1] float32."""
    from PIL import Image

    from omsf2.serve.dicom_maps import sc_size

    rows, cols = sc_size(*img.shape)
    if (rows, cols) == img.shape:
        return img
    return np.asarray(Image.fromarray(img, mode="F").resize((cols, rows), Image.Resampling.BILINEAR), np.float32)
