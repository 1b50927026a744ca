"""The DICOM node's live INT8 monitor (``--monitor``): FP32 beside the deployed INT8 model, off the result path.

INT8 drift in service shows up as agreement with FP32 slowly falling on a new scanner or a new
protocol: activations outside the ranges calibration saw are clipped, and images near a decision
boundary flip. The export's gate measured agreement once, on its gate images; this watches it on
the images the node actually analyses.

* **Sampling.** An image is checked when a hash of its SOP Instance UID falls below ``fraction``
  (deterministic: the same stream is sampled the same way on every run and every node).
* **Off the result path.** The predict thread only hands the sampled image's model input and the
  INT8 probabilities to a bounded queue (a full queue drops the sample and counts it, never blocks);
  a monitor thread runs the bundle's own FP32 ONNX (onnxruntime, ``threads``) at the lowest CPU
  priority (``nice 19``), so analysis and delivery keep the cores they had.
* **Rolling figures per subgroup.** Top-1 agreement and the probability gap (largest absolute
  difference over the classes) over the last ``window`` samples, for all images and per
  manufacturer, station name and modality (the attributes a scanner or protocol change moves).
* **Drift, with an interval.** A group is drifting when, with at least ``min_samples`` samples, the
  upper end of the Wilson interval (``confidence``) of its agreement lies below the gate's bound:
  the bundle's ``min_agreement`` for all images, its ``min_group_agreement`` (where the export set
  one) for a subgroup. One disagreement never fires it. The drift is logged (``int8_drift``) and
  audited once; it clears (``int8_drift_cleared``) when the group's agreement is back at the bound.
* **Status.** The figures go to ``monitor.json`` in the spool after every sample (atomically);
  ``omsf2 serve dicom --status SPOOL`` prints them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.fileio import write_json
from omsf2.metrics import wilson_interval

STATUS_FILE = "monitor.json"
#: Header attributes whose groups are watched: (name in the figures, DICOM keyword).
GROUP_ATTRIBUTES = (("manufacturer", "Manufacturer"), ("station", "StationName"), ("modality", "Modality"))
NOT_RECORDED = "(not recorded)"
DEFAULT_WINDOW = 200  # samples per group the figures cover (--monitor-window)
_QUEUE = 64  # samples waiting for FP32; more are dropped (and counted), never waited for


@dataclasses.dataclass(frozen=True)
class MonitorSpec:
    """How the monitor samples and judges.

    Attributes:
        fraction: share of analysed images checked against FP32, in (0, 1].
        window: most recent samples per group that the figures cover.
        min_samples: fewest samples in a group's window before it can be judged.
        confidence: level of the Wilson interval the drift rule uses.
        threads: onnxruntime threads of the FP32 reference.
        bound: agreement bound for every group instead of the bundle's gate bounds (None: the gate's).
    """

    fraction: float
    window: int = DEFAULT_WINDOW
    min_samples: int = 30
    confidence: float = 0.95
    threads: int = 1
    bound: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.fraction, int | float) and 0 < self.fraction <= 1):
            raise ValueError(f"--monitor must be a fraction in (0, 1] of the analysed images, got {self.fraction!r}")
        if not (isinstance(self.window, int) and 10 <= self.window <= 100_000):
            raise ValueError(f"--monitor-window must be an integer in [10, 100000], got {self.window!r}")
        if not (isinstance(self.min_samples, int) and 1 <= self.min_samples <= self.window):
            raise ValueError(f"the monitor's min_samples must lie in [1, window], got {self.min_samples!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"the monitor's confidence must lie in (0, 1), got {self.confidence!r}")
        if not (isinstance(self.threads, int) and 1 <= self.threads <= 256):
            raise ValueError(f"the monitor's threads must be an integer in [1, 256], got {self.threads!r}")
        if self.bound is not None and not 0 < self.bound <= 1:
            raise ValueError(f"--monitor-bound must be an agreement in (0, 1], got {self.bound!r}")


@dataclasses.dataclass(frozen=True)
class GateBound:
    """The agreement a group must keep: ``overall`` for all images, ``group`` for a subgroup; ``source`` says whence."""

    overall: float
    group: float
    source: str


def gate_bound(manifest: dict[str, Any], deployed_file: str, override: float | None = None) -> GateBound:
    """The bundle's gate bounds for the INT8 file the node deploys.

    Read from the manifest's copy of the export's gate record (``export.int8``, ``export.int8_cpu``
    or ``export.engine_gate.<name>``) whose file is ``deployed_file``.

    Raises:
        ValueError: no gate record of that file (and no ``override``), or one that did not pass.
    """
    if override is not None:
        return GateBound(override, override, "--monitor-bound")
    export = manifest.get("export") or {}
    records = [(f"export.{k}", export.get(k)) for k in ("int8", "int8_cpu")]
    records += [(f"export.engine_gate.{k}", v) for k, v in sorted((export.get("engine_gate") or {}).items())]
    for where, rec in records:
        if isinstance(rec, dict) and deployed_file in (rec.get("file"), rec.get("engine")):
            if not rec.get("passed"):
                raise ValueError(f"the bundle's gate record {where} for {deployed_file} did not pass: it may not run")
            overall = float(rec.get("min_agreement", 0.0))
            group = rec.get("min_group_agreement")
            if overall <= 0:
                raise ValueError(
                    f"the bundle's gate ({where}) set no agreement bound (min_agreement {overall:g}): nothing to "
                    "watch against; give --monitor-bound"
                )
            return GateBound(overall, overall if group is None else float(group), f"manifest {where}")
    raise ValueError(
        f"the bundle records no INT8 gate for {deployed_file}, so the monitor has no bound: give --monitor-bound, "
        "or bundle an export whose INT8 gate ran"
    )


def is_sampled(uid: str, fraction: float) -> bool:
    """Whether image ``uid`` is checked: a hash of the UID below ``fraction`` (the same answer everywhere)."""
    h = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big")
    return h < fraction * 2**64


def groups_of(header: Any) -> list[tuple[str, str]]:
    """(attribute, value) groups an image counts in: ``("all", "all")`` and one per :data:`GROUP_ATTRIBUTES`."""
    out = [("all", "all")]
    for name, keyword in GROUP_ATTRIBUTES:
        value = " ".join(str(header.get(keyword, "") or "").split()) if header is not None else ""
        out.append((name, value or NOT_RECORDED))
    return out


class GroupWindow:
    """The last ``window`` samples of one group: agreement, probability gaps and the drift state."""

    def __init__(self, window: int) -> None:
        self.agree: collections.deque[bool] = collections.deque(maxlen=window)
        self.gap: collections.deque[float] = collections.deque(maxlen=window)
        self.total = 0
        self.drift_since: str | None = None

    def add(self, agree: bool, gap: float) -> None:
        """Count one sample."""
        self.agree.append(agree)
        self.gap.append(gap)
        self.total += 1

    def figures(self, confidence: float) -> dict[str, Any]:
        """n, agreement with its Wilson interval, mean and largest probability gap over the window."""
        n = len(self.agree)
        k = sum(self.agree)
        lo, hi = wilson_interval(k, n, confidence)
        return {"n": n, "total": self.total, "agreement": k / n, "ci": [lo, hi], "mean_gap": float(np.mean(self.gap)),
                "max_gap": float(np.max(self.gap)), "drift": self.drift_since is not None,
                "drift_since": self.drift_since}  # fmt: skip


def _lower_priority() -> None:
    """Run this thread at nice 19 (Linux: the priority is per thread), so FP32 waits for the result path."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: the queue's bound still keeps the result path
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class Int8Monitor:
    """Compares sampled images' INT8 probabilities with the bundle's FP32 model; see the module docstring.

    Args:
        spec: sampling and judging settings.
        reference: a :class:`~omsf2.runtime.predictor.Predictor` on the same bundle's FP32 ONNX.
        bound: the agreement bounds (:func:`gate_bound`).
        status_path: where the figures are written (``monitor.json`` in the spool).
        on_drift: called with ``(event, fields)`` for ``int8_drift`` and ``int8_drift_cleared``.
        about: fields copied into the status (bundle digest, deployed file and backend).
    """

    def __init__(
        self,
        spec: MonitorSpec,
        reference: Any,
        bound: GateBound,
        status_path: Path,
        on_drift: Callable[[str, dict[str, Any]], None],
        about: dict[str, Any],
    ) -> None:
        self.spec, self.reference, self.bound = spec, reference, bound
        self.status_path, self.on_drift, self.about = Path(status_path), on_drift, about
        self._queue: queue.Queue[tuple[str, Any, np.ndarray, np.ndarray] | None] = queue.Queue(_QUEUE)
        self._groups: dict[tuple[str, str], GroupWindow] = {}
        self._lock = threading.Lock()
        self.offered = self.checked = self.dropped = self.failed = 0
        self._thread = threading.Thread(target=self._loop, name="omsf2-monitor", daemon=True)
        self._thread.start()
        self._write_status()

    # ------------------------------------------------------------------ the predict thread's side

    def offer(self, uid: str, header: Any, x: np.ndarray, int8_probs: np.ndarray) -> bool:
        """Hand one analysed image over if it is sampled; never blocks. Returns whether it was queued."""
        if not is_sampled(uid, self.spec.fraction):
            return False
        with self._lock:
            self.offered += 1
        try:
            self._queue.put_nowait((uid, header, np.asarray(x), np.asarray(int8_probs, np.float64)))
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False

    def close(self, timeout: float = 30.0) -> None:
        """Check what is queued (for up to ``timeout`` seconds), then stop the thread and write the last figures."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # the thread is gone or stuck: the node stops anyway
            self._queue.put(None, timeout=timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._write_status()

    # ------------------------------------------------------------------ the monitor thread

    def _loop(self) -> None:
        _lower_priority()
        while True:
            item = self._queue.get()
            if item is None:
                return
            uid, header, x, int8_probs = item
            try:
                fp32, _ = self.reference.run_batch(x[None])
                self.record(header, int8_probs, fp32[0])
            except Exception as e:  # the monitor never takes the node down; the count says it failed
                with self._lock:
                    self.failed += 1
                logging.getLogger(__name__).warning("the INT8 monitor failed on %s: %s", uid, e)

    def record(self, header: Any, int8_probs: np.ndarray, fp32_probs: np.ndarray) -> None:
        """Count one comparison in each of the image's groups, judge them, write the status."""
        agree = int(np.argmax(int8_probs)) == int(np.argmax(fp32_probs))
        gap = float(np.max(np.abs(np.asarray(int8_probs) - np.asarray(fp32_probs))))
        events = []
        with self._lock:
            self.checked += 1
            for key in groups_of(header):
                w = self._groups.setdefault(key, GroupWindow(self.spec.window))
                w.add(agree, gap)
                change = self._judge(key, w)
                if change is not None:
                    events.append(change)
        for event in events:
            self.on_drift(*event)
        self._write_status()

    def _judge(self, key: tuple[str, str], w: GroupWindow) -> tuple[str, dict[str, Any]] | None:
        bound = self.bound.overall if key[0] == "all" else self.bound.group
        f = w.figures(self.spec.confidence)
        fields = {"attribute": key[0], "group": key[1], "n": f["n"], "agreement": round(f["agreement"], 4),
                  "ci": [round(c, 4) for c in f["ci"]], "confidence": self.spec.confidence, "bound": bound,
                  "bound_from": self.bound.source, "mean_gap": round(f["mean_gap"], 6)}  # fmt: skip
        if w.drift_since is None and f["n"] >= self.spec.min_samples and f["ci"][1] < bound:
            w.drift_since = _now()
            return "int8_drift", fields
        if w.drift_since is not None and f["agreement"] >= bound:
            w.drift_since = None
            return "int8_drift_cleared", fields
        return None

    # ------------------------------------------------------------------ figures

    def status(self) -> dict[str, Any]:
        """The monitor's figures as ``monitor.json`` holds them."""
        with self._lock:
            groups = [
                {"attribute": a, "group": g, **w.figures(self.spec.confidence),
                 "bound": self.bound.overall if a == "all" else self.bound.group}
                for (a, g), w in sorted(self._groups.items(), key=lambda kv: (kv[0][0] != "all", kv[0]))
            ]  # fmt: skip
            counts = {"offered": self.offered, "checked": self.checked, "dropped": self.dropped, "failed": self.failed}
        return {
            "updated": _now(),
            **self.about,
            "reference": "the bundle's FP32 ONNX (onnxruntime)",
            "fraction": self.spec.fraction,
            "window": self.spec.window,
            "min_samples": self.spec.min_samples,
            "confidence": self.spec.confidence,
            "bound": dataclasses.asdict(self.bound),
            **counts,
            "groups": groups,
        }

    def _write_status(self) -> None:
        try:
            write_json(self.status_path, self.status())
        except OSError as e:  # a full disk must not stop the monitor; the events still say what happens
            logging.getLogger(__name__).warning("cannot write %s: %s", self.status_path, e)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_status(spool: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last figures a monitor wrote in ``spool`` (None: no monitor ran there)."""
    import json

    path = Path(spool) / STATUS_FILE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the monitor's figures '{path}': {e}") from None
