"""Rich rendering of training progress (the library reports through a Reporter, never prints)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichReporter:
    """Progress bars for loading, epochs and validation, and one summary line per epoch.

    Implements omsf2.train.Reporter; its methods are documented there.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task: Any = None

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _new(self, name: str, total: int, done: int = 0) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(name, total=total, completed=done, extra="")

    def on_start(self, info: dict[str, Any]) -> None:  # noqa: D102
        self.console.print(
            f"[bold]{info['model']}[/] ({info['params'] / 1e6:.2f}M params) on {info['device']}: "
            f"{info['train']} train / {info['val']} val images, classes {', '.join(info['classes'])}; "
            f"epochs {info['start_epoch']}..{info['epochs']}, {info['steps_per_epoch']} steps each"
        )

    def on_task(self, name: str, total: int) -> None:  # noqa: D102
        self._new(name, total)

    def on_advance(self, n: int) -> None:  # noqa: D102
        if self.task is not None:
            self.progress.advance(self.task, n)

    def on_epoch_start(self, epoch: int, steps: int, start_step: int) -> None:  # noqa: D102
        self._new(f"epoch {epoch}", steps, start_step)

    def on_step(self, epoch: int, step: int, loss: float, lr: float) -> None:  # noqa: D102
        self.progress.update(self.task, completed=step, extra=f"loss {loss:.3f} lr {lr:.2e}")

    def on_epoch_end(self, r: dict[str, Any]) -> None:  # noqa: D102
        star = "*" if r["improved"] else " "
        extra = f" qwk {r['qwk']:.3f}" if r.get("qwk") is not None else ""
        auc = f" auc {r['macro_auc']:.3f}" if r.get("macro_auc") is not None else ""
        self.console.print(
            f"epoch {r['epoch']:3d}{star} train loss {r['train_loss']:.4f}  val loss {r['val_loss']:.4f}  "
            f"acc {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}{extra}{auc}  ({r['epoch_s']:.0f}s)"
        )
