"""The DICOM node's spool: the on-disk queue that makes the node lose nothing and send nothing twice.

Layout of ``SPOOL/``, one entry per received SOP Instance UID (UIDs are digits and dots, safe as
file names)::

    lock                    held (flock) by the one node that uses the spool
    incoming/UID.dcm        received and acknowledged, not yet predicted (written before the ack)
    results/UID/            predicted: sr.dcm, sc.dcm and meta.json, waiting for the destination's ack
    delivered/UID.json      delivered: what was sent and when (the record that deduplicates a resend)
    rejected/UID.dcm, .json received but not predictable (a corrupt pixel payload ...), with the reason

Every step is one atomic rename: a file or folder is written under a ``.tmp`` name beside its
target, fsynced, then renamed, so a node killed at any instant (SIGKILL included) leaves each
entry in exactly one state (or, between two renames, in two, which :meth:`Spool.recover` resolves
toward the later one). The trade-off: one fsync per received image and per result, in exchange for
store-then-ack and forget-after-ack. The result objects carry SOP Instance UIDs derived from the
source UID and the model, so re-sending one after a crash between the destination's ack and the
``delivered`` record replaces nothing and adds nothing at the PACS: it is the same instance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omsf2.fileio import atomic_path, write_json

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
STATES = ("incoming", "results", "delivered", "rejected")


def valid_uid(uid: str) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters (and so a safe file name)."""
    return isinstance(uid, str) and 0 < len(uid) <= 64 and bool(_UID.match(uid))


@dataclasses.dataclass(frozen=True)
class PendingResult:
    """A result waiting for delivery: its folder and its ``meta.json``."""

    uid: str
    folder: Path
    meta: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SpoolStatus:
    """What a spool holds: counts per state and the entries that need attention."""

    root: str
    incoming: int
    pending: int
    failed: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    delivered: int
    locked: bool


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool folder; see the module docstring. Methods are safe to call from several threads."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            for name in STATES:
                (self.root / name).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot use '{self.root}' as the spool folder: {e.strerror or e}") from None
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ ownership

    def lock(self) -> None:
        """Take the spool for this process; a second node on the same spool would break exactly-once.

        Raises:
            ValueError: another process holds the spool.
        """
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ValueError(f"spool '{self.root}' is in use by another omsf2 node") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the spool (also released by the OS when the process dies)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def is_locked(self) -> bool:
        """Whether a running node holds this spool."""
        path = self.root / "lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    # ------------------------------------------------------------------ states

    def incoming_path(self, uid: str) -> Path:
        """Where a received instance is stored."""
        return self.root / "incoming" / f"{uid}.dcm"

    def state(self, uid: str) -> str | None:
        """The furthest state ``uid`` has reached (delivered > results > incoming; rejected), or None."""
        if (self.root / "delivered" / f"{uid}.json").exists():
            return "delivered"
        if (self.root / "results" / uid).is_dir():
            return "results"
        if self.incoming_path(uid).exists():
            return "incoming"
        if (self.root / "rejected" / f"{uid}.json").exists():
            return "rejected"
        return None

    def store_incoming(self, uid: str, data: bytes) -> Path:
        """Write a received instance durably (atomic, fsynced file and folder); returns its path."""
        target = self.incoming_path(uid)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        _fsync_dir(target.parent)
        return target

    def pending_incoming(self) -> list[Path]:
        """Received instances not yet predicted, oldest first."""
        files = [p for p in (self.root / "incoming").glob("*.dcm") if not p.name.startswith(".")]
        stamped = []
        for p in files:
            with contextlib.suppress(FileNotFoundError):
                stamped.append((p.stat().st_mtime, p.name, p))
        return [p for _, _, p in sorted(stamped)]

    def put_result(self, uid: str, files: dict[str, bytes], meta: dict[str, Any]) -> Path:
        """Move an instance from incoming to results: ``files`` (name -> bytes) and ``meta.json``.

        The folder is assembled under a temporary name and renamed, then the incoming file is removed.
        """
        final = self.root / "results" / uid
        if not final.exists():
            tmp = Path(tempfile.mkdtemp(prefix=f".{uid}.", suffix=".tmp", dir=self.root / "results"))
            try:
                for name, data in files.items():
                    with open(tmp / name, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                write_json(tmp / "meta.json", meta)
                _fsync_dir(tmp)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _fsync_dir(final.parent)
        self.incoming_path(uid).unlink(missing_ok=True)
        return final

    def pending_results(self) -> list[PendingResult]:
        """Results waiting for delivery, oldest receipt first."""
        out = []
        for folder in (self.root / "results").iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                meta = json.loads((folder / "meta.json").read_text())
            except (OSError, ValueError):
                continue  # removed by a concurrent delivery
            out.append(PendingResult(folder.name, folder, meta))
        return sorted(out, key=lambda r: (r.meta.get("received_at", 0.0), r.uid))

    def update_meta(self, result: PendingResult, **changes: Any) -> PendingResult:
        """Rewrite a pending result's ``meta.json`` atomically with ``changes``."""
        meta = {**result.meta, **changes}
        write_json(result.folder / "meta.json", meta)
        return PendingResult(result.uid, result.folder, meta)

    def mark_delivered(self, result: PendingResult, **record: Any) -> None:
        """Record the delivery (atomic), then forget the result's files."""
        write_json(self.root / "delivered" / f"{result.uid}.json", {**result.meta, **record})
        _fsync_dir(self.root / "delivered")
        shutil.rmtree(result.folder, ignore_errors=True)

    def reject(self, uid: str, reason: str, received_at: float) -> None:
        """Keep an instance that cannot be predicted, with the reason, out of the queue."""
        write_json(
            self.root / "rejected" / f"{uid}.json",
            {"sop_instance_uid": uid, "reason": reason, "received_at": received_at, "rejected_at": time.time()},
        )
        src = self.incoming_path(uid)
        if src.exists():
            os.replace(src, self.root / "rejected" / f"{uid}.dcm")

    def recover(self) -> dict[str, int]:
        """Resolve what a killed node left: temporary files, and entries caught between two renames.

        Returns:
            Counts of what was cleaned: ``tmp`` files or folders, ``incoming`` files already predicted,
            ``results`` folders already delivered.
        """
        counts = {"tmp": 0, "incoming": 0, "results": 0}
        for name in STATES:
            for p in (self.root / name).glob(".*.tmp"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                counts["tmp"] += 1
        for p in (self.root / "incoming").glob("*.dcm"):
            uid = p.stem
            if (self.root / "results" / uid).is_dir() or (self.root / "delivered" / f"{uid}.json").exists():
                p.unlink(missing_ok=True)
                counts["incoming"] += 1
        for folder in (self.root / "results").iterdir():
            if (self.root / "delivered" / f"{folder.name}.json").exists():
                shutil.rmtree(folder, ignore_errors=True)
                counts["results"] += 1
        return counts

    # ------------------------------------------------------------------ reporting

    def status(self) -> SpoolStatus:
        """Counts per state, and the failed and rejected entries with their reasons."""
        pending = self.pending_results()
        failed = [
            {k: r.meta.get(k) for k in ("sop_instance_uid", "attempts", "last_error", "received_at")}
            for r in pending
            if r.meta.get("failed")
        ]
        rejected = []
        for p in sorted((self.root / "rejected").glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                rejected.append(json.loads(p.read_text()))
        return SpoolStatus(
            root=str(self.root),
            incoming=len(self.pending_incoming()),
            pending=len(pending) - len(failed),
            failed=failed,
            rejected=rejected,
            delivered=sum(1 for p in (self.root / "delivered").glob("*.json") if not p.name.startswith(".")),
            locked=self.is_locked(),
        )


def spool_status(root: str | os.PathLike[str]) -> SpoolStatus:
    """:meth:`Spool.status` of an existing spool folder, without creating one.

    Raises:
        ValueError: ``root`` is not a spool folder.
    """
    path = Path(root)
    if not all((path / name).is_dir() for name in STATES):
        raise ValueError(f"'{path}' is not an omsf2 DICOM spool (no {', '.join(s + '/' for s in STATES)})")
    return Spool(path).status()


def iter_delivered(root: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The delivery records of a spool (for reports and benchmarks)."""
    for p in sorted((Path(root) / "delivered").glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            yield json.loads(p.read_text())
