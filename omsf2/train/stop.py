"""Stopping a run between steps: SIGINT or SIGTERM set a flag the loop checks; a second signal aborts.

The flag is per process; under torchrun the loop all-reduces it between steps so that a signal
on any rank stops every rank at the same step (see :mod:`omsf2.train.distributed`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class StopFlag:
    """SIGINT or SIGTERM -> flag checked between steps; a second signal raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.set = False

    def request(self) -> None:
        """Stop after the current step (what the first signal does)."""
        self.set = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Catch SIGINT and SIGTERM in this block (main thread only; elsewhere signals stay as they are)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.set:
                raise KeyboardInterrupt
            self.set = True

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
