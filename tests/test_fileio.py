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


def test_a_file_another_thread_creates_during_a_write_keeps_the_umask(tmp_path: Path, monkeypatch) -> None:
    """Another thread's file, created at the worst instant of an atomic write, gets 0666 minus the umask.

    The worst instant is simulated deterministically: every time the writer changes the process
    umask, another thread creates a file right then. Setting the umask to 0 and back (the old
    idiom) gives that file mode 0666; reading the umask without changing it gives it none.
    """
    import threading

    real_umask = os.umask
    modes: list[int] = []

    def create_in_another_thread() -> None:
        p = tmp_path / f"other-{len(modes)}"
        fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o666)
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        os.close(fd)

    def umask_then_another_thread(mask: int) -> int:
        old = real_umask(mask)
        t = threading.Thread(target=create_in_another_thread)
        t.start()
        t.join()
        return old

    old = real_umask(0o022)
    try:
        monkeypatch.setattr(os, "umask", umask_then_another_thread)
        for k in range(3):
            write_json(tmp_path / "out" / f"m{k}.json", {"k": k})
        monkeypatch.setattr(os, "umask", real_umask)
        assert all(m == 0o644 for m in modes), [oct(m) for m in modes]
        assert stat.S_IMODE((tmp_path / "out" / "m0.json").stat().st_mode) == 0o644
    finally:
        real_umask(old)


def test_concurrent_writes_and_file_creation_keep_every_mode(tmp_path: Path) -> None:
    """The same with real threads: one creates files in a loop while another writes atomically."""
    import sys
    import threading

    old, switch = os.umask(0o027), sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    stop, bad = threading.Event(), []

    def creator() -> None:
        i = 0
        while not stop.is_set():
            p = tmp_path / f"c{i % 20}"
            fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o666)
            if stat.S_IMODE(os.fstat(fd).st_mode) != 0o640:
                bad.append(oct(stat.S_IMODE(os.fstat(fd).st_mode)))
            os.close(fd)
            i += 1

    t = threading.Thread(target=creator)
    t.start()
    try:
        for k in range(300):
            write_json(tmp_path / "w" / "m.json", {"k": k})
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(switch)
        os.umask(old)
    assert not bad
    assert stat.S_IMODE((tmp_path / "w" / "m.json").stat().st_mode) == 0o640
