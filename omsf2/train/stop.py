"""Stopping a run between steps: SIGINT or SIGTERM set a flag the loop checks; a second signal aborts.

The flag is per process; under torchrun the loop all-reduces it between steps so that a signal
on any rank stops every rank at the same step (see :mod:`omsf2.train.distributed`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

GRACE_S = 2.0  # a terminal's Ctrl-C reaches a torchrun rank twice: directly and forwarded by torchrun


class StopFlag:
    """SIGINT or SIGTERM -> flag checked between steps; a second signal raises KeyboardInterrupt.

    A signal within ``GRACE_S`` of the first counts as the same request: under torchrun the
    terminal's Ctrl-C reaches every rank through the process group, and torchrun forwards the
    one it received as well; that echo must not abort the save the first one started.
    """

    def __init__(self) -> None:
        self.set = False
        self._first: float | None = None

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
            now = time.monotonic()
            if self._first is not None and now - self._first > GRACE_S:
                raise KeyboardInterrupt
            self._first = now if self._first is None else self._first
            self.set = True

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
