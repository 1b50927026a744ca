"""Classification metrics, numpy only: shared by training, ``omsf2 eval``, export's gate and bench.

Multi-class: accuracy, macro-F1, per-class recall, quadratic-weighted kappa (stages are
ordinal, so confusing stage I with III costs more than with II), one-vs-rest AUC and the
confusion matrix. Multi-label: per-label AUC and accuracy at 0.5 with a mask for ignored labels.
Everything is returned as JSON-ready Python types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of samples with true class i predicted as j, shape (K, K), int64."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"labels and predictions must be 1-D of one length, got {y_true.shape} / {y_pred.shape}")
    for name, v in (("labels", y_true), ("predictions", y_pred)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got range [{v.min()}, {v.max()}]")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def quadratic_weighted_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights from a confusion matrix (1 = perfect, 0 = chance).

    Returns 0.0 when the expected disagreement is zero (a single class everywhere), where kappa
    is undefined.
    """
    cm = np.asarray(cm, np.float64)
    k = cm.shape[0]
    n = cm.sum()
    if n == 0 or k < 2:
        return 0.0
    idx = np.arange(k)
    w = (idx[:, None] - idx[None, :]) ** 2 / (k - 1) ** 2
    expected = np.outer(cm.sum(1), cm.sum(0)) / n
    denom = (w * expected).sum()
    return float(1.0 - (w * cm).sum() / denom) if denom > 0 else 0.0


def binary_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC by the rank statistic (ties count one half); None when only one class is present."""
    y = np.asarray(y, bool)
    score = np.asarray(score, np.float64)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(score.size, np.float64)
    sorted_scores = score[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, numerically stable."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(y_true: np.ndarray, logits: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """All multi-class metrics from labels and logits.

    Args:
        y_true: (N,) integer labels.
        logits: (N, K) raw scores (softmax is applied for AUC).
        class_names: K names, in label order.

    Returns:
        ``{"n", "accuracy", "macro_f1", "qwk", "per_class_recall", "per_class_precision",
        "per_class_f1", "auc_ovr", "macro_auc", "confusion", "classes"}``; per-class values are
        keyed by class name, AUC of a class absent from ``y_true`` is None.
    """
    logits = np.asarray(logits, np.float64)
    k = len(class_names)
    if logits.ndim != 2 or logits.shape[1] != k:
        raise ValueError(f"logits must have shape (N, {k}), got {logits.shape}")
    y_true = np.asarray(y_true, np.int64)
    y_pred = logits.argmax(axis=1) if logits.size else np.zeros(0, np.int64)
    cm = confusion_matrix(y_true, y_pred, k)
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    probs = softmax(logits) if n else np.zeros((0, k))
    aucs = [binary_auc(y_true == c, probs[:, c]) for c in range(k)]
    valid = [a for a in aucs if a is not None]
    names = list(class_names)
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        # Macro over the classes present in the labels: an absent class has no defined recall.
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "qwk": quadratic_weighted_kappa(cm),
        "per_class_recall": {c: float(r) for c, r in zip(names, recall, strict=True)},
        "per_class_precision": {c: float(p) for c, p in zip(names, precision, strict=True)},
        "per_class_f1": {c: float(f) for c, f in zip(names, f1, strict=True)},
        "auc_ovr": dict(zip(names, aucs, strict=True)),
        "macro_auc": float(np.mean(valid)) if valid else None,
        "confusion": cm.tolist(),
        "classes": names,
    }


def multilabel_metrics(
    y_true: np.ndarray, logits: np.ndarray, mask: np.ndarray, label_names: Sequence[str]
) -> dict[str, Any]:
    """Per-label metrics for independent findings (CheXpert-style).

    Args:
        y_true: (N, L) 0/1 targets.
        logits: (N, L) raw scores (sigmoid at 0.5 = logit 0 decides).
        mask: (N, L) bool, False where the label is ignored (uncertain under "ignore", or blank).
        label_names: L names.

    Returns:
        ``{"n", "accuracy", "macro_f1", "macro_auc", "per_label_auc", "per_label_accuracy",
        "per_class_recall", "labels"}``; ``accuracy`` is the mean over labels of the masked accuracy.
    """
    y_true = np.asarray(y_true, np.float64)
    logits = np.asarray(logits, np.float64)
    mask = np.asarray(mask, bool)
    if not (y_true.shape == logits.shape == mask.shape) or y_true.ndim != 2:
        raise ValueError(f"targets, logits and mask must share shape (N, L), got {y_true.shape}, {logits.shape}")
    pred = logits > 0
    aucs: dict[str, float | None] = {}
    accs: dict[str, float | None] = {}
    recalls: dict[str, float] = {}
    f1s = []
    for j, name in enumerate(label_names):
        m = mask[:, j]
        t = y_true[m, j] > 0.5
        p = pred[m, j]
        aucs[name] = binary_auc(t, logits[m, j]) if m.any() else None
        accs[name] = float((t == p).mean()) if m.any() else None
        tp = float((t & p).sum())
        recalls[name] = tp / float(t.sum()) if t.sum() else 0.0
        denom = float(t.sum() + p.sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    valid_auc = [a for a in aucs.values() if a is not None]
    valid_acc = [a for a in accs.values() if a is not None]
    return {
        "n": int(y_true.shape[0]),
        "accuracy": float(np.mean(valid_acc)) if valid_acc else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "macro_auc": float(np.mean(valid_auc)) if valid_auc else None,
        "per_label_auc": aucs,
        "per_label_accuracy": accs,
        "per_class_recall": recalls,
        "labels": list(label_names),
    }


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n``.

    Unlike the normal approximation it stays inside [0, 1] and is informative at 0 % or 100 %
    (e.g. 400 agreements out of 400 still gives a lower bound below 1), which is where an INT8
    gate's agreement usually sits.

    Raises:
        ValueError: ``n`` < 1, ``successes`` outside [0, n], or ``level`` outside (0, 1).
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = _z(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return float(lo), float(hi)


def images_to_show(bound: float, level: float = 0.95) -> int | None:
    """Fewest items on which a perfect record's Wilson interval lies wholly at or above ``bound``.

    With ``n`` items all agreeing, the Wilson lower bound is ``n / (n + z^2)``; it reaches ``bound``
    from ``n = z^2 * bound / (1 - bound)`` on. Below that, even a flawless result cannot show that
    the true rate meets the bound (35 items for 0.9, 189 for 0.98, 381 for 0.99, at 95 %).

    Returns:
        That count, or None for a bound of 1 (no finite set shows it); 0 for a bound <= 0.

    Raises:
        ValueError: ``level`` outside (0, 1).
    """
    z = _z(level)
    if bound <= 0:
        return 0
    if bound >= 1:
        return None
    return int(np.ceil(z * z * bound / (1 - bound) - 1e-9))


def paired_bootstrap_interval(
    diff: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(diff)`` for per-item paired differences.

    For an accuracy drop, ``diff[i] = correct_fp32[i] - correct_int8[i]`` (-1, 0 or 1): resampling
    items keeps the pairing, so the interval reflects the flipped answers rather than two
    independent accuracies. Seeded, so a report is reproducible.

    Raises:
        ValueError: empty ``diff`` or ``level`` outside (0, 1).
    """
    d = np.asarray(diff, np.float64).ravel()
    if d.size == 0:
        raise ValueError("paired_bootstrap_interval needs at least one paired difference")
    _z(level)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def macro_f1_interval(
    cm: np.ndarray | Sequence[Sequence[int]], level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1, resampling the items a confusion matrix counts.

    The matrix (rows true, columns predicted) holds every (label, prediction) pair, so resampling
    its items is resampling the images. Each resample's macro-F1 is computed as
    :func:`classification_metrics` computes it: over the classes present in that resample's labels.
    Seeded, so a report is reproducible.

    Raises:
        ValueError: a matrix that is not square, holds negative counts or counts no item, or
            ``level`` outside (0, 1).
    """
    m = np.asarray(cm, np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or (m < 0).any() or m.sum() == 0:
        raise ValueError(f"need a square confusion matrix of non-negative counts with items, got shape {m.shape}")
    _z(level)
    k = m.shape[0]
    cells = np.repeat(np.arange(k * k), m.ravel())  # one entry per item: true * k + predicted
    rng = np.random.default_rng(seed)
    draws = cells[rng.integers(0, cells.size, size=(n_boot, cells.size))]
    offsets = (np.arange(n_boot) * k * k)[:, None]
    boot = np.bincount((draws + offsets).ravel(), minlength=n_boot * k * k).reshape(n_boot, k, k).astype(np.float64)
    tp = np.diagonal(boot, axis1=1, axis2=2)
    support, predicted = boot.sum(2), boot.sum(1)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    present = support > 0
    macro = (f1 * present).sum(1) / present.sum(1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(macro, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _z(level: float) -> float:
    """Two-sided standard-normal quantile for a confidence level (Acklam's rational approximation)."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie in (0, 1), got {level!r}")
    p = 1 - (1 - level) / 2
    # Acklam's inverse-normal approximation, central and upper-tail regions (relative error < 1.2e-9).
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)  # fmt: skip
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if p <= 0.97575:
        q = p - 0.5
        r = q * q
        num = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
        return num / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    q = float(np.sqrt(-2 * np.log(1 - p)))
    num = ((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]
    return -num / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
