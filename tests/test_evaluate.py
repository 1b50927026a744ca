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
    json_path = tmp_path / "out" / "e.json"
    with pytest.raises(ValueError, match=r"trained on 4 classes .* but the data has 3"):
        evaluate_checkpoint(EvalSpec(str(trained), data=str(tmp_path / "d"), json_path=str(json_path), workers=0))
    assert not (tmp_path / "out").exists()


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


def test_output_paths_are_checked_before_any_work(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        evaluate_checkpoint(EvalSpec(str(trained), split="val", json_path=str(folder), workers=0))
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        evaluate_checkpoint(EvalSpec(str(trained), json_path=str(tmp_path / "file" / "m.json"), workers=0))


def test_non_finite_weights_are_an_error(trained: Path, tmp_path: Path) -> None:
    import torch

    from omsf2.models.checkpoint import load_checkpoint

    ck = load_checkpoint(trained)
    ck["model"] = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in ck["model"].items()}
    torch.save(ck, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="weights are not finite"):
        evaluate_checkpoint(EvalSpec(str(tmp_path / "nan.pt"), json_path=str(tmp_path / "m.json"), workers=0))
    assert not (tmp_path / "m.json").exists()


def test_non_finite_logits_are_an_error() -> None:
    import torch

    from omsf2.data.loader import Batch
    from omsf2.evaluate import predict_logits

    class Source:
        def __len__(self) -> int:
            return 2

        def batches(self, order):
            for idx in order:
                yield Batch(torch.zeros(len(idx), 1, 8, 8), torch.zeros(len(idx)), None, torch.tensor(idx))

    class Inf(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), float("inf")), x

    with pytest.raises(FloatingPointError, match=r"logits are not finite .* for 2 of 2 images"):
        predict_logits(Inf(), Source(), 4, torch.device("cpu"))  # type: ignore[arg-type]


def test_a_folder_is_not_called_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a folder; give a checkpoint file"):
        evaluate_checkpoint(EvalSpec(str(tmp_path), json_path=str(tmp_path / "m.json"), workers=0))


def test_a_relative_recorded_data_path_is_explained(trained: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    from omsf2.models.checkpoint import load_checkpoint

    ck = load_checkpoint(trained)
    ck["data"] = {**ck["data"], "source": "relative/phantoms"}
    torch.save(ck, tmp_path / "rel.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"recorded in checkpoint .* is relative and does not exist from the current"):
        evaluate_checkpoint(EvalSpec(str(tmp_path / "rel.pt"), json_path=str(tmp_path / "m.json"), workers=0))


def test_eval_needs_only_the_split_it_evaluates(trained: Path, tmp_path: Path, synth_root: Path) -> None:
    import shutil

    shutil.copytree(synth_root / "test", tmp_path / "d" / "test")
    res = evaluate_checkpoint(
        EvalSpec(str(trained), data=str(tmp_path / "d"), split="test", json_path=str(tmp_path / "m.json"), workers=0)
    )
    assert res.metrics["n"] == 8


def test_resolve_device_keeps_the_index() -> None:
    import torch

    from omsf2.evaluate import resolve_device

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:1' requested but no CUDA device"):
            resolve_device("cuda:1")
    else:
        n = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"device 'cuda:{n}' requested but this machine has {n}"):
            resolve_device(f"cuda:{n}")
    with pytest.raises(ValueError, match="invalid device 'tpu'"):
        resolve_device("tpu")
