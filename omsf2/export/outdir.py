"""An export's output folder: who owns it, where work is staged, and how the result moves in.

Rules (docs/export-and-int8.md):

- **An export owns its OUT.** OUT may be absent, empty, or hold an earlier omsf2 export (its
  ``report.json`` lists the files it wrote). Files of that earlier export which this one does not
  write are removed once the new export has moved in, so ``--format engine`` never finds a stale
  ``model.int8.onnx`` of another checkpoint. A non-empty OUT that no omsf2 export wrote is refused
  unless ``overwrite``; with it, files named like export artifacts are replaced or removed and
  anything else there is left alone.
- **Nothing half-written reaches OUT.** Work happens in a hidden staging folder inside OUT
  (``.omsf2-export-<pid>-*``, same filesystem, so each move is an atomic ``os.replace``).
  ``report.json`` is written into the staging folder too, and files move in only after every
  artifact and the report exist; ``report.json`` moves last.
- **A kill leaves no litter.** SIGTERM is turned into the same cleanup as Ctrl-C while an export
  runs (:func:`sigterm_as_interrupt`); a staging folder left by a process that died anyway
  (SIGKILL, power loss) is removed by the next export into that OUT (:func:`remove_stale_staging`).

Trade-off: between the first and the last ``os.replace`` another reader can see a mix of old and
new files (each file is whole); the report, moved last, always describes a complete set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

REPORT = "report.json"
STAGING_PREFIX = ".omsf2-export-"
_STAGING_RE = re.compile(rf"^{re.escape(STAGING_PREFIX)}(\d+)-")
# A staging folder without a readable pid (an older omsf2) counts as stale after this long.
STALE_AFTER_S = 3600.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_staging(out: Path) -> list[str]:
    """Remove staging folders in ``out`` whose process is gone; returns their names."""
    removed: list[str] = []
    if not out.is_dir():
        return removed
    for p in out.iterdir():
        if not (p.is_dir() and p.name.startswith(STAGING_PREFIX)):
            continue
        m = _STAGING_RE.match(p.name)
        stale = (not _pid_alive(int(m.group(1)))) if m else time.time() - p.stat().st_mtime > STALE_AFTER_S
        if stale and not (m and int(m.group(1)) == os.getpid()):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
            log.info("removed the staging folder %s of an export that did not finish", p)
    return removed


def previous_files(out: Path, artifact_names: Iterable[str], overwrite: bool) -> set[str]:
    """Files in ``out`` that belong to an earlier export (removed unless this one rewrites them).

    Args:
        out: the output folder.
        artifact_names: every file name an export can write (the target table's, report included).
        overwrite: accept a non-empty folder that no omsf2 export wrote.

    Raises:
        ValueError: ``out`` is a file, or holds files no export wrote and ``overwrite`` is off.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"output '{out}' exists and is not a folder")
    if not out.is_dir():
        return set()
    present = {p.name for p in out.iterdir() if not p.name.startswith(STAGING_PREFIX)}
    if not present:
        return set()
    report = _read_report(out / REPORT)
    if report is not None:
        listed = set(report.get("files") or ())
        listed |= {a.get("file") for a in report.get("artifacts", {}).values() if isinstance(a, dict)}
        listed |= {f"{n}.json" for n in listed if isinstance(n, str) and n.endswith(".engine")}  # older reports
        listed = {n for n in listed if isinstance(n, str) and "/" not in n and n in present}
        return listed | {REPORT}
    if not overwrite:
        shown = ", ".join(sorted(present)[:3]) + (", ..." if len(present) > 3 else "")
        raise ValueError(
            f"output folder '{out}' holds files that no omsf2 export wrote ({shown}); "
            "choose an empty or new folder, or pass --overwrite to export into it anyway"
        )
    names = set(artifact_names)
    return {n for n in present if n in names or (n.endswith(".engine.json") and n[: -len(".json")] in names)}


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and "omsf2_version" in data and isinstance(data.get("artifacts", {}), dict):
        return data
    return None


def make_staging(out: Path) -> tuple[Path, bool]:
    """A staging folder inside ``out`` named by this process id, and whether ``out`` was created.

    Raises:
        ValueError: ``out`` cannot be created or written.
    """
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
    except OSError as e:
        raise ValueError(f"cannot write to output folder '{out}': {e.strerror or e}") from e
    return stage, created


def commit(stage: Path, out: Path, stale: set[str]) -> list[str]:
    """Move every file of ``stage`` into ``out`` (``report.json`` last), then remove ``stale`` leftovers.

    Returns:
        The names moved in.
    """
    files = sorted((p for p in stage.iterdir() if p.is_file()), key=lambda p: (p.name == REPORT, p.name))
    for p in files:
        os.replace(p, out / p.name)
    moved = [p.name for p in files]
    for name in sorted(stale - set(moved)):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
            log.info("removed %s (written by an earlier export, not by this one)", out / name)
    return moved


def discard(stage: Path, out: Path, created: bool) -> None:
    """Remove the staging folder, and ``out`` too if this export created it and it is empty."""
    shutil.rmtree(stage, ignore_errors=True)
    if created:
        with contextlib.suppress(OSError):
            out.rmdir()  # only if still empty: never delete what someone else put there


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises KeyboardInterrupt so cleanup runs as for Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
