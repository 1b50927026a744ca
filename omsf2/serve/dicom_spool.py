"""The DICOM node's spool: the on-disk queue that makes the node lose nothing and send nothing twice.

Layout of ``SPOOL/``, one entry per received SOP Instance UID (UIDs are digits and dots, safe as
file names) and, where a result depends on the model, per analysis: ``KEY`` is :attr:`Spool.key`,
derived from the bundle's digest and the backend (:func:`analysis_key`), so a resend is deduplicated
only against an analysis by the same bundle on the same backend and a new bundle re-analyses it::

    lock                    held (flock) by the one node that uses the spool
    incoming/UID.dcm        received and acknowledged, not yet analysed (written before the ack)
    results/UID@KEY/        predicted: sr.dcm, pm.dcm, sc.dcm and meta.json, waiting for the destination's ack
    delivered/UID@KEY.json  delivered: what was sent and when (the record that deduplicates a resend)
    declined/UID@KEY.json   not applicable under this bundle (clinical gating), with the reason
    rejected/UID.dcm, .json received but not readable (a corrupt pixel payload ...), with the reason
    sources/UID.dcm         the analysed (or declined) image, kept so ``--reanalyse`` can run it again
                            under a new bundle; the oldest are evicted first when the spool needs room

A spool written before analysis keys (``KEY`` empty: ``results/UID/``, ``delivered/UID.json``) is
read as it is: its results are still delivered, and a resend is analysed again under the current key.

Every step is one atomic rename: a file or folder is written under a ``.tmp`` name beside its
target, fsynced, then renamed, so a node killed at any instant (SIGKILL included) leaves each
entry in exactly one state (or, between two renames, in two, which :meth:`Spool.recover` resolves
toward the later one). The trade-off: one fsync per received image and per result, in exchange for
store-then-ack and forget-after-ack. The result objects carry SOP Instance UIDs derived from the
source UID and the model, so re-sending one after a crash between the destination's ack and the
``delivered`` record replaces nothing and adds nothing at the PACS: it is the same instance.

A received instance enters ``incoming/`` by ``link(2)`` of its fsynced temporary file, which fails
if the name exists: two associations sending one SOP Instance UID at once store it once, with no
lock held across the fsyncs. The spool counts the bytes it holds (received, results, rejected) and
refuses an instance that would take it past its bound (:class:`SpoolFull`), so a full disk never
loses what was already acknowledged.
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
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omsf2.fileio import default_mode, write_json

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: The folders of a spool; the first four are those of every spool (older ones have no others).
STATES = ("incoming", "results", "delivered", "rejected", "declined", "sources")


def analysis_key(digest: str, backend: str) -> str:
    """The spool's key of an analysis: 16 hex digits of sha256(bundle digest / backend)."""
    import hashlib

    return hashlib.sha256(f"{digest}/{backend}".encode()).hexdigest()[:16]


class DuplicateInstance(ValueError):
    """The SOP Instance UID is already in the spool (stored by another association, or earlier)."""


class SpoolFull(OSError):
    """Storing the instance would take the spool past its byte bound."""


def valid_uid(uid: str) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters (and so a safe file name)."""
    return isinstance(uid, str) and 0 < len(uid) <= 64 and bool(_UID.match(uid))


@dataclasses.dataclass(frozen=True)
class PendingResult:
    """A result waiting for delivery: the source's SOP Instance UID, its folder and its ``meta.json``.

    ``entry`` (the folder's name, ``UID@KEY``) identifies the result; one source may have results of
    several analyses waiting.
    """

    uid: str
    folder: Path
    meta: dict[str, Any]

    @property
    def entry(self) -> str:
        """The result's name in the spool (``UID@KEY``, or ``UID`` in an older spool)."""
        return self.folder.name


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
    bytes_used: int = 0
    declined: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    sources: int = 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool folder; see the module docstring. Methods are safe to call from several threads.

    Args:
        root: the folder (made if missing).
        keep_sources: keep each analysed image in ``sources/`` (for ``--reanalyse``), evicted oldest
            first when the spool needs room.
    """

    def __init__(self, root: str | os.PathLike[str], keep_sources: bool = True) -> None:
        self.root = Path(root)
        self.key = ""  # the current analysis (analysis_key); set by the node once its model is loaded
        self.keep_sources = keep_sources
        self.created = not self.root.exists()  # a node that never starts removes what it made
        try:
            for name in STATES:
                (self.root / name).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot use '{self.root}' as the spool folder: {e.strerror or e}") from None
        self._lock_fd: int | None = None
        self._bytes: int | None = None  # counted on first use
        self._bytes_lock = threading.Lock()

    def remove_if_unused(self) -> None:
        """Remove the spool folder if this process created it and it holds nothing (a node that never started)."""
        if not self.created:
            return
        self.unlock()
        leftovers = [p for p in self.root.rglob("*") if p.is_file() and p.name != "lock"]
        if not leftovers:
            shutil.rmtree(self.root, ignore_errors=True)

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

    def entry(self, uid: str) -> str:
        """The name of ``uid``'s analysis under the current key (``UID@KEY``; ``UID`` without a key)."""
        return f"{uid}@{self.key}" if self.key else uid

    def state(self, uid: str) -> str | None:
        """The furthest state ``uid`` has reached under the current key, or None.

        delivered and declined > results > incoming; rejected. None: never received, or analysed only
        by another bundle or backend.
        """
        entry = self.entry(uid)
        if (self.root / "delivered" / f"{entry}.json").exists():
            return "delivered"
        if (self.root / "declined" / f"{entry}.json").exists():
            return "declined"
        if (self.root / "results" / entry).is_dir():
            return "results"
        if self.incoming_path(uid).exists():
            return "incoming"
        if (self.root / "rejected" / f"{uid}.json").exists():
            return "rejected"
        return None

    # ------------------------------------------------------------------ bytes held

    def bytes_used(self) -> int:
        """Bytes of received instances, results waiting and rejected instances (counted once, then kept)."""
        with self._bytes_lock:
            if self._bytes is None:
                self._bytes = sum(
                    p.stat().st_size
                    for name in ("incoming", "results", "rejected", "sources")
                    for p in (self.root / name).rglob("*")
                    if p.is_file()
                )
            return self._bytes

    def _account(self, delta: int, limit: int | None = None) -> None:
        """Add ``delta`` bytes; with ``limit``, evict kept sources first, then refuse (SpoolFull) what would pass it."""
        used = self.bytes_used()
        with self._bytes_lock:
            if self._bytes is None:  # counted by bytes_used() just above; never None here
                self._bytes = used
            if limit is not None and delta > 0 and self._bytes + delta > limit:
                self._bytes -= self._evict_sources(self._bytes + delta - limit)
            if limit is not None and delta > 0 and self._bytes + delta > limit:
                raise SpoolFull(f"the spool holds {self._bytes} bytes; {delta} more would pass its bound of {limit}")
            self._bytes = max(0, self._bytes + delta)

    def _evict_sources(self, needed: int) -> int:
        """Remove kept sources, oldest first, until ``needed`` bytes are freed; the bytes freed."""
        stamped = []
        for p in (self.root / "sources").glob("*.dcm"):
            with contextlib.suppress(FileNotFoundError):
                st = p.stat()
                stamped.append((st.st_mtime, p, st.st_size))
        freed = 0
        for _, p, size in sorted(stamped, key=lambda t: (t[0], t[1].name)):
            if freed >= needed:
                break
            p.unlink(missing_ok=True)
            freed += size
        return freed

    def _keep_source(self, uid: str) -> int:
        """Move ``incoming/UID.dcm`` to ``sources/`` (or delete it); the bytes no longer held."""
        incoming = self.incoming_path(uid)
        try:
            size = incoming.stat().st_size
        except FileNotFoundError:
            return 0
        if self.keep_sources:
            target = self.root / "sources" / f"{uid}.dcm"
            old = target.stat().st_size if target.exists() else 0
            os.replace(incoming, target)
            return old
        incoming.unlink(missing_ok=True)
        return size

    # ------------------------------------------------------------------ states (continued)

    def store_incoming(self, uid: str, data: bytes, limit: int | None = None) -> Path:
        """Write a received instance durably (fsynced file and folder) under a name only it gets; returns its path.

        Raises:
            DuplicateInstance: ``uid`` is already in ``incoming/`` (another association stored it first).
            SpoolFull: storing it would take the spool past ``limit`` bytes.
            OSError: the disk refused the write.
        """
        target = self.incoming_path(uid)
        self._account(len(data), limit)
        fd, tmp = tempfile.mkstemp(prefix=f".{uid}.", suffix=".tmp", dir=target.parent)
        try:
            try:
                os.fchmod(fd, default_mode())
                view = memoryview(data)
                while view:  # os.write may write less than asked
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, target)  # atomic, and refused if the name exists
        except FileExistsError:
            self._account(-len(data))
            raise DuplicateInstance(uid) from None
        except BaseException:
            self._account(-len(data))
            raise
        finally:
            Path(tmp).unlink(missing_ok=True)
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
        """Move an instance from incoming to results (``results/UID@KEY``): ``files`` (name -> bytes) and ``meta.json``.

        The folder is assembled under a temporary name and renamed, then the incoming file moves to
        ``sources/`` (or is removed).
        """
        final = self.root / "results" / self.entry(uid)
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
            self._account(sum(p.stat().st_size for p in final.iterdir()))
        self._account(-self._keep_source(uid))
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
            out.append(PendingResult(str(meta.get("sop_instance_uid") or folder.name.split("@")[0]), folder, meta))
        return sorted(out, key=lambda r: (r.meta.get("received_at", 0.0), r.uid))

    def update_meta(self, result: PendingResult, **changes: Any) -> PendingResult:
        """Rewrite a pending result's ``meta.json`` atomically with ``changes``."""
        meta = {**result.meta, **changes}
        write_json(result.folder / "meta.json", meta)
        return PendingResult(result.uid, result.folder, meta)

    def mark_delivered(self, result: PendingResult, **record: Any) -> None:
        """Record the delivery (atomic), then forget the result's files."""
        write_json(self.root / "delivered" / f"{result.entry}.json", {**result.meta, **record})
        _fsync_dir(self.root / "delivered")
        size = sum(p.stat().st_size for p in result.folder.iterdir() if p.is_file()) if result.folder.is_dir() else 0
        shutil.rmtree(result.folder, ignore_errors=True)
        self._account(-size)

    def reject(self, uid: str, reason: str, received_at: float) -> None:
        """Keep an instance that cannot be predicted, with the reason, out of the queue."""
        write_json(
            self.root / "rejected" / f"{uid}.json",
            {"sop_instance_uid": uid, "reason": reason, "received_at": received_at, "rejected_at": time.time()},
        )
        src = self.incoming_path(uid)
        if src.exists():
            os.replace(src, self.root / "rejected" / f"{uid}.dcm")

    def decline(self, uid: str, reason: str, received_at: float, **record: Any) -> None:
        """Record that ``uid`` is not applicable under the current key (clinical gating), and keep its image."""
        write_json(
            self.root / "declined" / f"{self.entry(uid)}.json",
            {"sop_instance_uid": uid, "reason": reason, "received_at": received_at, "declined_at": time.time(),
             "analysis": self.key, **record},
        )  # fmt: skip
        self._account(-self._keep_source(uid))

    def reanalyse(self) -> int:
        """Move every kept source not yet delivered or declined under the current key back to incoming; how many."""
        count = 0
        for p in sorted((self.root / "sources").glob("*.dcm")):
            uid = p.stem
            if self.state(uid) in ("delivered", "declined", "results", "incoming"):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.replace(p, self.incoming_path(uid))
                count += 1
        return count

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
            if self.state(uid) in ("results", "delivered", "declined"):
                self._keep_source(uid)
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
        declined = []
        for p in sorted((self.root / "declined").glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                declined.append(json.loads(p.read_text()))
        return SpoolStatus(
            root=str(self.root),
            incoming=len(self.pending_incoming()),
            pending=len(pending) - len(failed),
            failed=failed,
            rejected=rejected,
            delivered=sum(1 for p in (self.root / "delivered").glob("*.json") if not p.name.startswith(".")),
            locked=self.is_locked(),
            bytes_used=self.bytes_used(),
            declined=declined,
            sources=sum(1 for _ in (self.root / "sources").glob("*.dcm")),
        )


def spool_status(root: str | os.PathLike[str]) -> SpoolStatus:
    """:meth:`Spool.status` of an existing spool folder, without creating one.

    Raises:
        ValueError: ``root`` is not a spool folder.
    """
    path = Path(root)
    if not all((path / name).is_dir() for name in STATES[:4]):
        raise ValueError(f"'{path}' is not an omsf2 DICOM spool (no {', '.join(s + '/' for s in STATES[:4])})")
    return Spool(path).status()


def iter_delivered(root: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The delivery records of a spool (for reports and benchmarks)."""
    for p in sorted((Path(root) / "delivered").glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            yield json.loads(p.read_text())
