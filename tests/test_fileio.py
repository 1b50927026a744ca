"""Atomic writes: all or nothing."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from omsf2.fileio import atomic_write, write_json


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path) -> None:
    target = tmp_path / "a" / "m.json"
    write_json(target, {"x": 1})
    write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert os.listdir(target.parent) == ["m.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    target = tmp_path / "m.json"
    target.write_text("old")

    def boom(p) -> None:
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["m.json"]
    with pytest.raises(ValueError, match=r"Out of range float values are not JSON compliant|NaN"):
        write_json(target, {"x": float("nan")})
    assert target.read_text() == "old"


def test_unwritable_destination_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot write"):
        write_json(blocker / "sub" / "m.json", {})


def test_sha256_file_matches_hashlib_across_block_boundaries(tmp_path: Path) -> None:
    import hashlib

    from omsf2.fileio import sha256_file

    data = bytes(range(256)) * 5000  # 1.28 MB: more than one 1 MiB block
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
