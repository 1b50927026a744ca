"""Shared by the bench scripts: the machine description and the recorded-results summary page.

Every result JSON in ``bench/results`` is rendered into ``bench/results/README.md`` by
:func:`summarize`, whichever script wrote it, so the page never goes stale for one kind.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def machine() -> tuple[str, str]:
    """(slug, description) of this machine: CPU model, cores, memory, GPU."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except OSError:
        mem = 0.0
    cores = os.cpu_count() or 0
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    desc = f"{cpu}, {cores} cores, {mem:.0f} GiB RAM, {gpu}, torch {torch.__version__}"
    slug = re.sub(r"[^a-z0-9]+", "-", f"{cpu}-{cores}c-{'gpu' if torch.cuda.is_available() else 'cpu'}".lower())
    return slug.strip("-"), desc


def written_by(script_file: str, argv: list[str] | None = None) -> dict[str, str]:
    """The ``written_by`` field of every record: the script (repository path) and the command that ran it.

    Args:
        script_file: the script's ``__file__``.
        argv: its arguments (default: this process's).
    """
    rel = Path(script_file).resolve().relative_to(REPO).as_posix()
    args = sys.argv[1:] if argv is None else argv
    return {"script": rel, "command": " ".join(["python", rel, *(shlex.quote(a) for a in args)])}


def curve_stability(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Selection-free figures of one run's val macro-F1 curve, in points (percent).

    The stability rule (issue 14, acceptance 2): no epoch after the first third of the schedule
    may lie more than a bound below the run's best epoch; ``worst_dip_after_first_third`` is that
    largest gap and ``worst_dip_epoch`` where it is (1-based). ``last_third_mean`` averages the
    last third of the epochs: like the final epoch it involves no selection, with less epoch-to-epoch
    noise.

    Args:
        history: ``metrics.json``'s per-epoch records, each with ``macro_f1`` in [0, 1].
    """
    f1 = [100.0 * h["macro_f1"] for h in history]
    third = len(f1) // 3
    best = max(f1)
    dip, at = max((best - v, i + 1) for i, v in enumerate(f1) if i >= third)
    tail = f1[len(f1) - max(1, len(f1) // 3) :]
    return {
        "best_macro_f1": best,
        "best_epoch": f1.index(best) + 1,
        "worst_dip_after_first_third": dip,
        "worst_dip_epoch": at,
        "last_third_mean": sum(tail) / len(tail),
    }


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def summarize() -> Path:
    """Rewrite bench/results/README.md from every result JSON (train-*.json, kernels-*.json)."""
    lines = [
        "# Recorded results",
        "",
        "Written by the bench scripts (`bench/train_scenarios.py`, `bench/bench_scenarios.py`,",
        "`bench/profile_cpu.py`, `bench/kernel_bench.py`) from the JSON",
        "files beside this page; each JSON holds the exact commands or cases, times, machine and every",
        "metric. Accuracy is on splits not trained on; a split that also chose the checkpoint says so,",
        "since its figure is then optimistic.",
        "",
    ]
    for path in sorted(RESULTS.glob("train-*.json")):
        r = json.loads(path.read_text())
        lines += [f"## {r['scenario']} ({path.name})", "", f"{r['about']}.", ""]
        lines += [f"Machine: {r['machine']}; {r['date']}.", ""]
        lines += ["| command | wall time |", "|---|---:|"]
        lines += [f"| `{s['command']}` | {s['wall_s']:.0f} s |" for s in r["steps"]]
        m = r["metrics"]
        splits = []
        if "summary" in m:
            splits = [("val (model selection)", m["summary"]["val"]), ("test (held out)", m["summary"]["test"])]
        if "eval_val" in m:
            splits = [("val, best.pt (selected on val: optimistic)", m["eval_val"])]
        if "eval_val_last" in m:
            splits.append(("val, last.pt (no selection)", m["eval_val_last"]))
        if splits:
            lines += ["", "| split | n | accuracy | macro-F1 | QWK | macro-AUC | per-class recall |"]
            lines += ["|---|---:|---:|---:|---:|---:|---|"]
        for label, s in splits:
            rec = ", ".join(f"{k} {v:.2f}" for k, v in s["per_class_recall"].items())
            lines.append(
                f"| {label} | {s['n']} | {_fmt(s['accuracy'])} | {_fmt(s['macro_f1'])} | {_fmt(s['qwk'])} "
                f"| {_fmt(s['macro_auc'])} | {rec} |"
            )
        exp = m.get("summary", {}).get("export") or m.get("export")
        if exp:
            par = exp["onnx_parity"]
            lines += ["", f"Export: ONNX vs PyTorch top-1 agreement {par['top1_agreement']:.1%} on {par['n']} images "
                      f"(max logits error {par['max_abs_err']:.1e}).", ""]  # fmt: skip
            lines += ["| INT8 flavour | method | calib | eval n | FP32 acc | INT8 acc | drop (pts) | top-1 agreement |"]
            lines += ["|---|---|---:|---:|---:|---:|---:|---:|"]
            for key in ("int8", "int8_cpu"):
                if q := exp.get(key):
                    lines.append(
                        f"| {q['file']} | {q['method']} | {q['calib_count']} | {q['eval_count']} "
                        f"| {q['fp32_accuracy']:.4f} | {q['int8_accuracy']:.4f} | {q['accuracy_drop']:.2f} "
                        f"| {q['top1_agreement']:.1%} |"
                    )
        lines.append("")
    for path in sorted(RESULTS.glob("bench-*.json")):
        lines += _bench_section(path)
    for path in sorted(RESULTS.glob("profile-*.json")):
        lines += _profile_section(path)
    analysis = RESULTS / "cpu-analysis.md"
    if analysis.is_file():
        lines += ["## CPU inference: where the time goes", "", f"See [{analysis.name}]({analysis.name}).", ""]
    for path in sorted(RESULTS.glob("kernels-*.json")):
        lines += _kernel_section(path)
    # Scenario records that render their own page (INT8 on real data, DICOM and Triton load, DDP, ablation).
    pages = [p for p in sorted(RESULTS.glob("*.md")) if p.name != "README.md" and p.name != analysis.name
             and not p.name.startswith(("bench-", "profile-", "kernels-", "train-"))]  # fmt: skip
    if pages:
        lines += ["## Other recorded scenarios", "", *[f"- [{p.stem}]({p.name})" for p in pages], ""]
    out = RESULTS / "README.md"
    out.write_text("\n".join(lines))
    return out


def _cell(v: object, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def _kernel_section(path: Path) -> list[str]:
    """One kernel micro-benchmark result as a markdown table (see bench/kernel_bench.py)."""
    r = json.loads(path.read_text())
    lines = [f"## kernels ({path.name})", "", f"{r['about']}", "", f"Machine: {r['machine']}; {r['date']}.", ""]
    lines += ["| op | shape | implementation | dtype | status | max abs err | median ms | p90 ms | GB/s | x ref |"]
    lines += ["|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(
            f"| {row['op']} | {row['case']} | {row['backend']} | {row['dtype']} | {row['status']} "
            f"| {_cell(row.get('max_abs_err'), '.1e')} | {_cell(row.get('median_ms'), '.4f')} "
            f"| {_cell(row.get('p90_ms'), '.4f')} | {_cell(row.get('gb_per_s'), '.0f')} "
            f"| {_cell(row.get('speedup_vs_ref'), '.2f')} |"
        )
    lines += ["", *[f"- {n}" for n in r.get("notes", [])], ""]
    return lines


def _bench_section(path: Path) -> list[str]:
    """One ``omsf2 bench`` scenario (see bench/bench_scenarios.py): its table, ceilings and recommendation."""
    r = json.loads(path.read_text())
    fp = r["fingerprint"]
    lines = [f"## bench {r['scenario']} ({path.name})", "", f"{r['about']}.", ""]
    lines += [f"Machine: {fp['cpu']}, {fp['cores']} cores, ISA {', '.join(fp['isa'])}, {fp['threads']} threads; "
              f"{r['date']}; load average {r['load_average'][0]:.1f} at the end of the run.", ""]  # fmt: skip
    lines += ["Commands: " + "; ".join(f"`{s['command']}` ({s['wall_s']:.0f} s)" for s in r["steps"]), ""]
    from omsf2.bench.report import OVER_CEILING, Row, ceilings_summary, core_lines, efficiency_text

    ceil = ", ".join(f"{k} {v['gmacs']:.1f} GMAC/s ({v['library']})" for k, v in r["ceilings"].items())
    lines += [f"Ceilings measured in the same rounds: {ceil}", ""]
    if any("peak_gmacs" in v for v in r["ceilings"].values()):
        lines += [f"Beside the estimated peak: {ceilings_summary(r)}", ""]
    lines += [
        "| backend | batch | size | status | p50 ms | p90 ms | p99 ms | img/s | x torch | efficiency | accuracy "
        "| agreement | note |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in r["rows"]:
        status = row["status"] + (" (noisy)" if row.get("noisy") else "")
        lines.append(
            f"| {row['backend']} | {row['batch']} | {row['img_size']} | {status} | {_cell(row['p50_ms'], '.2f')} "
            f"| {_cell(row['p90_ms'], '.2f')} | {_cell(row['p99_ms'], '.2f')} | {_cell(row['throughput_ips'], '.1f')} "
            f"| {_cell(row['speedup_vs_torch'], '.2f')} | {efficiency_text(row['efficiency'], OVER_CEILING)} "
            f"| {_cell(row['accuracy'], '.2%')} | {_cell(row['agreement'], '.1%')} | {row['reason'] or ''} |"
        )
    fields = set(Row.__dataclass_fields__)
    lines += core_lines([Row(**{k: v for k, v in row.items() if k in fields}) for row in r["rows"]])
    lines += [""] + [f"- recommended at batch {c['batch']}, {c['img_size']} px: **{c['backend']}** ({c['why']})"
                     for c in r["recommendation"]]  # fmt: skip
    png = path.with_suffix(".png")
    if png.is_file():
        lines += ["", f"![latency]({png.name})"]
    lines += ["", *[f"- {n}" for n in r.get("notes", [])], ""]
    return lines


def _profile_section(path: Path) -> list[str]:
    """Top op types by time per artifact (bench/profile_cpu.py)."""
    r = json.loads(path.read_text())
    lines = [f"## profile {r['name']} ({path.name})", "", f"`{r['command']}`; {r['date']}.", ""]
    for runtime, key in (("onnxruntime", "time_share"), ("openvino", "time_share")):
        for f, p in r[runtime].items():
            top = ", ".join(f"{k} {v:.0%}" for k, v in list(p[key].items())[:6])
            lines.append(f"- {runtime} {f}: {p['ms_per_run']:.1f} ms; {top}")
    lines.append("")
    return lines
