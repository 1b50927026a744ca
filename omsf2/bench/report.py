"""The bench's rows, the recommendation, and the files it writes: results.json, .csv and .md.

A row is one backend x batch x image size. Skipped and failed backends are rows too, with their
reason, so the table always says what did not run and why. The recommendation is per (batch, size):
the fastest backend whose accuracy loss is within the export gate, never INT8 by assumption.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path
from typing import Any

# results.json / results.csv columns, in order; the schema tests pin the first ones.
COLUMNS: tuple[str, ...] = (
    "backend", "batch", "img_size", "status", "reason", "precision", "artifact", "p50_ms", "mean_ms", "p90_ms",
    "p99_ms", "min_ms", "max_ms", "std_ms", "n", "throughput_ips", "speedup_vs_torch", "efficiency",
    "efficiency_own", "accuracy", "agreement", "accuracy_drop", "accuracy_from", "noisy", "round_spread",
    "rss_mb", "rss_load_mb", "gpu_mem_mb", "gpu_compute_ms", "load_s", "macs_per_image", "note",
)  # fmt: skip
SCHEMA_VERSION = 1


@dataclasses.dataclass
class Row:
    """One backend at one batch and size (a mutable record filled as measurements arrive)."""

    backend: str
    batch: int
    img_size: int
    status: str = "ok"
    reason: str | None = None
    precision: str = "fp32"
    artifact: str | None = None
    p50_ms: float | None = None
    mean_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    n: int | None = None
    throughput_ips: float | None = None
    speedup_vs_torch: float | None = None
    efficiency: float | None = None
    efficiency_own: float | None = None
    accuracy: float | None = None
    agreement: float | None = None
    accuracy_drop: float | None = None
    accuracy_from: str | None = None
    noisy: bool | None = None
    round_spread: float | None = None
    rss_mb: float | None = None
    rss_load_mb: float | None = None
    gpu_mem_mb: float | None = None
    gpu_compute_ms: float | None = None
    load_s: float | None = None
    macs_per_image: int | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON types, columns in :data:`COLUMNS` order; NaN becomes None."""
        d = dataclasses.asdict(self)
        return {k: (None if isinstance(d[k], float) and not math.isfinite(d[k]) else d[k]) for k in COLUMNS}


def recommend(rows: list[Row], max_drop: float) -> list[dict[str, Any]]:
    """Per (batch, size): the fastest ok row whose accuracy loss is within ``max_drop`` points.

    A row qualifies when its measured ``accuracy_drop`` (points vs PyTorch FP32 on --eval-data, or
    the export gate's figure) is at most ``max_drop``; an FP32 row without accuracy figures
    qualifies (the export checked its parity with PyTorch); an INT8 or BF16 row without any does not.
    """
    out = []
    for key in dict.fromkeys((r.batch, r.img_size) for r in rows):
        ok = [r for r in rows if (r.batch, r.img_size) == key and r.status == "ok" and r.p50_ms is not None]
        eligible = [
            r
            for r in ok
            if (r.accuracy_drop is not None and r.accuracy_drop <= max_drop)
            or (r.accuracy_drop is None and r.precision == "fp32")
        ]
        if not eligible:
            continue
        best = min(eligible, key=lambda r: r.p50_ms or math.inf)
        fastest = min(ok, key=lambda r: r.p50_ms or math.inf)
        why = f"fastest with accuracy loss <= {max_drop:g} pt"
        if fastest is not best:
            why += f" ({fastest.backend} is faster but {_loss(fastest)})"
        out.append(
            {"batch": key[0], "img_size": key[1], "backend": best.backend, "p50_ms": best.p50_ms,
             "speedup_vs_torch": best.speedup_vs_torch, "accuracy_drop": best.accuracy_drop, "why": why}
        )  # fmt: skip
    return out


def _loss(r: Row) -> str:
    return "has no accuracy evidence" if r.accuracy_drop is None else f"loses {r.accuracy_drop:.2f} pt"


def to_csv(rows: list[Row]) -> str:
    """The rows as CSV with a header of :data:`COLUMNS`."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in r.to_dict().items()})
    return buf.getvalue()


def _f(v: Any, fmt: str, scale: float = 1.0) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v * scale, fmt)


def table_cells(r: Row) -> list[str]:
    """The cells one row shows in the terminal and Markdown tables (see :data:`TABLE_HEADER`)."""
    status = r.status + (" (noisy)" if r.noisy else "")
    return [
        r.backend, str(r.batch), str(r.img_size), status, _f(r.p50_ms, ".2f"), _f(r.p90_ms, ".2f"),
        _f(r.p99_ms, ".2f"), _f(r.throughput_ips, ".1f"), _f(r.speedup_vs_torch, ".2f"),
        _f(r.efficiency, ".0%"), _f(r.accuracy, ".2%"), _f(r.agreement, ".1%"), _f(r.rss_load_mb, "+.0f"),
        r.reason or r.note or "",
    ]  # fmt: skip


TABLE_HEADER = (
    "backend", "batch", "size", "status", "p50 ms", "p90 ms", "p99 ms", "img/s", "x torch", "eff.", "accuracy",
    "agree", "+RSS MB", "note",
)  # fmt: skip


def to_markdown(record: dict[str, Any], rows: list[Row]) -> str:
    """results.md: machine, ceilings, the table, the recommendation and the notes."""
    fp = record["fingerprint"]
    ceil = record["ceilings"]
    lines = [
        f"# omsf2 bench: {record['source']}",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {fp['cpu']}, {fp['cores']} cores, ISA {', '.join(fp['isa']) or 'unknown'}, "
        f"{fp['threads']} threads{', GPU ' + fp['gpu']['name'] if fp.get('gpu') else ''}; {record['date']}.  ",
        "Ceilings (measured in the same rounds): "
        + ", ".join(f"{k} {v['gmacs']:.1f} GMAC/s ({v['library']})" for k, v in ceil.items()),
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join("---" if i in (0, 3, 13) else "---:" for i in range(len(TABLE_HEADER))) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in table_cells(r)) + " |" for r in rows]
    lines += ["", "Recommendation:", ""]
    lines += [
        f"- batch {rec['batch']}, {rec['img_size']} px: **{rec['backend']}** ({rec['p50_ms']:.2f} ms p50"
        + (f", {rec['speedup_vs_torch']:.2f}x torch" if rec.get("speedup_vs_torch") else "")
        + f"): {rec['why']}"
        for rec in record["recommendation"]
    ] or ["- none: no backend ran with accuracy evidence"]
    lines += ["", *[f"- {n}" for n in record["notes"]], ""]
    return "\n".join(lines)


def write_results(folder: Path, record: dict[str, Any], rows: list[Row]) -> list[Path]:
    """Write results.json, results.csv and results.md into ``folder``; returns their paths."""
    from omsf2.fileio import write_json

    paths = [write_json(folder / "results.json", record)]
    for name, text in (("results.csv", to_csv(rows)), ("results.md", to_markdown(record, rows))):
        (folder / name).write_text(text)
        paths.append(folder / name)
    return paths
