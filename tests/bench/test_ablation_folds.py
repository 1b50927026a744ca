"""bench/ablation.py --folds: one run per (variant, fold), fold-major, the rule registered before the runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "ablation.py"
TINY = ("--datasets", "phantoms", "--epochs", "1", "--img-size", "64", "--phantoms", "16", "--batch-size", "4")


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], text=True, capture_output=True, timeout=900)


def test_variant_options_are_what_the_cli_flags_parse_to(bench_script: Callable[[str], ModuleType]) -> None:
    """bench/cv_fold.py gets options by name; they must give the config `omsf2 train <flags>` gives."""
    import typer

    from omsf2.cli.app import app
    from omsf2.train.options import config_from_options

    ablation, kfold = bench_script("ablation.py"), bench_script("ablation_folds.py")
    train = typer.main.get_command(app).get_command(None, "train")  # type: ignore[attr-defined]
    assert set(kfold.VARIANT_OPTIONS) == set(ablation.VARIANTS)
    for variant, (model, flags) in ablation.VARIANTS.items():
        common = ["--data", "synthetic", "--synthetic-n", "16", "--epochs", "3", "--img-size", "64", "--out", "x"]
        ctx = train.make_context("train", [*common, "--model", model, *flags])
        opts = {"data": "synthetic", "synthetic_n": 16, "epochs": 3, "img_size": 64, **kfold.VARIANT_OPTIONS[variant]}
        assert config_from_options(opts) == config_from_options(ctx.params), variant


def test_the_rule_decides_only_on_complete_corrected_intervals(bench_script: Callable[[str], ModuleType]) -> None:
    kfold = bench_script("ablation_folds.py")

    def paired(values: list[float]) -> dict[str, object]:
        return {"n": len(values), "values": values, "mean": sum(values) / len(values)}

    dec = kfold.decide(
        {
            "no_soft_distance": paired([-3.0, -2.5, -3.5, -2.8, -3.2]),  # consistently better without it
            "no_msff": paired([2.0, -1.0, 3.0, 0.5, 1.0]),  # spans zero
            "plain": paired([4.0, 5.0]),  # only two folds paired so far
        },
        folds=5,
    )
    assert dec["family"] == ["no_soft_distance", "no_msff", "plain"] and dec["confidence"] == pytest.approx(
        1 - 0.05 / 3
    )
    sd = dec["no_soft_distance"]
    assert sd["interval"][1] < 0 and sd["changes"].startswith("soft distance off by default")
    # Two-sided 98.33 %: t(1 - 0.05 / 6, 4) = 3.961; the interval is the mean ± 3.961 * sd / sqrt(5).
    assert sd["interval"][0] == pytest.approx(-3.0 - 3.9608 * 0.3808 / 5**0.5, abs=2e-3)
    assert dec["no_msff"]["verdict"].startswith("no effect shown") and dec["no_msff"]["changes"] == "none"
    assert dec["plain"]["verdict"] == "pending: 2 of 5 folds paired" and dec["plain"]["changes"] is None


def test_a_registered_rule_is_kept_and_never_replaced(bench_script: Callable[[str], ModuleType]) -> None:
    kfold = bench_script("ablation_folds.py")
    first = kfold.registered_rule(None)
    assert first["sha256"] == kfold.rule_digest() and first["rule"] == kfold.RULE
    again = kfold.registered_rule({"decision_rule": {**first, "registered_at": "earlier"}, "runs": {}})
    assert again["registered_at"] == "earlier"  # the original registration stands
    other = {**first, "sha256": "0" * 64}
    with pytest.raises(SystemExit, match="a registered rule is not changed"):
        kfold.registered_rule({"decision_rule": other, "runs": {"cxr-real": {"full": {"fold-0": {}}}}})
    assert kfold.registered_rule({"decision_rule": other, "runs": {}})["sha256"] == kfold.rule_digest()


@pytest.mark.slow
def test_folds_run_fold_major_and_continue_from_the_record(tmp_path: Path) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ("--folds", "2", "--variants", "full,no_soft_distance", *TINY, "--threads", "1")
    res = _run(*args, "--runs", runs, "--results", results)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ": exit 0" in ln]
    assert ["fold 0" in ln for ln in lines] == [True, True, False, False]  # both variants' fold 0 first
    (out,) = results.glob("ablation-folds2-*.json")
    rec = json.loads(out.read_text())
    rule = rec["decision_rule"]
    finished = [r["finished_at"] for v in rec["runs"]["phantoms"].values() for r in v.values()]
    assert rule["registered_at"] <= min(finished)  # written before any fold finished
    assert set(rec["runs"]["phantoms"]["full"]) == {"fold-0", "fold-1"}
    assert rec["paired"]["phantoms"]["fold_macro_f1"]["no_soft_distance"]["n"] == 2
    assert rec["decisions"]["phantoms"]["family"] == ["no_soft_distance"]
    # `omsf2 train --folds 2` on the same folder keeps the folds (same config) and writes cv.json.
    m = json.loads((runs / "phantoms" / "full" / "cv" / "fold-1" / "metrics.json").read_text())
    assert m["config"]["folds"] == 2 and m["config"]["fold"] == 1 and m["torch_threads"] == 1
    # The runs folder is gone: the record carries the folds, nothing trains, the rule is the same.
    fresh = _run(*args, "--runs", tmp_path / "elsewhere", "--results", results)
    assert fresh.returncode == 0 and ": exit" not in fresh.stdout, fresh.stdout + fresh.stderr
    assert fresh.stdout.count("kept from the record") == 4
    again = json.loads(out.read_text())
    assert again["decision_rule"] == rule and again["cells"] == rec["cells"]
