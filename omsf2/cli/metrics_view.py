"""The metrics table the training and evaluation commands print (one place for its layout)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from omsf2.cli.errors import console


def print_metrics(m: dict[str, Any], title: str) -> None:
    """Print accuracy, macro-F1, QWK, AUC, per-class recall and the confusion matrix of ``m``."""
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("n", "accuracy", "macro_f1", "qwk", "macro_auc"):
        if m.get(key) is not None:
            v = m[key]
            table.add_row(key, f"{v:.4f}" if isinstance(v, float) else str(v))
    for cls, r in m.get("per_class_recall", {}).items():
        table.add_row(escape(f"recall[{cls}]"), f"{r:.4f}")
    console.print(table)
    if "confusion" in m:
        console.print("confusion (rows true, columns predicted): " + str(m["confusion"]))
