"""INT8 on real radiographs: the export's default gate, full INT8 vs mixed precision vs FP32, every CPU backend.

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/int8_cxr.py [--data ../shared/data/cxr-real] [--ckpt runs/int8-cxr/train/best.pt]
                                       [--work runs/int8-cxr]

Steps, each an ``omsf2`` command as a user types it (recorded with its wall time):

1. ``omsf2 train`` ``omsf2_tiny`` 30 epochs at 224 px on the data's train split (skipped with ``--ckpt``);
2. ``omsf2 export --int8`` with the default settings, calibrated on the train split; the val split is cut by
   patient into a search part (mixed precision chooses there) and a gate part that judges: the artifact a
   user gets (mixed precision where the search needed it);
3. the same export with ``--no-mixed-precision`` and the gate opened (``--max-drop 100 --min-agreement 0``):
   full INT8, recorded whatever its accuracy, for the comparison;
4. ``omsf2 bench`` of both export folders on the val split with every CPU backend, batch 1.

Writes ``bench/results/int8-cxr-<machine>.json|md``: each flavour's gate on the gate part (drop and agreement
with their 95 % intervals, subgroups, caveats, the kernel path the gate ran on, the groups kept in float) beside
the search part's figures and, per backend, the accuracy (on the whole val split), top-1 agreement with PyTorch
FP32 and latency of FP32, full INT8 and the default (mixed-precision) artifact.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from common import RESULTS, machine, summarize, written_by

REPO = Path(__file__).resolve().parents[1]
OMSF2 = str(Path(sys.executable).with_name("omsf2"))
WORK = REPO / "runs" / "int8-cxr"
BACKENDS = "torch,ort,ort-int8,ort-int8-trt,openvino,openvino-int8"


def _run(cmd: list[str], steps: list[dict[str, Any]], ok_codes: tuple[int, ...] = (0,)) -> None:
    shown = _shown(cmd)
    print("+", shown, flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO).returncode
    if rc not in ok_codes:
        raise SystemExit(f"error: step failed with exit code {rc}: {shown}")
    steps.append({"command": shown, "wall_s": round(time.perf_counter() - t0, 1), "exit_code": rc})


def _flags(kw: dict[str, Any]) -> list[str]:
    """``omsf2 export`` options for ExportSpec fields (the ones these scripts use)."""
    out = ["--int8"] if kw.get("int8") else []
    for key in ("calib_data", "eval_data", "gate_data", "max_drop", "min_agreement"):
        if key in kw:
            out += [f"--{key.replace('_', '-')}", str(kw[key])]
    return out + (["--no-mixed-precision"] if kw.get("mixed_precision") is False else [])


def export_step(ckpt: Path, out: Path, kw: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """``omsf2 export CKPT --out OUT`` with ``kw``'s options, as a user runs it; the report and how it ended.

    A failed gate exits 1 and writes nothing, so the same export is then run once more through the
    library with ``fail_on_gate`` off into ``OUT-report`` (the flavours that passed are written, every
    flavour's figures reported, as ``omsf2 demo`` does): the record holds the failing figures, from a
    script. A finished export (either folder) is kept and not run again.

    Returns:
        ``{"report", "exit_code", "error", "folder"}``; ``folder`` holds what was written.
    """
    from omsf2.export.targets import ExportSpec, run_export

    shadow = out.with_name(out.name + "-report")
    ended = shadow / "cli-exit.json"
    cmd = [OMSF2, "export", str(ckpt), "--out", str(out), *_flags(kw)]
    shown = _shown(cmd)
    if (out / "report.json").is_file() or ended.is_file():
        rc = 0 if (out / "report.json").is_file() else json.loads(ended.read_text())["exit_code"]
        steps.append({"command": f"(kept from an earlier run) {shown}", "wall_s": 0.0, "exit_code": rc})
    else:
        print("+", shown, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", flush=True)
        steps.append({"command": shown, "wall_s": round(time.perf_counter() - t0, 1), "exit_code": proc.returncode})
        if proc.returncode not in (0, 1):
            raise SystemExit(f"error: step failed with exit code {proc.returncode}: {shown}")
        if proc.returncode == 1:
            error = next((ln for ln in proc.stderr.splitlines()[::-1] if ln.startswith("error:")), "")
            run_export(ExportSpec(str(ckpt), str(shadow), fail_on_gate=False, **kw))
            ended.write_text(json.dumps({"exit_code": 1, "error": error}) + "\n")
    if (out / "report.json").is_file():
        return {"report": json.loads((out / "report.json").read_text()), "exit_code": 0, "error": "", "folder": out}
    cli = json.loads(ended.read_text())
    return {"report": json.loads((shadow / "report.json").read_text()), **cli, "folder": shadow}


def _shown(cmd: list[str]) -> str:
    return " ".join("omsf2" if c == OMSF2 else str(Path(c).relative_to(REPO)) if c.startswith(str(REPO)) else c
                    for c in cmd)  # fmt: skip


def _flavour(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("file", "weight_bits", "method", "calib_count", "figures_on", "eval_count", "search_count", "eval_mode",
            "kernel_path", "fp32_accuracy", "int8_accuracy", "accuracy_drop", "accuracy_drop_ci95", "top1_agreement",
            "top1_agreement_ci95", "flipped", "passed", "failed_because", "float_groups", "search", "groups",
            "small_groups", "caveats", "kernels_vs_qdq_float_agreement", "mixed_precision")  # fmt: skip
    return {k: entry[k] for k in keys if k in entry}


def _bench(export: Path, data: Path, out: Path, steps: list[dict[str, Any]]) -> dict[str, Any]:
    if not (out / "results.json").is_file():
        _run([OMSF2, "bench", str(export), "--backends", BACKENDS, "--batch", "1", "--threads", "2",
              "--eval-data", str(data / "val"), "--warmup-s", "2", "--duration-s", "10", "--rounds", "10",
              "--no-plot", "--out", str(out)], steps)  # fmt: skip
    return json.loads((out / "results.json").read_text())


def _variant(rec: dict[str, Any], variant: str, backend: str, artifact: str | None) -> str:
    """How the artifact a row ran was quantized: FP32, full INT8, or mixed with its float groups."""
    if "int8" not in backend:
        return "FP32"
    if variant == "full INT8":
        return variant
    kept = next((f.get("float_groups") or [] for f in rec["gate"].values() if f["file"] == artifact), [])
    return f"default: mixed, {len(kept)} group(s) float" if kept else "default (= full INT8: no group kept float)"


def _md(rec: dict[str, Any]) -> str:
    wb = rec.get("written_by") or {}
    lines = [f"# int8-cxr ({rec['machine']})", "", rec["about"], "",
             f"Written by `{wb.get('script')}` (`{wb.get('command')}`), {rec['date']}. Commands: " + "; ".join(
                 f"`{s['command']}` ({s['wall_s']:.0f} s)" for s in rec["steps"]), ""]  # fmt: skip
    lines += ["## The export's gate (default settings)", "", _split_line(rec), "",
              "| flavour | weights | gate ran on | FP32 acc (gate part) | drop, points (95 % CI) "
              "| top-1 agreement (95 % CI) | search part: drop, agreement | kept in float | gate |",
              "|---|---|---|---:|---|---|---|---|---|"]  # fmt: skip
    for name, f in rec["gate"].items():
        lines.append(_gate_row(name, f))
    cautions = sorted({c for f in rec["gate"].values() for c in f.get("caveats") or []})
    lines += ["", *[f"Caution: {c}." for c in cautions]]
    if rec.get("export_exit_code"):
        lines += ["", f"The default export exited {rec['export_exit_code']} and wrote nothing "
                  f"(`{rec['export_error']}`); the figures above come from the same export run with fail_on_gate "
                  "off, which writes the flavours that passed."]  # fmt: skip
    lines += ["", "## Every CPU backend: FP32, full INT8 and the default artifact (val split, batch 1)", "",
              "Latency rows of one artifact come from one `omsf2 bench` run (interleaved rounds); compare "
              "latencies across the two runs through their `x torch` column.", "",
              "| backend | artifact | variant | accuracy | agreement with torch FP32 | p50 ms | x torch |",
              "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for variant, rows in rec["bench"].items():
        for r in rows:
            if r["status"] != "ok":
                continue
            if variant == "full INT8" and "int8" not in r["backend"]:
                continue  # the FP32 rows of the second run repeat the first run's
            kind = _variant(rec, variant, r["backend"], r.get("artifact"))
            sp = r["speedup_vs_torch"]
            art = r.get("artifact") or "checkpoint (FP32)"
            lines.append(f"| {r['backend']} | {art} | {kind} | {100 * r['accuracy']:.2f} % "
                         f"| {100 * r['agreement']:.1f} % | {r['p50_ms']:.2f} | {sp:.2f} |")  # fmt: skip
    lines += ["", rec["note"], ""]
    return "\n".join(lines)


def _parts(report: dict[str, Any]) -> dict[str, Any]:
    """report.json's ``gate_data`` without the image lists (the export folder keeps them)."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "images"} if isinstance(v, dict) else v
            for k, v in report.get("gate_data", {}).items()}  # fmt: skip


def _split_line(rec: dict[str, Any]) -> str:
    split = rec.get("gate_data")
    if not split:
        return "Gated on the whole val split (recorded before the search/gate split)."
    s, g = split["search"], split["gate"]
    return (f"{split['source']}; search part {s['n']} images ({s['patients']} patients), gate part {g['n']} images "
            f"({g['patients']} patients); {split['patients_from']}.")  # fmt: skip


def _gate_row(name: str, f: dict[str, Any]) -> str:
    kp = f.get("kernel_path")
    path = kp if isinstance(kp, str) else f"onnxruntime integer kernels ({kp['isa']})"
    lo, hi = f["accuracy_drop_ci95"]
    alo, ahi = f["top1_agreement_ci95"]
    kept = ", ".join(f.get("float_groups") or []) or "none"
    s = f.get("search") or {}
    searched = f"{s['accuracy_drop']:.2f}, {100 * s['top1_agreement']:.1f} % ({s['n']})" if s.get("n") else "-"
    verdict = "passed" if f["passed"] else "FAILED: " + "; ".join(f.get("failed_because") or [])
    return (f"| `{f['file']}` ({name}) | {f['weight_bits']}-bit | {path} | {100 * f['fp32_accuracy']:.2f} % "
            f"| {f['accuracy_drop']:.2f} [{lo:.2f}, {hi:.2f}] | {100 * f['top1_agreement']:.1f} % "
            f"[{100 * alo:.1f}, {100 * ahi:.1f}] | {searched} | {kept} | {verdict} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cxr-real")
    ap.add_argument("--ckpt", type=Path, help="a trained checkpoint (skips the training step)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the recorded .json")
    ap.add_argument("--work", type=Path, default=WORK, help="folder of the steps' outputs (finished steps are kept)")
    args = ap.parse_args()
    if args.render:
        for path in RESULTS.glob("int8-cxr-*.json"):
            path.with_suffix(".md").write_text(_md(json.loads(path.read_text())))
        return
    data = args.data.resolve()
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        raise SystemExit(f"error: {data} has no train/ and val/ folders")
    steps: list[dict[str, Any]] = []
    work = args.work.resolve()
    ckpt = args.ckpt.resolve() if args.ckpt else work / "train" / "best.pt"
    if not ckpt.is_file():
        if args.ckpt:
            raise SystemExit(f"error: checkpoint {ckpt} does not exist")
        _run([OMSF2, "train", "--data", str(data), "--model", "omsf2_tiny", "--img-size", "224",
              "--epochs", str(args.epochs), "--out", str(work / "train")], steps)  # fmt: skip
    common = {"int8": True, "calib_data": str(data / "train"), "eval_data": str(data / "val")}
    default = export_step(ckpt, work / "export", common, steps)  # exit 1 (a failed gate) is recorded, not hidden
    full = export_step(ckpt, work / "export-full", {**common, "mixed_precision": False, "max_drop": 100.0,
                                                    "min_agreement": 0.0}, steps)  # fmt: skip
    report, full_report = default["report"], full["report"]
    bench_default = _bench(default["folder"], data, work / "bench-export", steps)
    bench_full = _bench(full["folder"], data, work / "bench-export-full", steps)
    metrics = ckpt.parent / "metrics.json"
    train = json.loads(metrics.read_text()) if metrics.is_file() else {}
    slug, desc = machine()
    rec = {
        "scenario": "int8-cxr",
        "about": (
            f"omsf2_tiny trained on {data.name} (train split), `omsf2 export --int8` with default settings "
            "calibrated on the train split; the val split (150 images, 119 patients, none in train) is cut by "
            "patient into a search part, where mixed precision chooses, and a gate part that judges; full INT8 is "
            "the same export with --no-mixed-precision and the gate opened; the bench's accuracy is on all of val"
        ),
        "written_by": written_by(__file__),
        "machine": desc,
        "date": date.today().isoformat(),
        "checkpoint": str(ckpt.relative_to(REPO)) if ckpt.is_relative_to(REPO) else str(ckpt),
        "steps": steps,
        "train": {
            k: train[k] for k in ("model", "train_size", "val_size", "best_epoch", "best", "wall_s") if k in train
        },  # the checkpoint's own record (best.pt was chosen on val: optimistic)
        "export_exit_code": default["exit_code"],
        "export_error": default["error"],
        "gate_data": _parts(report),
        "gate": {k: _flavour(report[k]) for k in ("int8", "int8_cpu") if k in report},
        "full_int8_gate": {k: _flavour(full_report[k]) for k in ("int8", "int8_cpu") if k in full_report},
        "bench": {"default": bench_default["rows"], "full INT8": bench_full["rows"]},
        "fingerprint": bench_default["fingerprint"],
        "ceilings": bench_default["ceilings"],
        "note": (
            "The val split is small (150 images, about 75 in each part): read the intervals. Latencies were "
            "measured on a 2-core machine that other processes may share; the bench flags noisy rows in its own "
            "results."
        ),
    }
    dest = RESULTS / f"int8-cxr-{slug}"
    dest.with_suffix(".json").write_text(json.dumps(rec, indent=2) + "\n")
    dest.with_suffix(".md").write_text(_md(rec))
    print(f"wrote {dest}.json|md and {summarize()}")


if __name__ == "__main__":
    main()
