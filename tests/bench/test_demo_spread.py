"""bench/demo_spread.py: one `omsf2 demo` per seed:threads pair, the spread recorded, finished runs kept."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _fake_demo(out: Path, seed: int, threads: int) -> None:
    """What `omsf2 demo` leaves behind, with figures that depend on the seed and the thread count."""
    acc = 0.90 + 0.01 * seed + 0.005 * threads
    split = {"accuracy": acc, "macro_f1": acc - 0.01, "per_class_recall": {"normal": acc, "stage_I": acc - 0.1}}
    export = {"int8": {"file": "model.int8.onnx", "int8_accuracy": acc - 0.0025, "passed": True}}
    summary = {"val": split, "test": split, "export": export, "timings": {"train_s": 100.0, "total_s": 300.0}}
    (out / "train").mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps(summary))
    history = [{"accuracy": 0.5}, {"accuracy": acc}]
    (out / "train" / "metrics.json").write_text(
        json.dumps({"best_epoch": 2, "history": history, "torch_threads": threads})
    )


def test_spread_over_runs_and_kept_runs(bench_script: Callable[[str], ModuleType], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    mod = bench_script("demo_spread.py")
    monkeypatch.setattr(mod, "REPO", tmp_path)
    calls: list[tuple[int, int]] = []

    def demo(a: Any, seed: int, threads: int, out: Path) -> dict[str, Any]:
        calls.append((seed, threads))
        _fake_demo(out, seed, threads)
        return {"command": f"omsf2 demo --seed {seed}", "exit_code": 0, "wall_s": 1.0}

    monkeypatch.setattr(mod, "_demo", demo)
    results = tmp_path / "results"
    path = mod.main(["--runs", "0:2,0:1,1:2", "--results", str(results)])
    assert calls == [(0, 2), (0, 1), (1, 2)]
    rec = json.loads(path.read_text())
    assert (
        path.name.startswith("demo-spread-") and rec["test_run"] is False and rec["pinned"] == {"epochs": 6, "n": 1600}
    )
    run = rec["runs"]["seed-0-threads-1"]["figures"]
    assert run["test_accuracy"] == pytest.approx(90.5) and run["val_accuracy_by_epoch"] == [50.0, 90.5]
    assert run["test_int8_accuracy"] == pytest.approx(90.25) and run["test_int8_cpu_accuracy"] is None
    spread = rec["spread"]["test_accuracy"]
    assert spread["min"] == pytest.approx(90.5) and spread["max"] == pytest.approx(92.0) and spread["n"] == 3
    md = path.with_suffix(".md").read_text()
    assert "| seed-1-threads-2 | 0 | 92.00 | 92.00 |" in md and "A test run" not in md

    # Again: the finished runs are kept; a new pair runs alone. Without the runs folder the record keeps them.
    mod.main(["--runs", "0:2,0:1,1:2,2:2", "--results", str(results)])
    assert calls[3:] == [(2, 2)]
    monkeypatch.setattr(mod, "REPO", tmp_path / "elsewhere")
    mod.main(["--runs", "0:2,0:1,1:2,2:2", "--results", str(results)])
    assert calls[4:] == [] and json.loads(path.read_text())["spread"]["test_accuracy"]["n"] == 4
    # A shorter demo is a test run with its own record; it keeps nothing of the real one.
    test = mod.main(["--runs", "0:2", "--epochs", "1", "--tag", "test", "--results", str(results)])
    assert json.loads(test.read_text())["test_run"] is True and "A test run" in test.with_suffix(".md").read_text()

    # Another recipe (a generator or training-default change): the record's runs are not carried, and a
    # finished runs folder of the old recipe is refused rather than mixed in.
    real = mod.recipe(6, 1600)
    assert json.loads(path.read_text())["recipe"] == real and real["train_config"]["precise_bn"] > 0
    monkeypatch.setattr(mod, "recipe", lambda epochs, n: {**real, "phantoms_sha256": "other"})
    mod.main(["--runs", "3:2", "--results", str(results)])
    assert calls[-1] == (3, 2) and list(json.loads(path.read_text())["runs"]) == ["seed-3-threads-2"]
    monkeypatch.setattr(mod, "REPO", tmp_path)
    with pytest.raises(SystemExit, match="another recipe"):
        mod.main(["--runs", "0:2", "--results", str(results)])


def test_bad_pairs_are_one_clear_error(bench_script: Callable[[str], ModuleType]) -> None:
    mod = bench_script("demo_spread.py")
    assert mod._parse_runs("0:2, 1:1") == [(0, 2), (1, 1)]
    for bad in ("0", "a:2", "0:0"):
        with pytest.raises(SystemExit, match=r"seed:threads|threads >= 1"):
            mod._parse_runs(bad)
