"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from omsf2.metrics import (
    binary_auc,
    classification_metrics,
    confusion_matrix,
    multilabel_metrics,
    quadratic_weighted_kappa,
)


def test_confusion_and_basic_metrics() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    logits = np.eye(4)[[0, 1, 1, 1, 2, 3, 3, 3]] * 5.0
    m = classification_metrics(y, logits, ["a", "b", "c", "d"])
    assert m["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 1], [0, 0, 0, 2]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": 0.5, "d": 1.0}
    # F1: a 2/3, b 0.8, c 2/3, d 0.8
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3 + 0.8) / 4)
    assert m["n"] == 8 and m["classes"] == ["a", "b", "c", "d"]


def test_qwk_known_values() -> None:
    assert quadratic_weighted_kappa(np.diag([5, 5, 5])) == pytest.approx(1.0)
    # Hand computation: cm [[2,1],[0,2]]: observed disagreement 1/5; rows (3, 2), columns (2, 3), so
    # expected disagreement (3*3 + 2*2)/25 = 13/25; kappa = 1 - (1/5)/(13/25) = 8/13.
    cm = np.array([[2, 1], [0, 2]])
    assert quadratic_weighted_kappa(cm) == pytest.approx(8 / 13)
    # Ordinal: a one-step error costs less than a two-step one.
    near = confusion_matrix(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]), 3)
    far = confusion_matrix(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0]), 3)
    assert quadratic_weighted_kappa(near) > quadratic_weighted_kappa(far)
    assert quadratic_weighted_kappa(np.array([[4]])) == 0.0


def test_auc_with_ties_and_degenerate_cases() -> None:
    assert binary_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert binary_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert binary_auc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_metrics_reject_bad_shapes_and_labels() -> None:
    with pytest.raises(ValueError, match="logits must have shape"):
        classification_metrics(np.array([0]), np.zeros((1, 3)), ["a", "b"])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        confusion_matrix(np.array([0, 2]), np.array([0, 1]), 2)


def test_absent_class_is_reported_not_averaged() -> None:
    m = classification_metrics(np.array([0, 0]), np.array([[2.0, 0.0], [2.0, 0.0]]), ["x", "y"])
    assert m["macro_f1"] == 1.0 and m["auc_ovr"] == {"x": None, "y": None} and m["macro_auc"] is None


def test_multilabel_mask() -> None:
    y = np.array([[1, 0], [0, 1], [1, 1]], float)
    logits = np.array([[2, -1], [-2, 3], [-1, 5]], float)
    mask = np.array([[1, 1], [1, 1], [0, 1]], bool)
    m = multilabel_metrics(y, logits, mask, ["p", "q"])
    assert m["per_label_accuracy"] == {"p": 1.0, "q": 1.0}  # the wrong p on row 3 is masked out
    assert m["per_label_auc"]["p"] == 1.0
    assert m["accuracy"] == 1.0
