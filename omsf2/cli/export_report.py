"""What `omsf2 export` (and the demo) print from an export's report: parity, sensitivity and each gate.

Each gate (an INT8 flavour, a TensorRT engine) is one line: verdict, the gate part's figures with
their intervals, the search part's figures beside them, the lowest-agreement subgroup per
attribute and the groups too small to judge; a ``caution`` line follows when the gate cannot mean
much (:func:`omsf2.export.gate.caveats`), and a table lists every subgroup.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from omsf2.cli.errors import console


def _sensitivity(r: dict[str, Any]) -> None:
    table = Table(title="INT8 sensitivity (only this group quantized, on calibration images)")
    for col in ("rank", "group", "kind", "agreement lost", "KL"):
        table.add_column(col)
    for row in r["sensitivity"][:10]:
        table.add_row(str(row["rank"]), escape(row["group"]), row["kind"], f"{100 * row['agreement_lost']:.1f}%",
                      f"{row['kl']:.2e}")  # fmt: skip
    console.print(table)


def _figures(q: dict[str, Any], accuracy_key: str) -> str:
    lo, hi = q["accuracy_drop_ci95"]
    a_lo, a_hi = q["top1_agreement_ci95"]
    return (
        f"accuracy {100 * q[accuracy_key]:.2f}% vs FP32 {100 * q['fp32_accuracy']:.2f}% (drop {q['accuracy_drop']:.2f} "
        f"pts, 95% CI [{lo:.2f}, {hi:.2f}], max {q['max_drop']:g}), top-1 agreement {100 * q['top1_agreement']:.1f}% "
        f"(95% CI [{100 * a_lo:.1f}, {100 * a_hi:.1f}], min {100 * q['min_agreement']:g}%)"
    )


def _groups(q: dict[str, Any]) -> str:
    from omsf2.export.subgroups import lowest_groups

    table = q.get("groups") or {}
    parts = []
    if low := lowest_groups(table):
        parts.append("lowest group " + ", ".join(low))
    if q.get("small_groups"):
        parts.append("too small to judge: " + ", ".join(q["small_groups"]))
    return "; " + "; ".join(parts) if parts else ""


def _group_table(title: str, q: dict[str, Any]) -> None:
    groups = q.get("groups") or {}
    if len(groups) < 2:  # class only: the line names its lowest group, report.json holds every one
        return
    table = Table(title=title)
    for col in ("attribute", "group", "n", "FP32 acc", "acc", "agreement", "note"):
        table.add_column(col, justify="right" if col in ("n", "FP32 acc", "acc", "agreement") else "left")
    for attr, rows in groups.items():
        for r in rows:
            table.add_row(attr, escape(str(r["group"])), str(r["n"]), f"{100 * r['fp32_accuracy']:.1f}%",
                          f"{100 * r['accuracy']:.1f}%", f"{100 * r['top1_agreement']:.1f}%",
                          "" if r["judged"] else "too small to judge")  # fmt: skip
    console.print(table)


def _cautions(q: dict[str, Any]) -> None:
    for c in q.get("caveats") or []:
        console.print(f"  [yellow]caution[/]: {escape(c)}", highlight=False)


def _flavour(q: dict[str, Any]) -> None:
    path = q["kernel_path"]
    where = path if isinstance(path, str) else f"onnxruntime integer kernels, {path['isa']}"
    if "kernels_vs_qdq_float_agreement" in q:
        where += f", {100 * q['kernels_vs_qdq_float_agreement']:.1f}% as the Q/DQ graph computes"
    s = q.get("search") or {}
    searched = (
        f"; search part ({s['n']} images): drop {s['accuracy_drop']:.2f} pts, "
        f"agreement {100 * s['top1_agreement']:.1f}%"
        if s.get("n") and q.get("figures_on") == "gate part"
        else ""
    )
    console.print(
        f"{q['file']} ({q['method']}, {q['calib_count']} calib, {q['eval_count']} gate images, {where}): "
        f"{'[green]passed[/]' if q['passed'] else '[red]failed[/]'}; {_figures(q, 'int8_accuracy')}{searched}"
        + escape(_groups(q))
        + (f"; kept in float: {escape(', '.join(q['float_groups']))}" if q.get("float_groups") else "")
        + ("" if q["passed"] else f"; not written ({escape('; '.join(q.get('failed_because') or []))})"),
        highlight=False,
    )
    _cautions(q)
    _group_table(f"{q['file']}: gate per subgroup", q)


def _engine(e: dict[str, Any]) -> None:
    console.print(
        f"{e['engine']} ({e['precision']}, TensorRT {e['tensorrt_version']} on {e['gpu_name']}, {e['eval_count']} gate "
        f"images through Predictor.run_batch): {'[green]passed[/]' if e['passed'] else '[red]failed[/]'}; "
        f"{_figures(e, 'accuracy')}"
        + escape(_groups(e))
        + ("" if e["passed"] else f"; not written ({escape('; '.join(e.get('failed_because') or []))})"),
        highlight=False,
    )
    _cautions(e)
    _group_table(f"{e['engine']}: gate per subgroup", e)


def print_export(r: dict[str, Any]) -> None:
    """Print an export's ``report.json`` summary: ONNX parity, the sensitivity top ten, each INT8 and engine gate."""
    p = r.get("onnx_parity", {})
    console.print(
        f"ONNX vs PyTorch on {p.get('n')} {p.get('data')}: max |logits error| {p.get('max_abs_err', 0):.2e}, "
        f"top-1 agreement {100 * p.get('top1_agreement', 0):.1f}%"
    )
    if r.get("sensitivity"):
        _sensitivity(r)
    if gd := r.get("gate_data"):
        console.print(
            f"gate data: {escape(gd['source'])}; search part {gd['search']['n']} images "
            f"({gd['search']['patients']} patients), gate part {gd['gate']['n']} images ({gd['gate']['patients']} "
            f"patients); {escape(gd['patients_from'])}",
            highlight=False,
        )
    for key in ("int8", "int8_cpu"):
        if key in r:
            _flavour(r[key])
    for e in (r.get("engine_gate") or {}).values():
        _engine(e)
