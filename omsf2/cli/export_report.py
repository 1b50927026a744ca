"""What `omsf2 export` (and the demo) print from an export's report: parity, sensitivity and each INT8 gate."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from omsf2.cli.errors import console


def print_export(r: dict[str, Any]) -> None:
    """Print an export's ``report.json`` summary: ONNX parity, the INT8 sensitivity top ten, each flavour's gate."""
    p = r.get("onnx_parity", {})
    console.print(
        f"ONNX vs PyTorch on {p.get('n')} {p.get('data')}: max |logits error| {p.get('max_abs_err', 0):.2e}, "
        f"top-1 agreement {100 * p.get('top1_agreement', 0):.1f}%"
    )
    if r.get("sensitivity"):
        table = Table(title="INT8 sensitivity (only this group quantized, on calibration images)")
        for col in ("rank", "group", "kind", "agreement lost", "KL"):
            table.add_column(col)
        for row in r["sensitivity"][:10]:
            table.add_row(str(row["rank"]), escape(row["group"]), row["kind"], f"{100 * row['agreement_lost']:.1f}%",
                          f"{row['kl']:.2e}")  # fmt: skip
        console.print(table)
    for key in ("int8", "int8_cpu"):
        if key in r:
            q = r[key]
            lo, hi = q["accuracy_drop_ci95"]
            a_lo, a_hi = q["top1_agreement_ci95"]
            path = q["kernel_path"]
            where = path if isinstance(path, str) else f"onnxruntime integer kernels, {path['isa']}"
            if "kernels_vs_qdq_float_agreement" in q:
                where += f", {100 * q['kernels_vs_qdq_float_agreement']:.1f}% as the Q/DQ graph computes"
            console.print(
                f"{q['file']} ({q['method']}, {q['calib_count']} calib, {q['eval_count']} eval, {where}): "
                f"{'[green]passed[/]' if q['passed'] else '[red]failed[/]'}; accuracy {100 * q['int8_accuracy']:.2f}% "
                f"vs FP32 {100 * q['fp32_accuracy']:.2f}% (drop {q['accuracy_drop']:.2f} pts, 95% CI [{lo:.2f}, "
                f"{hi:.2f}], max {q['max_drop']:g}), top-1 agreement {100 * q['top1_agreement']:.1f}% (95% CI "
                f"[{100 * a_lo:.1f}, {100 * a_hi:.1f}], min {100 * q['min_agreement']:g}%)"
                + (f"; kept in float: {escape(', '.join(q['float_groups']))}" if q.get("float_groups") else "")
                + ("" if q["passed"] else f"; not written ({escape('; '.join(q.get('failed_because') or []))})")
            )
