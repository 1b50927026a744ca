"""The README's demo figures with their spread: ``omsf2 demo`` run several times, every figure recorded.

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/demo_spread.py                          # seed 0 at 2 and 1 threads, seeds 1, 2 at 2
    .venv/bin/python bench/demo_spread.py --runs 0:2,0:1,1:2,2:2   # the same, spelled out (seed:threads)
    .venv/bin/python bench/demo_spread.py --epochs 2 --n 200 --tag test --results /tmp/spread   # a test run

Each run is the README's first command, ``omsf2 demo`` (phantoms, training, evaluation, export and
the short bench), with ``--seed`` and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set, into
``runs/demo-spread[-<tag>]/seed-<s>-threads-<t>/``. Training is deterministic for one seed and
thread count on one machine, and differs with either: a fresh clone runs seed 0 with torch's
default thread count (the machine's cores), so the spread over seeds and thread counts is what a
fresh clone's figures can be expected to fall in. A run whose ``summary.json`` is there is kept; the
record carries every finished run, so on a machine whose ``runs/`` folder is gone the same command
keeps what the record holds (under the same settings) and runs only the rest.

Written to ``bench/results/demo-spread[-<tag>]-<machine>.{json,md}``: per run, val and test accuracy,
macro-F1 and per-class recall of ``best.pt``, its epoch, the val accuracy of every epoch, the INT8
flavours' test accuracy and gate verdicts, and the stage times; over the runs, min / max / mean /
sample std of each figure. A run with ``--epochs`` or ``--n`` other than the demo's defaults is
labelled a test run in the record and does not describe the README's command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, machine, written_by

from omsf2.data.synthetic import generate_phantom
from omsf2.demo import DemoSpec
from omsf2.fileio import write_json, write_text

REPO = Path(__file__).resolve().parents[1]
OMSF2 = str(Path(sys.executable).with_name("omsf2"))
DEFAULT_RUNS = "0:2,0:1,1:2,2:2"
DEMO_EPOCHS, DEMO_N = 6, 1600  # `omsf2 demo`'s defaults: the README's first command
RECIPE = "recipe.json"  # beside a finished run's summary.json: the recipe it was made under
FIGURES = ("val_accuracy", "test_accuracy", "val_macro_f1", "test_macro_f1", "test_int8_accuracy",
           "test_int8_cpu_accuracy")  # fmt: skip


def recipe(epochs: int, n: int) -> dict[str, Any]:
    """What makes a run's figures: the demo's training config and a fingerprint of the phantoms.

    A run (in the record or in ``runs/``) is kept only under the same recipe: a change of the
    generator or of a training default makes the old figures describe another command.
    """
    cfg = DemoSpec(n=n, epochs=epochs).train_config().to_dict()
    cfg.pop("data")  # the folder, not the recipe
    h = hashlib.sha256()
    for i in range(8):  # two phantoms per stage, every drawing step of the generator included
        ph = generate_phantom(seed=0, index=i, split="train", size=128)
        h.update(ph.image.astype("<f4").tobytes())
    return {"train_config": cfg, "phantoms_sha256": h.hexdigest()}


def _parse_runs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        seed, _, threads = item.strip().partition(":")
        try:
            out.append((int(seed), int(threads)))
        except ValueError:
            raise SystemExit(f"error: --runs takes seed:threads pairs, e.g. {DEFAULT_RUNS}; got {item!r}") from None
    if len(out) < 1 or any(t < 1 for _, t in out):
        raise SystemExit("error: --runs needs at least one seed:threads pair with threads >= 1")
    return out


def _int8(export: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """An INT8 flavour's gate figures from the export report (None when it was not made)."""
    q = (export or {}).get(key)
    if not q:
        return None
    keys = ("file", "int8_accuracy", "fp32_accuracy", "accuracy_drop", "top1_agreement", "passed", "eval_mode")
    return {k: q.get(k) for k in keys}


def run_figures(out: Path) -> dict[str, Any]:
    """One finished demo's figures from its ``summary.json`` and ``train/metrics.json``."""
    s = json.loads((out / "summary.json").read_text())
    m = json.loads((out / "train" / "metrics.json").read_text())
    val, test = s["val"], s["test"]
    i8, i8cpu = _int8(s.get("export"), "int8"), _int8(s.get("export"), "int8_cpu")
    return {
        "val_accuracy": 100 * val["accuracy"],
        "test_accuracy": 100 * test["accuracy"],
        "val_macro_f1": 100 * val["macro_f1"],
        "test_macro_f1": 100 * test["macro_f1"],
        "test_int8_accuracy": None if not i8 or i8["int8_accuracy"] is None else 100 * i8["int8_accuracy"],
        "test_int8_cpu_accuracy": None if not i8cpu or i8cpu["int8_accuracy"] is None else 100 * i8cpu["int8_accuracy"],
        "int8": i8,
        "int8_cpu": i8cpu,
        "test_recall": {k: 100 * v for k, v in test["per_class_recall"].items()},
        "best_epoch": m["best_epoch"],
        "val_accuracy_by_epoch": [round(100 * h["accuracy"], 2) for h in m["history"]],
        "torch_threads": m.get("torch_threads"),
        "timings": {k: round(v, 1) for k, v in s["timings"].items()},
    }


def _demo(a: argparse.Namespace, seed: int, threads: int, out: Path) -> dict[str, Any]:
    cmd = [OMSF2, "demo", "--out", str(out), "--seed", str(seed)]
    if a.epochs != DEMO_EPOCHS:
        cmd += ["--epochs", str(a.epochs)]
    if a.n != DEMO_N:
        cmd += ["--n", str(a.n)]
    shown = f"OMP_NUM_THREADS={threads} " + " ".join(cmd).replace(OMSF2, "omsf2").replace(str(REPO) + "/", "")
    print("+", shown, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    return {"command": shown, "exit_code": rc, "wall_s": round(time.perf_counter() - t0, 1)}


def _spread(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for k in FIGURES:
        v = [r[k] for r in runs.values() if r.get(k) is not None]
        if v:
            out[k] = {"min": min(v), "max": max(v), "mean": statistics.fmean(v),
                      "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}  # fmt: skip
    return out


def _markdown(rec: dict[str, Any]) -> str:
    lines = [f"# {rec['scenario']} ({rec['machine']})", "", rec["about"], ""]
    if rec["test_run"]:
        lines += ["**A test run of the script** (fewer epochs or phantoms than `omsf2 demo`): these figures do "
                  "not describe the README's command.", ""]  # fmt: skip
    lines += ["| run | exit | val acc | test acc | val macro-F1 | test macro-F1 "
              "| INT8 (TensorRT contract) acc, gate part | INT8 CPU acc, gate part "
              "| best epoch | val acc by epoch | train s | total s |",
              "|" + "---|" * 12]  # fmt: skip
    for name, r in rec["runs"].items():
        f = r.get("figures")
        if not f:
            lines.append(f"| {name} | {r['step']['exit_code']} |" + " — |" * 10)
            continue
        i8 = "—" if f["test_int8_accuracy"] is None else f"{f['test_int8_accuracy']:.2f}"
        i8c = "—" if f["test_int8_cpu_accuracy"] is None else f"{f['test_int8_cpu_accuracy']:.2f}"
        curve = ", ".join(f"{v:.0f}" for v in f["val_accuracy_by_epoch"])
        lines.append(f"| {name} | {r['step']['exit_code']} | {f['val_accuracy']:.2f} | {f['test_accuracy']:.2f} "
                     f"| {f['val_macro_f1']:.2f} | {f['test_macro_f1']:.2f} | {i8} | {i8c} | {f['best_epoch']} "
                     f"| {curve} | {f['timings']['train_s']:.0f} | {f['timings']['total_s']:.0f} |")  # fmt: skip
    lines += ["", "Spread over the finished runs (percent):", "", "| figure | min | max | mean ± sample std | runs |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for k, s in rec["spread"].items():
        lines.append(f"| {k} | {s['min']:.2f} | {s['max']:.2f} | {s['mean']:.2f} ± {s['std']:.2f} | {s['n']} |")
    return "\n".join(lines) + "\n"


def _read_recipe(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / RECIPE).read_text())
    except (OSError, ValueError):
        return None


def _write(a: argparse.Namespace, dest: Path, desc: str, now: dict[str, Any], runs: dict[str, Any]) -> None:
    done = {k: r["figures"] for k, r in runs.items() if r.get("figures")}
    rec = {"scenario": dest.stem.rsplit("-" + machine()[0], 1)[0], "machine": desc, "date": time.strftime("%Y-%m-%d"),
           "pinned": {"epochs": a.epochs, "n": a.n}, "test_run": a.epochs != DEMO_EPOCHS or a.n != DEMO_N,
           "about": f"`omsf2 demo` ({a.n} train phantoms, {a.epochs} epochs), one run per seed:threads pair; "
           "figures of best.pt (chosen on val: the val figure is optimistic, test is held out); the INT8 figures "
           "are on the export's gate part of test (half its patients), test_int8_* in the JSON.",
           "recipe": now, "runs": runs, "spread": _spread(done),
           "written_by": written_by(__file__)}  # fmt: skip
    a.results.mkdir(parents=True, exist_ok=True)
    write_json(dest, rec)
    write_text(dest.with_suffix(".md"), _markdown(rec))


def main(argv: list[str] | None = None) -> Path:
    """Run (or keep) every demo, then write the record; returns its path."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="seed:threads pairs, comma-separated")
    ap.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help="passed to omsf2 demo (other: a test run)")
    ap.add_argument("--n", type=int, default=DEMO_N, help="passed to omsf2 demo (other: a test run)")
    ap.add_argument("--tag", default="", help="names the runs folder and the record")
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    pairs = _parse_runs(a.runs)
    name = "demo-spread" + (f"-{a.tag}" if a.tag else "")
    slug, desc = machine()
    dest = a.results / f"{name}-{slug}.json"
    now = recipe(a.epochs, a.n)
    try:
        old = json.loads(dest.read_text())
        carried = old["runs"] if old.get("pinned") == {"epochs": a.epochs, "n": a.n} else {}
        carried = carried if old.get("recipe") == now else {}
    except (OSError, ValueError, KeyError):
        carried = {}
    runs: dict[str, Any] = {}
    for seed, threads in pairs:
        label = f"seed-{seed}-threads-{threads}"
        out = REPO / "runs" / name / label
        if (out / "summary.json").is_file():
            if _read_recipe(out) != now:
                raise SystemExit(
                    f"error: {out.relative_to(REPO)} was made under another recipe (generator or training "
                    "defaults); move it away, or name a new --tag"
                )
            step = {"command": f"(kept) {out.relative_to(REPO)}", "exit_code": 0, "wall_s": 0.0}
            runs[label] = {"step": carried.get(label, {}).get("step", step), "figures": run_figures(out)}
        elif label in carried and carried[label].get("figures") and not out.exists():
            runs[label] = carried[label]  # finished in a runs folder that is gone
        else:
            step = _demo(a, seed, threads, out)
            ok = step["exit_code"] == 0 and (out / "summary.json").is_file()
            if ok:
                write_json(out / RECIPE, now)
            runs[label] = {"step": step, "figures": run_figures(out) if ok else None}
        _write(a, dest, desc, now, runs)  # after every run: an interrupted spread keeps what finished
    print(f"wrote {dest} (.md)")
    failed = [k for k, r in runs.items() if not r.get("figures")]
    if failed:
        raise SystemExit(f"error: {len(failed)} demo run(s) failed: {', '.join(failed)}")
    return dest


if __name__ == "__main__":
    main()
