"""Progress of a training run: the :class:`Reporter` protocol and the default, logging one.

The library never prints: the CLI passes a rich progress bar, tests may act on the callbacks
(interrupt a run at a given step), and the default logs one line per epoch.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("omsf2.train.loop")


class Reporter(Protocol):
    """Receives progress; the CLI renders it, tests may act on it (e.g. interrupt a run)."""

    def on_start(self, info: dict[str, Any]) -> None:
        """The run starts: model, data sizes, device, epochs."""

    def on_task(self, name: str, total: int) -> None:
        """A sub-task of ``total`` items starts (loading, validating)."""

    def on_advance(self, n: int) -> None:
        """``n`` more items of the current sub-task are done."""

    def on_epoch_start(self, epoch: int, steps: int, start_step: int) -> None:
        """Epoch ``epoch`` (1-based) of ``steps`` steps starts at ``start_step`` (> 0 when resumed)."""

    def on_step(self, epoch: int, step: int, loss: float, lr: float) -> None:
        """Step ``step`` (1-based) finished with this loss at this learning rate."""

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """An epoch finished; ``record`` holds its losses and validation metrics."""


class LogReporter:
    """Default reporter: one log line per epoch (the :class:`Reporter` methods, documented there)."""

    def on_start(self, info: dict[str, Any]) -> None:  # noqa: D102
        log.info("training %s", info)

    def on_task(self, name: str, total: int) -> None:  # noqa: D102
        log.debug("%s (%d)", name, total)

    def on_advance(self, n: int) -> None:  # noqa: D102
        pass

    def on_epoch_start(self, epoch: int, steps: int, start_step: int) -> None:  # noqa: D102
        pass

    def on_step(self, epoch: int, step: int, loss: float, lr: float) -> None:  # noqa: D102
        pass

    def on_epoch_end(self, record: dict[str, Any]) -> None:  # noqa: D102
        log.info("epoch %s", record)
