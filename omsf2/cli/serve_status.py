"""``omsf2 serve dicom --status SPOOL``: what a node's spool holds, and its INT8 monitor's figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from omsf2.cli.errors import console


def print_status(path: Path) -> None:
    """Print the spool's state and, where a node ran with ``--monitor``, the monitor's last figures.

    Raises:
        ValueError: ``path`` is not a spool, or its monitor figures cannot be read.
    """
    from omsf2.serve.int8_monitor import read_status

    _print_spool(path)
    figures = read_status(path)
    if figures is not None:
        _print_monitor(figures)


def _print_spool(path: Path) -> None:
    from omsf2.serve.dicom_spool import spool_status

    st = spool_status(path)
    table = Table(title=f"spool {escape(st.root)}" + (" (in use by a running node)" if st.locked else ""))
    table.add_column("state")
    table.add_column("instances", justify="right")
    table.add_row("received, not yet predicted", str(st.incoming))
    table.add_row("predicted, waiting for delivery", str(st.pending))
    table.add_row("delivery failing (retry budget spent, still retried)", str(len(st.failed)))
    table.add_row("rejected (not readable)", str(len(st.rejected)))
    table.add_row("declined (not applicable under the bundle that saw them)", str(len(st.declined)))
    table.add_row("kept for --reanalyse", str(st.sources))
    table.add_row("delivered", str(st.delivered))
    table.add_row("bytes held (received, waiting, rejected)", str(st.bytes_used))
    console.print(table)
    for f in st.failed:
        console.print(
            f"failed {f['sop_instance_uid']}: {f['attempts']} attempts so far, "
            f"last error: {escape(str(f['last_error']))}",
            highlight=False,
            soft_wrap=True,
        )
    for r in st.rejected:
        console.print(f"rejected {r['sop_instance_uid']}: {escape(str(r['reason']))}", highlight=False, soft_wrap=True)
    for r in st.declined:
        console.print(f"declined {r['sop_instance_uid']}: {escape(str(r['reason']))}", highlight=False, soft_wrap=True)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _print_monitor(m: dict[str, Any]) -> None:
    b = m["bound"]
    title = (f"INT8 monitor ({escape(str(m['deployed']))} vs FP32, {100 * m['fraction']:g} % sampled, last "
             f"{m['window']} per group, updated {m['updated']})")  # fmt: skip
    table = Table(title=title)
    table.add_column("group")
    for col in ("n", "agreement %", f"{100 * m['confidence']:g} % CI", "bound %", "mean gap", "max gap"):
        table.add_column(col, justify="right")
    table.add_column("state")
    for g in m["groups"]:
        state = f"DRIFT since {g['drift_since']}" if g["drift"] else "ok" if g["n"] >= m["min_samples"] else "too few"
        table.add_row(escape(f"{g['attribute']}={g['group']}"), str(g["n"]), _pct(g["agreement"]),
                      f"{_pct(g['ci'][0])}-{_pct(g['ci'][1])}", _pct(g["bound"]), f"{g['mean_gap']:.4f}",
                      f"{g['max_gap']:.4f}", state)  # fmt: skip
    console.print(table)
    console.print(
        f"sampled {m['offered']}, checked {m['checked']}, dropped (queue full) {m['dropped']}, failed {m['failed']}; "
        f"bounds: all images {_pct(b['overall'])} %, each group {_pct(b['group'])} % ({escape(b['source'])})",
        highlight=False,
        soft_wrap=True,
    )
