"""Atomic file writes: a reader (or a crash) never sees a half-written artifact.

Each writer goes to a temporary sibling in the same folder, is flushed and fsynced, then
replaces the target with ``os.replace`` (atomic on POSIX and Windows). On any error the
temporary is removed and the target is left as it was.

The temporary gets the mode any new file would (``0666`` minus the umask) through ``fchmod`` on its
descriptor. The umask is read without changing it (``/proc/self/status`` on Linux): setting it to 0
and back, the usual idiom, opens a window in which a file another thread creates gets mode 0666.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _umask_now() -> int | None:
    """The process umask read from ``/proc/self/status`` (Linux 4.7+), or None where it cannot be read."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    now = _umask_now()
    if now is not None:
        return now
    # No /proc: set and restore once, while importing (one thread, before any writer starts).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_at_import()


def process_umask() -> int:
    """The process umask, read without changing it (the value at import where /proc is missing)."""
    now = _umask_now()
    return _UMASK_AT_IMPORT if now is None else now


def default_mode(folder: bool = False) -> int:
    """The mode ``open``/``mkdir`` would give a new file (0666) or folder (0777) under the umask."""
    return (0o777 if folder else 0o666) & ~process_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Raises:
        ValueError: the parent folder cannot be created or written (one-line message).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise ValueError(f"cannot write '{target}': {e.strerror or e}") from e
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, default_mode())  # mkstemp creates 0600; artifacts get what any new file would
        finally:
            os.close(fd)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Check, before any work, that a file can be written at ``path``; returns ``Path(path)``.

    Nothing is created: the nearest existing ancestor folder must be writable (a probe file is
    made and removed there), and neither ``path`` nor an ancestor may be of the wrong kind.

    Raises:
        ValueError: ``path`` is a folder, an ancestor is a file, or the folder cannot be written.
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"'{target}' is a folder; give a file name")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write '{target}': '{folder}' is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".omsf2-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write '{target}': {e.strerror or e}") from e
    return target


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``; returns ``Path(path)``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a reader sees the old file or the new one, never a part."""

    def _write(p: Path) -> None:
        p.write_text(text)

    return atomic_write(path, _write)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (NaN is refused: it is not JSON)."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
