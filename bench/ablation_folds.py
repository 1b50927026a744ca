"""The ablation's k-fold mode: one run per (variant, fold), and the decision rule registered before the runs.

``bench/ablation.py --folds K`` trains each variant on the K patient-level folds of
``omsf2 train --folds K`` (fold ``i`` is held out and chooses ``best.pt``; val is evaluated too),
but one fold per subprocess (``bench/cv_fold.py``) so that every variant's fold 0 comes before any
variant's fold 1: a partial ablation is then paired fold by fold, and folds can run side by side.

The decision rule (:data:`RULE`) is written into the record when the ablation starts, before any
fold has finished, and the record refuses to continue under another rule: the rule decides, not
the figures seen. :func:`decide` applies it once every fold of a comparison is paired.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
CV_FOLD = BENCH / "cv_fold.py"

# `omsf2 train` options of each variant by parameter name (what its command-line flags parse to;
# tests/bench/test_ablation_folds.py holds them to ablation.VARIANTS through the CLI's own parser).
VARIANT_OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {"model": "resnet18_plain_tiny"},
    "full": {"model": "omsf2_tiny"},
    "no_neck": {"model": "omsf2_tiny_no_neck"},
    "no_msff": {"model": "omsf2_tiny_no_msff"},
    "no_bap": {"model": "omsf2_tiny", "no_bap": True},
    "no_attention_aug": {"model": "omsf2_tiny", "no_attention_aug": True},
    "no_soft_distance": {"model": "omsf2_tiny", "soft_distance": 0.0},
}

FAMILY_ALPHA = 0.05
# What each comparison decides when its corrected interval excludes zero. "below": full - variant < 0,
# the variant (the module switched off) is better; "above": the module helps.
DECIDES = {
    "no_soft_distance": {
        "below": "soft distance off by default: TrainConfig.soft_distance and `omsf2 train --soft-distance` "
        "default 0 (the demo follows and is re-measured)",
        "above": "no change: soft distance stays on (1.0), now shown to help",
    },
    "no_msff": {
        "below": "the MSFF head is replaced by global average pooling in the default model: `omsf2 train "
        "--model` defaults to omsf2_tiny_no_msff",
        "above": "no change: the MSFF head stays, now shown to help",
    },
    "plain": {
        "below": "no default change (the package trains OMSF2); the README says a plain ResNet was better",
        "above": "no default change; the README says OMSF2 beat a plain ResNet",
    },
}
RULE = {
    "primary_endpoint": "macro-F1 (points) at the final epoch (no selection) on each fold's held-out patients, "
    "paired by fold: d_i = full_i - variant_i",
    "comparisons": "full against each variant in the family; the family is every variant run besides full that "
    "appears in DECIDES (plain, no_msff, no_soft_distance: 3 comparisons)",
    "test": "two-sided paired t interval over the K fold differences (K - 1 degrees of freedom), Bonferroni-"
    "corrected for the family: confidence 1 - 0.05 / m for m comparisons (98.33 % for 3)",
    "decision": "a comparison decides only when all K folds of both arms are finished and its corrected interval "
    "excludes zero; then DECIDES says what changes. An interval that includes zero changes no default "
    "(the status quo stands), and the README reports it as no effect shown. Secondary figures (val "
    "macro-F1 at the final epoch, the last-third mean, accuracy) are reported and decide nothing.",
    "family_alpha": FAMILY_ALPHA,
    "decides": DECIDES,
}


def rule_digest(rule: dict[str, Any] = RULE) -> str:
    """SHA-256 of the rule as JSON (sorted keys): what the record pins."""
    return hashlib.sha256(json.dumps(rule, sort_keys=True).encode()).hexdigest()


def registered_rule(old: dict[str, Any] | None) -> dict[str, Any]:
    """The rule block of the record: the earlier record's when it holds this rule, else registered now.

    Raises:
        SystemExit: the earlier record holds finished folds under another rule (a rule cannot change
            once runs have been seen).
    """
    old_rule = (old or {}).get("decision_rule")
    if old_rule and old_rule.get("sha256") == rule_digest():
        return old_rule
    if old_rule and any((old or {}).get("runs", {}).values()):
        raise SystemExit(
            "error: the record's decision rule was registered before its runs and differs from this script's "
            f"(sha256 {old_rule.get('sha256', '?')[:12]}); a registered rule is not changed. Write the "
            "ablation to another --results folder to register a new one."
        )
    return {"rule": RULE, "sha256": rule_digest(), "registered_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def fold_key(fold: int) -> str:
    """The record's key of fold ``fold``."""
    return f"fold-{fold}"


def fold_command(omsf2: str, opts: dict[str, Any], folds: int, fold: int, cv_dir: Path) -> list[str]:
    """The command that trains (or continues) fold ``fold`` in ``cv_dir/fold-<fold>``."""
    run = cv_dir / f"fold-{fold}"
    if (run / "last.pt").is_file():  # interrupted: continues exactly where it stopped
        return [omsf2, "train", "--resume", str(run / "last.pt"), "--workers", "0"]
    cmd = [sys.executable, str(CV_FOLD), "--fold", str(fold), "--folds", str(folds), "--out", str(cv_dir)]
    cmd += ["--opts", json.dumps(opts)]
    return cmd + (["--overwrite"] if run.exists() else [])  # died before its first last.pt: start again


def shown_fold_command(cmd: list[str], omsf2_flags: list[str], fold: int) -> str:
    """How a fold command is printed: as the ``omsf2 train --folds`` run it is one fold of."""
    if cmd[1] == "train":
        return " ".join(["omsf2", *cmd[1:]])
    return " ".join(["omsf2", "train", *omsf2_flags]) + f"  [fold {fold} only, via bench/cv_fold.py]"


def _interval(diffs: list[float], confidence: float) -> tuple[float, float] | None:
    from scipy import stats

    if len(diffs) < 2:
        return None
    mean = sum(diffs) / len(diffs)
    sd = stats.tstd(diffs)
    if sd == 0:
        return (mean, mean)
    half = stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1) * sd / len(diffs) ** 0.5
    return (mean - half, mean + half)


def decide(paired_primary: dict[str, dict[str, Any]], folds: int) -> dict[str, Any]:
    """Apply :data:`RULE` to the paired primary differences (``_paired``'s output, in points).

    Returns:
        Per compared variant: pairs, mean, the corrected interval, and the verdict with what it changes.
    """
    family = [v for v in DECIDES if v in paired_primary]
    confidence = 1 - FAMILY_ALPHA / max(1, len(family))
    out: dict[str, Any] = {"family": family, "confidence": confidence}
    for v in family:
        e = paired_primary[v]
        ci = _interval(e["values"], confidence)
        entry: dict[str, Any] = {"pairs": e["n"], "mean": e["mean"], "interval": None if ci is None else list(ci)}
        if e["n"] < folds or ci is None:
            entry |= {"verdict": f"pending: {e['n']} of {folds} folds paired", "changes": None}
        elif ci[1] < 0:
            entry |= {"verdict": "variant better (interval below zero)", "changes": DECIDES[v]["below"]}
        elif ci[0] > 0:
            entry |= {"verdict": "full better (interval above zero)", "changes": DECIDES[v]["above"]}
        else:
            entry |= {"verdict": "no effect shown (interval includes zero)", "changes": "none"}
        out[v] = entry
    return out


def decision_markdown(rec: dict[str, Any]) -> list[str]:
    """The rule as registered and its verdicts, for the record's .md."""
    block = rec.get("decision_rule")
    if not block:
        return []
    rule = block["rule"]
    lines = [f"## Decision rule (registered {block['registered_at']}, before any fold finished; sha256 "
             f"{block['sha256'][:12]})", ""]  # fmt: skip
    lines += [
        f"- **{k.replace('_', ' ')}**: {rule[k]}" for k in ("primary_endpoint", "comparisons", "test", "decision")
    ]
    lines += [f"- if `{v}` is better (interval below zero): {d['below']}; if full is better: {d['above']}"
              for v, d in rule["decides"].items()]  # fmt: skip
    lines.append("")
    for dataset, dec in rec.get("decisions", {}).items():
        lines += [f"Verdicts on {dataset} ({dec['confidence']:.2%} paired t intervals, full − variant, points):", ""]
        lines += ["| variant | pairs | mean | corrected interval | verdict | changes |", "|---|---|---|---|---|---|"]
        for v in dec["family"]:
            e = dec[v]
            ci = "—" if e["interval"] is None else f"[{e['interval'][0]:+.1f}, {e['interval'][1]:+.1f}]"
            lines.append(f"| {v} | {e['pairs']} | {e['mean']:+.1f} | {ci} | {e['verdict']} | {e['changes'] or '—'} |")
        lines.append("")
    return lines
