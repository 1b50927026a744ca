"""The hashes that tie each step of the chain to what it consumed: folder listings, file lists, records.

Training records the hash of its data, the export that of the calibration folder, the calibration
set and the gate set, and ``omsf2 trace`` recomputes each one from the disk (:mod:`omsf2.runtime.trace`).
All of them are built here, in one way, so the side that records and the side that verifies cannot
drift apart. A listing hash covers, for each file in sorted order, its path relative to the folder,
its size and the sha256 of its bytes, so one file added, removed, renamed or changed changes it; a
record hash is the sha256 of canonical JSON (sorted keys, no spaces).

The trade-off: a listing reads every file once (cxr-real, 752 files and 34 MB, in well under a
second; a CheXpert-sized set would take minutes), so for a CheXpert-style CSV source only the label
CSVs are hashed and the listing says so (``scope``). Standard library only: the torch-free runtime
verifies with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omsf2.fileio import sha256_file

SCOPE_FOLDER = "every file under the folder (relative path, size and sha256 of each)"
SCOPE_CSV = "the label CSV file(s) only; the images they name are not hashed"
SCOPE_FILE = "the file's bytes"


def folder_files(root: str | os.PathLike[str]) -> list[str]:
    """Every file under ``root`` whose path has no hidden part, as sorted POSIX paths relative to ``root``."""
    base = Path(root)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(base)
        found.extend((rel / f).as_posix() for f in filenames if not f.startswith("."))
    return sorted(found)


def files_sha256(root: str | os.PathLike[str], names: Iterable[str]) -> dict[str, Any]:
    """``{"files", "bytes", "sha256"}`` over ``names`` (paths relative to ``root``), in sorted order.

    Raises:
        OSError: a named file cannot be read (FileNotFoundError where it is gone).
    """
    base = Path(root)
    h = hashlib.sha256()
    total = count = 0
    for name in sorted(set(names)):
        path = base / name
        size = path.stat().st_size
        h.update(f"{name}\t{size}\t{sha256_file(path)}\n".encode())
        total += size
        count += 1
    return {"files": count, "bytes": total, "sha256": h.hexdigest()}


def folder_sha256(root: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`files_sha256` over :func:`folder_files`, with the resolved path and the scope."""
    return {"path": str(Path(root).resolve()), "scope": SCOPE_FOLDER, **files_sha256(root, folder_files(root))}


def record_sha256(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, compact separators, no NaN)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def data_listing(source: str | os.PathLike[str]) -> dict[str, Any]:
    """The listing of a data source on disk: a folder, a CheXpert-style folder (``train.csv``) or one CSV.

    Returns:
        ``{"kind", "path", "scope", "files", "bytes", "sha256"}``; ``kind`` is ``folder``,
        ``csv-folder`` (only its top-level ``*.csv`` are hashed) or ``file``.

    Raises:
        ValueError: ``source`` does not exist.
        OSError: a file cannot be read.
    """
    path = Path(source)
    if path.is_file():
        size = path.stat().st_size
        return {
            "kind": "file",
            "path": str(path.resolve()),
            "scope": SCOPE_FILE,
            "files": 1,
            "bytes": size,
            "sha256": sha256_file(path),
        }
    if not path.is_dir():
        raise ValueError(f"data source '{path}' is neither a folder nor a file")
    if (path / "train.csv").is_file():
        csvs = sorted(p.name for p in path.glob("*.csv") if p.is_file())
        return {"kind": "csv-folder", "path": str(path.resolve()), "scope": SCOPE_CSV, **files_sha256(path, csvs)}
    return {"kind": "folder", **folder_sha256(path)}
