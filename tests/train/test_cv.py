"""Patient-level k-fold cross-validation: K runs, per-fold files, mean ± std, a re-run continues."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import pytest

from omsf2.train import TrainConfig
from omsf2.train.cv import cross_validate, mean_std, scalar_metrics


def test_mean_std_is_the_sample_statistic() -> None:
    s = mean_std([{"a": 1.0, "b": 2.0}, {"a": 3.0}, {"a": 5.0, "b": float("nan")}])
    assert s["a"]["mean"] == 3.0 and s["a"]["std"] == pytest.approx(2.0) and s["a"]["n"] == 3
    assert s["b"] == {"mean": 2.0, "std": 0.0, "n": 1, "values": [2.0]}  # NaN left out, one value: std 0


def test_scalar_metrics_take_per_class_recall() -> None:
    m = {"accuracy": 0.5, "macro_f1": 0.4, "qwk": None, "per_class_recall": {"a": 1.0, "b": 0.0}, "n": 8}
    assert scalar_metrics(m) == {"accuracy": 0.5, "macro_f1": 0.4, "recall[a]": 1.0, "recall[b]": 0.0}


def test_two_fold_run_writes_each_fold_and_the_summary(small_cfg: TrainConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_cfg, epochs=1, ema_decay=0.9)
    res = cross_validate(cfg, tmp_path / "cv", 2)
    assert not res.interrupted and len(res.folds) == 2
    for i in range(2):
        assert sorted(p.name for p in (tmp_path / "cv" / f"fold-{i}").iterdir()) == [
            "best.pt",
            "last.pt",
            "metrics.json",
        ]
    per_fold = [json.loads((tmp_path / "cv" / f"fold-{i}" / "metrics.json").read_text()) for i in range(2)]
    assert [m["selected_on"] for m in per_fold] == ["fold", "fold"]
    assert [m["config"]["fold"] for m in per_fold] == [0, 1]
    assert sum(m["select_size"] for m in per_fold) == 16  # the held-out folds partition the 16 train images
    cv = json.loads((tmp_path / "cv" / "cv.json").read_text())
    accs = [m["best"]["fold"]["accuracy"] for m in per_fold]
    assert cv["held_out"]["accuracy"]["mean"] == pytest.approx(statistics.fmean(accs))
    assert cv["held_out"]["accuracy"]["std"] == pytest.approx(statistics.stdev(accs))
    assert cv["val"]["macro_f1"]["values"] == [m["best"]["macro_f1"] for m in per_fold]
    assert {"recall[normal]", "qwk"} <= set(cv["held_out"])
    md = (tmp_path / "cv" / "cv.md").read_text()
    assert "| accuracy |" in md and "±" in md

    # The same command again keeps the finished folds and rewrites the same summary.
    again = cross_validate(cfg, tmp_path / "cv", 2)
    assert again.folds == [] and again.summary == json.loads(json.dumps(cv))


def test_bad_fold_settings_are_refused_before_any_work(small_cfg: TrainConfig, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--folds >= 2"):
        cross_validate(small_cfg, tmp_path / "cv", 1)
    with pytest.raises(ValueError, match="drop the selection fraction"):
        cross_validate(dataclasses.replace(small_cfg, select_fraction=0.2), tmp_path / "cv", 3)
    assert not (tmp_path / "cv").exists()
