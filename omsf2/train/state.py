"""Where a training run stands: the state ``last.pt`` saves and a resume restores."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass
class RunState:
    """Where a run stands: what ``last.pt`` saves as ``train_state`` and a resume restores.

    Attributes:
        run_id: identifies the run (its output folder belongs to it).
        epoch: epochs completed; the epoch in progress has this 0-based index.
        step: steps done in the epoch in progress.
        history: one record per completed epoch.
        best_key: monitor value of the best epoch (higher is better).
        best_epoch: 1-based epoch of ``best.pt`` (0 = none yet).
        best_metrics: validation metrics of ``best.pt``.
        loss_sum: running train loss of the epoch in progress (so a resume reports the same mean).
        loss_n: steps summed in ``loss_sum``.
        world_size: processes the run trains with (a resume with another count is not exact).
    """

    run_id: str
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_key: tuple[float, float] = (-math.inf, -math.inf)
    best_epoch: int = 0
    best_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    loss_sum: float = 0.0
    loss_n: int = 0
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Checkpoint form (tensors and plain types only)."""
        d = dataclasses.asdict(self)
        d["best_key"] = list(self.best_key)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        """Inverse of :meth:`to_dict`; checkpoints written before ``run_id`` existed get ``""``."""
        key = tuple(float(v) for v in d.get("best_key", (-math.inf, -math.inf)))
        return cls(
            run_id=str(d.get("run_id", "")),
            epoch=int(d.get("epoch", 0)),
            step=int(d.get("step", 0)),
            history=list(d.get("history", [])),
            best_key=(key[0], key[1]),
            best_epoch=int(d.get("best_epoch", 0)),
            best_metrics=dict(d.get("best_metrics", {})),
            loss_sum=float(d.get("loss_sum", 0.0)),
            loss_n=int(d.get("loss_n", 0)),
            world_size=int(d.get("world_size", 1)),
        )
