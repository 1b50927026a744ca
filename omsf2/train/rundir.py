"""The output folder of a training run: checked before any work, locked while the run writes.

A run owns its folder: a second run into the same folder at the same time gets a one-line error
(an exclusive ``flock`` on the folder itself, released by the kernel when the process dies, so a
killed run leaves no stale lock), and a new run refuses a folder that holds another run's
checkpoints unless told to overwrite them. A resumed run owns the folder its ``last.pt`` is in
(runs are told apart by the ``run_id`` in ``train_state``). The trade-off: ``flock`` is advisory
and local; two machines writing one network folder are not kept apart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from omsf2.config import SettingError

RUN_FILES = ("best.pt", "last.pt", "metrics.json")


def _run_id_of(last: Path) -> str | None:
    try:
        ck = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an unreadable last.pt belongs to no run we can name
        return None
    state = ck.get("train_state") if isinstance(ck, dict) else None
    return str(state.get("run_id", "")) if isinstance(state, dict) else None


def _check_writable(out: Path) -> bool:
    """Create the folder if needed and prove it writable; return whether it was created."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder '{out}' exists and is not a folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write to output folder '{out}': {e.strerror or e}") from e
    return created


@contextlib.contextmanager
def claim_run_dir(out: str | os.PathLike[str], run_id: str, overwrite: bool = False) -> Iterator[Path]:
    """Check, create and lock ``out`` for run ``run_id`` for the duration of the block.

    Args:
        out: the run's output folder.
        run_id: the run that will write there (a resumed run keeps its id).
        overwrite: remove another run's checkpoints and metrics instead of refusing.

    Raises:
        ValueError: ``out`` is a file or not writable, another process holds its lock, or it
            holds another run's files and ``overwrite`` is false.
    """
    path = Path(out)
    created = _check_writable(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise ValueError(
                f"another training run is writing to '{path}'; wait for it or choose another folder"
            ) from e
        present = [n for n in RUN_FILES if (path / n).exists()]
        if present and _run_id_of(path / "last.pt") != run_id:
            if not overwrite:
                raise SettingError(
                    f"'{path}' holds another run's files ({', '.join(present)}); "
                    "choose another output folder or overwrite them",
                    "overwrite",
                )
            for n in present:
                (path / n).unlink()
        yield path
    except BaseException:
        if created and not any(path.iterdir()):
            path.rmdir()  # nothing was written: leave no trace of the attempt
        raise
    finally:
        os.close(fd)
