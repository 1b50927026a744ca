"""INT8 on every stability checkpoint: does the default ``omsf2 export --int8`` pass on each seed, not only one?

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/int8_cxr_seeds.py [--seeds 0,1,2] [--runs runs/stability-ema-span]
                                             [--data ../shared/data/cxr-real] [--work runs/int8-cxr-seeds]
    .venv/bin/python bench/int8_cxr_seeds.py --render    # only rewrite the .md from the recorded .json

For each seed's ``best.pt`` (``bench/stability.py``'s runs: ``omsf2_tiny``, 30 epochs at 224 px on cxr-real),
the export a user runs with the default settings (calibrated on the train split; the val split cut by patient
into the search part and the gate part): ``bench/int8_cxr.py``'s :func:`export_step`, which records the exit code
and, when a gate failed and the command wrote nothing, every flavour's figures from the same export run with
``fail_on_gate`` off. A seed whose default export fails is exported again with ``--max-drop 1``.

Writes ``bench/results/int8-cxr-seeds-<machine>.json|md``; the .md is rendered from the .json (``--render``).
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path
from typing import Any

from common import RESULTS, machine, written_by
from int8_cxr import REPO, export_step

FIELDS = ("int8_accuracy", "accuracy_drop", "accuracy_drop_ci95", "top1_agreement", "top1_agreement_ci95",
          "passed", "failed_because", "float_groups", "search", "caveats", "small_groups", "eval_count",
          "search_count")  # fmt: skip


def _summary(res: dict[str, Any]) -> dict[str, Any]:
    """One export's figures: exit code, FP32 on the gate part, and per flavour its gate and search figures."""
    rep = res["report"]
    flavours = {}
    for name in ("int8", "int8_cpu"):
        if name in rep:
            q = rep[name]
            full = (q.get("mixed_precision") or {}).get("full_int8")
            flavours[name] = {"file": q["file"], **{k: q[k] for k in FIELDS if k in q}, "full_int8_search": full}
    fp32 = next((rep[n]["fp32_accuracy"] for n in ("int8", "int8_cpu") if n in rep), None)
    return {"exit_code": res["exit_code"], "error": res["error"], "fp32_gate_accuracy": fp32, "flavours": flavours}


def _cell(f: dict[str, Any] | None) -> str:
    if f is None:
        return "-"
    s = f.get("search") or {}
    full = f.get("full_int8_search")
    how = (f"full INT8 failed the search part (drop {full['accuracy_drop']:.2f}, agreement "
           f"{100 * full['top1_agreement']:.1f} %); " if full else "")  # fmt: skip
    kept = f"{len(f['float_groups'])} group(s) float" if f.get("float_groups") else "full INT8"
    lo, hi = f["accuracy_drop_ci95"]
    verdict = "passed" if f["passed"] else "**failed**"
    return (f"{how}{kept}: search part drop {s.get('accuracy_drop', 0):.2f}, agreement "
            f"{100 * s.get('top1_agreement', 0):.1f} % ({s.get('n')}); gate part drop {f['accuracy_drop']:.2f} "
            f"[{lo:.2f}, {hi:.2f}], agreement {100 * f['top1_agreement']:.1f} % ({f['eval_count']}): "
            f"{verdict}")  # fmt: skip


def render(rec: dict[str, Any]) -> str:
    """The record as markdown."""
    wb = rec["written_by"]
    lines = [f"# int8-cxr on {len(rec['seeds'])} checkpoints ({rec['machine']}), {rec['date']}", "", rec["about"], "",
             f"Written by `{wb['script']}` (`{wb['command']}`). Commands: " + "; ".join(
                 f"`{s['command']}` ({s['wall_s']:.0f} s, exit {s['exit_code']})" for s in rec["steps"]) + ".", "",
             "| seed | FP32 ONNX (gate part) | `model.int8.onnx` (S8S8, gated as Q/DQ float ops) "
             "| `model.int8-cpu.onnx` (U8S8, onnxruntime integer kernels) | export |",
             "|---|---:|---|---|---|"]  # fmt: skip
    for s in rec["seeds"]:
        for label, run in (("", s["default"]), (" with `--max-drop 1`", s.get("max_drop_1"))):
            if run is None:
                continue
            fl = run["flavours"]
            ended = "exit 0" if run["exit_code"] == 0 else f"**exit {run['exit_code']}** (writes nothing)"
            lines.append(f"| {s['seed']}{label} | {100 * run['fp32_gate_accuracy']:.2f} % | {_cell(fl.get('int8'))} "
                         f"| {_cell(fl.get('int8_cpu'))} | {ended} |")  # fmt: skip
    cautions = sorted(
        {c for s in rec["seeds"] for f in s["default"]["flavours"].values() for c in f.get("caveats", [])}
    )
    lines += ["", *[f"Caution: {c}." for c in cautions]]
    lines += ["", rec["note"], ""]
    return "\n".join(lines)


def main() -> None:
    """Export every seed's checkpoint with the default settings (and --max-drop 1 where that fails); record."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "stability-ema-span")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cxr-real")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "int8-cxr-seeds")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the recorded .json")
    a = ap.parse_args()
    if a.render:
        for path in RESULTS.glob("int8-cxr-seeds-*.json"):
            path.with_suffix(".md").write_text(render(json.loads(path.read_text())))
        return
    data = a.data.resolve()
    common = {"int8": True, "calib_data": str(data / "train"), "eval_data": str(data / "val")}
    steps: list[dict[str, Any]] = []
    seeds = []
    for seed in (int(s) for s in a.seeds.split(",")):
        ckpt = (a.runs / f"seed-{seed}" / "best.pt").resolve()
        if not ckpt.is_file():
            raise SystemExit(f"error: {ckpt} does not exist (train it with bench/stability.py first)")
        work = a.work.resolve() / f"seed{seed}"
        entry: dict[str, Any] = {"seed": seed, "checkpoint": str(ckpt.relative_to(REPO))}
        entry["default"] = _summary(export_step(ckpt, work / "export", common, steps))
        if entry["default"]["exit_code"] != 0:
            entry["max_drop_1"] = _summary(export_step(ckpt, work / "export-drop1", {**common, "max_drop": 1.0}, steps))
        seeds.append(entry)
    slug, desc = machine()
    rec = {
        "scenario": "int8-cxr-seeds",
        "about": (
            "Does `omsf2 export --int8` with its default settings (`--max-drop 0.5`, `--min-agreement 0.98`, "
            "percentile calibration on 512 train images, mixed precision on) pass on every checkpoint of the "
            f"stability runs ({a.runs.name}: omsf2_tiny, 30 epochs at 224 px on cxr-real), not only one? The val "
            "split (150 images) is cut by patient: mixed precision searches on one part, the other part judges"
        ),
        "written_by": written_by(__file__),
        "machine": desc,
        "date": date.today().isoformat(),
        "steps": steps,
        "seeds": seeds,
        "note": (
            "Each part of val holds about 75 images: one image is about 1.3 points, so the 0.5-point bound allows "
            "no net lost image on the gate part, and neither part can show 98 % agreement with 95 % confidence. "
            "A failed export writes nothing; its figures come from the same export with fail_on_gate off."
        ),
    }
    dest = RESULTS / f"int8-cxr-seeds-{slug}"
    dest.with_suffix(".json").write_text(json.dumps(rec, indent=2) + "\n")
    dest.with_suffix(".md").write_text(render(rec))
    print(f"wrote {dest}.json|md")


if __name__ == "__main__":
    main()
