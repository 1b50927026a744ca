"""Evaluation of a PyTorch model or checkpoint on a labelled split: metrics, JSON and a confusion PNG.

Shared by training (validation each epoch) and ``omsf2 eval``. Inference runs the model in
eval mode without autocast on CPU, so the numbers are those the exported FP32 model must match.
The confusion matrix is drawn by :func:`omsf2.plots.confusion_png` (matplotlib, the ``plots`` extra).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omsf2.config import SettingError, Task
from omsf2.data.datasets import SPLIT_NAMES, DataSpec, LabeledSet, load_split
from omsf2.data.loader import BatchSource, open_source
from omsf2.fileio import check_output_file, write_json
from omsf2.metrics import classification_metrics, multilabel_metrics
from omsf2.models.checkpoint import checkpoint_info, load_checkpoint, model_from_checkpoint

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; an unavailable CUDA request is an error.

    ``"cuda:N"`` keeps its index (and must name a device that exists).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"invalid device {name!r}; choose auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no CUDA device is available; use the cpu device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ValueError(f"device {name!r} requested but this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")
    return dev


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    source: BatchSource,
    batch_size: int,
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Logits of every sample of ``source``, in order: (N, K) float32.

    Args:
        model: returns ``(logits, heatmap)`` from (N, C, H, W) inputs.
        source: the samples.
        batch_size: samples per forward pass.
        device: where the model runs.
        on_batch: progress callback with the number of samples done.
    """
    model.eval()
    n = len(source)
    order = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    outs = []
    for b in source.batches(order):
        logits, _ = model(b.x.to(device, non_blocking=True))
        outs.append(logits.float().cpu())
        if on_batch is not None:
            on_batch(len(b.index))
    k = getattr(model, "num_classes", 0)
    logits = torch.cat(outs).numpy() if outs else np.zeros((0, k), np.float32)
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise FloatingPointError(f"the model's logits are not finite (NaN or infinity) for {bad} of {n} images")
    return logits


def compute_metrics(task: Task, source: BatchSource, logits: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics of ``logits`` against the targets of ``source`` (multi-class or multi-label)."""
    if task is Task.MULTICLASS:
        return classification_metrics(source.y.numpy(), logits, classes)
    mask = source.mask.numpy() if source.mask is not None else np.ones(source.y.shape, bool)
    return multilabel_metrics(source.y.numpy(), logits, mask, classes)


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """What ``omsf2 eval`` evaluates.

    Attributes:
        checkpoint: path of an omsf2 checkpoint.
        data: data source; None = the one recorded in the checkpoint.
        split: "train", "val" or "test".
        json_path: where the metrics JSON goes; None = ``<checkpoint dir>/eval-<split>.json``.
        batch_size: samples per forward pass.
        device: "auto", "cpu", "cuda" or "cuda:N".
        workers: data-loading processes.
    """

    checkpoint: str
    data: str | None = None
    split: str = "val"
    json_path: str | None = None
    batch_size: int = 64
    device: str = "auto"
    workers: int = 2

    def __post_init__(self) -> None:
        if self.split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {self.split!r}; choose one of {', '.join(SPLIT_NAMES)}")
        if self.batch_size < 1:
            raise SettingError(f"batch size must be >= 1, got {self.batch_size}", "batch_size")
        if self.workers < 0:
            raise SettingError(f"workers must be >= 0, got {self.workers}", "workers")


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Metrics plus the files written."""

    metrics: dict[str, Any]
    json_path: Path
    png_path: Path | None


def _load_eval_split(spec: EvalSpec, ckpt: dict[str, Any], classes: list[str]) -> LabeledSet:
    """The split to evaluate: from ``spec.data``, else from the data source the checkpoint records."""
    saved = ckpt.get("data")
    base = DataSpec.from_dict(saved) if isinstance(saved, dict) else None
    if spec.data is None and base is None:
        raise ValueError(f"checkpoint '{spec.checkpoint}' records no data source; give one")
    data = dataclasses.replace(base, source=spec.data) if (base and spec.data) else (base or DataSpec(str(spec.data)))
    src = Path(data.source)
    if spec.data is None and not src.is_absolute() and data.source != "synthetic" and not src.exists():
        raise ValueError(
            f"the data path '{data.source}' recorded in checkpoint '{spec.checkpoint}' is relative and does not "
            f"exist from the current folder '{Path.cwd()}'; give the data source explicitly"
        )
    ds: LabeledSet = load_split(data, spec.split)
    if list(ds.classes) != classes:
        raise ValueError(
            f"checkpoint '{spec.checkpoint}' was trained on {len(classes)} classes ({', '.join(classes)}) "
            f"but the data has {len(ds.classes)} ({', '.join(ds.classes)})"
        )
    return ds


def evaluate_checkpoint(spec: EvalSpec, on_progress: Callable[[str, int, int], None] | None = None) -> EvalResult:
    """Evaluate a checkpoint on a split and write ``<json>`` and ``<json stem>.confusion.png``.

    Raises:
        ValueError: unreadable checkpoint, data whose classes differ from the checkpoint's, bad data.
    """
    json_path = Path(spec.json_path) if spec.json_path else Path(spec.checkpoint).parent / f"eval-{spec.split}.json"
    png = check_output_file(json_path.with_name(json_path.stem + ".confusion.png"))
    check_output_file(json_path)
    device = resolve_device(spec.device)
    ckpt = load_checkpoint(spec.checkpoint)
    cfg, classes, task, pre = checkpoint_info(ckpt)
    model = model_from_checkpoint(ckpt).to(device)
    ds = _load_eval_split(spec, ckpt, classes)
    n = len(ds)

    def counter(phase: str) -> Callable[[int], None]:
        done = 0

        def tick(k: int) -> None:
            nonlocal done
            done += k
            if on_progress:
                on_progress(phase, done, n)

        return tick

    # Up to 2 GiB of decoded images is held in memory (one decode, fast batches); larger sets stream.
    source = open_source(ds, pre, spec.workers, 2 << 30, on_batch=counter("loading"))
    logits = predict_logits(model, source, spec.batch_size, device, counter("inference"))
    metrics = compute_metrics(task, source, logits, classes)
    metrics.update(
        {
            "checkpoint": str(spec.checkpoint),
            "model": cfg.name,
            "data": ds.description,
            "split": spec.split,
            "task": task.value,
        }
    )
    png_path = None
    if "confusion" in metrics:
        title = f"{cfg.name} on {ds.description}: accuracy {metrics['accuracy']:.3f}"
        from omsf2.plots import confusion_png

        try:
            png_path = confusion_png(png, metrics["confusion"], classes, title)
        except ImportError as e:  # matplotlib is an extra: the metrics still count
            log.warning("no confusion PNG: %s", e)
    write_json(json_path, metrics)
    return EvalResult(metrics, json_path, png_path)
