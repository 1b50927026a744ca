"""INT8 CPU flavour by two quantizers: omsf2's (onnxruntime + its mixed-precision search) vs NNCF's accuracy control.

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/int8_quantizers.py --ckpt runs/stability-ema-span/seed-0/best.pt \\
        --ckpt runs/stability-ema-span/seed-1/best.pt [--data ../shared/data/cxr-real] [--work runs/int8-quantizers]

For each checkpoint, on the same images (calibration: the data's train split; gate: its val split):

1. the export with default settings and ``--quantizer ort`` (both flavours; the CPU one is compared),
2. the same with ``--quantizer nncf`` (``nncf.quantize_with_accuracy_control``; CPU flavour only),
3. ``omsf2 bench`` of each export folder with the CPU backends, batch 1 (FP32 rows for the ratio).

The exports are the library call the demo makes (``run_export`` with ``fail_on_gate`` off), so a
failed gate is recorded with its numbers instead of ending the run (and its flavour, which the
export does not write, has no latency row); what each gate decided is in the record.
Writes ``bench/results/int8-quantizers-<machine>.json|md``.
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

from common import RESULTS, machine, written_by

REPO = Path(__file__).resolve().parents[1]
OMSF2 = str(Path(sys.executable).with_name("omsf2"))
WORK = REPO / "runs" / "int8-quantizers"
BACKENDS = "torch,ort,ort-int8,openvino-int8"
QUANTIZERS = ("ort", "nncf")
GATE_KEYS = ("file", "method", "weight_bits", "eval_count", "eval_mode", "fp32_accuracy", "accuracy_drop",
             "accuracy_drop_ci95", "top1_agreement", "top1_agreement_ci95", "passed", "failed_because",
             "float_groups", "kernels_vs_qdq_float_agreement")  # fmt: skip


def _export(ckpt: Path, data: Path, out: Path, quantizer: str) -> dict[str, Any]:
    """The export's report.json (kept in ``out``; a finished export is not redone)."""
    from omsf2.export.targets import ExportSpec, run_export

    report = out / "report.json"
    if not report.is_file():
        t0 = time.perf_counter()
        spec = ExportSpec(str(ckpt), str(out), int8=True, calib_data=str(data / "train"),
                          eval_data=str(data / "val"), quantizer=quantizer, fail_on_gate=False)  # fmt: skip
        run_export(spec)
        rec = json.loads(report.read_text())
        rec["bench_wall_s"] = round(time.perf_counter() - t0, 1)
        report.write_text(json.dumps(rec, indent=2) + "\n")
    return json.loads(report.read_text())


def _bench(export: Path, data: Path, out: Path) -> list[dict[str, Any]]:
    if not (out / "results.json").is_file():
        cmd = [OMSF2, "bench", str(export), "--backends", BACKENDS, "--batch", "1", "--threads", "2",
               "--eval-data", str(data / "val"), "--warmup-s", "2", "--duration-s", "8", "--rounds", "8",
               "--no-plot", "--out", str(out)]  # fmt: skip
        print("+", " ".join(cmd), flush=True)
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            raise SystemExit(f"error: omsf2 bench failed on {export}")
    return json.loads((out / "results.json").read_text())["rows"]


def _rows(rec: dict[str, Any]) -> list[str]:
    lines = []
    for c in rec["checkpoints"]:
        for q in QUANTIZERS:
            g = c["gate"].get(q)
            if g is None:
                continue
            lo, hi = g["accuracy_drop_ci95"]
            kept = ", ".join(g.get("float_groups") or []) or "none"
            lat = {r["backend"]: r for r in c["bench"][q] if r["status"] == "ok"}
            cells = [f"{lat[b]['p50_ms']:.2f} ({lat[b]['speedup_vs_torch']:.2f}x)" if b in lat else "—"
                     for b in ("ort-int8", "openvino-int8")]  # fmt: skip
            drop = f"{g['accuracy_drop']:.2f} [{lo:.2f}, {hi:.2f}]"
            lines.append(
                f"| {c['name']} | {q} | {100 * g['fp32_accuracy']:.2f} % | {drop} | {100 * g['top1_agreement']:.1f} % "
                f"| {len(g.get('float_groups') or [])}: {kept} | {'passed' if g['passed'] else 'FAILED'} "
                f"| {cells[0]} | {cells[1]} |"
            )
    return lines


def _s8s8_lines(rec: dict[str, Any]) -> list[str]:
    lines = []
    for c in rec["checkpoints"]:
        g = c.get("gate_s8s8")
        if g is None:
            continue
        lo, hi = g["accuracy_drop_ci95"]
        kept = len(g.get("float_groups") or [])
        lines.append(f"- {c['name']}: `{g['file']}` ({g.get('eval_mode', '?')}) drop {g['accuracy_drop']:.2f} "
                     f"[{lo:.2f}, {hi:.2f}], agreement {100 * g['top1_agreement']:.1f} %, {kept} group(s) in "
                     f"float: {'passed' if g['passed'] else 'FAILED'}")  # fmt: skip
    return lines


def _md(rec: dict[str, Any]) -> str:
    lines = [f"# int8-quantizers ({rec['machine']}, {rec['date']})", "", rec["about"], "",
             "| checkpoint | quantizer | FP32 acc | drop, points (95 % CI) | agreement | kept in float | gate "
             "| ort-int8 p50 ms (x torch) | openvino-int8 p50 ms (x torch) |",
             "|---|---|---:|---|---:|---|---|---:|---:|", *_rows(rec), "",
             "The other flavour of the same `--quantizer ort` exports (the TensorRT contract, which NNCF cannot "
             "write):", "", *_s8s8_lines(rec), "", rec["note"], ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", type=Path, action="append", required=True, help="a trained checkpoint (repeatable)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cxr-real")
    ap.add_argument("--work", type=Path, default=WORK, help="folder of the steps' outputs (finished steps are kept)")
    args = ap.parse_args()
    data = args.data.resolve()
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        raise SystemExit(f"error: {data} has no train/ and val/ folders")
    missing = [str(c) for c in args.ckpt if not c.is_file()]
    if missing:
        raise SystemExit(f"error: no such checkpoint: {', '.join(missing)}")
    checkpoints = []
    for ckpt in (c.resolve() for c in args.ckpt):
        name = ckpt.parent.name if ckpt.name == "best.pt" else ckpt.stem
        work = args.work.resolve() / name
        entry: dict[str, Any] = {"name": name, "checkpoint": str(ckpt.relative_to(REPO)) if ckpt.is_relative_to(REPO)
                                 else str(ckpt), "gate": {}, "bench": {}, "export_s": {}}  # fmt: skip
        for q in QUANTIZERS:
            report = _export(ckpt, data, work / f"export-{q}", q)
            if "int8_cpu" in report:
                entry["gate"][q] = {k: report["int8_cpu"][k] for k in GATE_KEYS if k in report["int8_cpu"]}
            if "int8" in report:  # the TensorRT-contract file (ort only): does the whole default export pass?
                entry["gate_s8s8"] = {k: report["int8"][k] for k in GATE_KEYS if k in report["int8"]}
            entry["export_s"][q] = report.get("bench_wall_s")
            # A flavour that failed its gate leaves no file: nothing to time.
            ran = (work / f"export-{q}" / "model.int8-cpu.onnx").is_file()
            entry["bench"][q] = _bench(work / f"export-{q}", data, work / f"bench-{q}") if ran else []
        checkpoints.append(entry)
    slug, desc = machine()
    rec = {
        "scenario": "int8-quantizers",
        "written_by": written_by(__file__),
        "about": (
            "The CPU flavour (`model.int8-cpu.onnx`, U8S8, 7-bit weights) of `omsf2 export --int8` with default "
            "settings, by `--quantizer ort` (onnxruntime's quantize_static + omsf2's mixed-precision search) and "
            "`--quantizer nncf` (nncf.quantize_with_accuracy_control, its own ranges and fast bias correction); "
            f"calibrated on {data.name}/train, gated on {data.name}/val (150 images) on this CPU's integer kernels. "
            "Latency: one `omsf2 bench` per export folder (batch 1, 2 threads); compare across folders through "
            "the x torch ratio."
        ),
        "machine": desc,
        "date": date.today().isoformat(),
        "checkpoints": checkpoints,
        "note": (
            "One eval image is 0.67 points. Latencies come from a 2-core machine that other processes may share; "
            "the bench flags noisy rows in its own results (kept in the json)."
        ),
    }
    dest = RESULTS / f"int8-quantizers-{slug}"
    dest.with_suffix(".json").write_text(json.dumps(rec, indent=2) + "\n")
    dest.with_suffix(".md").write_text(_md(rec))
    print(f"wrote {dest}.json|md")


if __name__ == "__main__":
    main()
