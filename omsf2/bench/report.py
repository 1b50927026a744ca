"""The bench's rows, the recommendation, and the files it writes: results.json, .csv and .md.

A row is one backend x batch x image size. Skipped and failed backends are rows too, with their
reason, so the table always says what did not run and why. The recommendation is per (batch, size):
the fastest backend whose accuracy loss is within the export gate, never INT8 by assumption.
An efficiency over 1 is kept as a number in results.json but printed as words in the tables
(:data:`OVER_CEILING`, :data:`OVER_PEAK`): it measures the denominator, not the backend.
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
    "efficiency_own", "efficiency_peak", "accuracy", "agreement", "accuracy_drop", "accuracy_from", "noisy",
    "round_spread", "rss_mb", "rss_load_mb", "gpu_mem_mb", "gpu_compute_ms", "load_s", "macs_per_image", "note",
    "core_p50_ms", "core_ratio",
)  # fmt: skip
# 2: per-round ceiling spread, the estimated peak beside each ceiling, efficiency_peak.
SCHEMA_VERSION = 2
# What the tables print for an efficiency over 1. Over the ceiling: the model's kernels outran every
# library's GEMM, so the ceiling underestimates the CPU. Over the peak: the estimate's clock or MAC/cycle
# is low (omsf2.bench.peak), or the runtime does fewer multiplies than counted (Winograd convolutions).
OVER_CEILING = ">1 (ceiling low)"
OVER_PEAK = ">1 (peak low)"


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
    efficiency_peak: float | None = None
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
    core_p50_ms: float | None = None
    core_ratio: float | None = None

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


# results.csv's efficiency columns and the words each prints above 1.
_OVER = {"efficiency": OVER_CEILING, "efficiency_own": OVER_CEILING, "efficiency_peak": OVER_PEAK}


def efficiency_text(v: float | None, over: str, fmt: str = ".0%") -> str:
    """An efficiency as the tables print it: ``fmt`` up to 1, ``over`` above 1, empty when unknown."""
    if v is None or not math.isfinite(v):
        return ""
    return over if v > 1.0 else format(v, fmt)


def to_csv(rows: list[Row]) -> str:
    """The rows as CSV with a header of :data:`COLUMNS` (an efficiency over 1 as :data:`OVER_CEILING` / ``PEAK``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        d = r.to_dict()
        d.update({k: efficiency_text(d[k], over, "") for k, over in _OVER.items() if d[k] is not None})
        w.writerow({k: "" if v is None else v for k, v in d.items()})
    return buf.getvalue()


def _f(v: Any, fmt: str, scale: float = 1.0) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v * scale, fmt)


def table_cells(r: Row) -> list[str]:
    """The cells one row shows in the terminal and Markdown tables (see :data:`TABLE_HEADER`)."""
    status = r.status + (" (noisy)" if r.noisy else "")
    return [
        r.backend, str(r.batch), str(r.img_size), status, _f(r.p50_ms, ".2f"), _f(r.p90_ms, ".2f"),
        _f(r.p99_ms, ".2f"), _f(r.throughput_ips, ".1f"), _f(r.speedup_vs_torch, ".2f"),
        efficiency_text(r.efficiency, OVER_CEILING), efficiency_text(r.efficiency_peak, OVER_PEAK),
        _f(r.accuracy, ".2%"), _f(r.agreement, ".1%"), _f(r.rss_load_mb, "+.0f"), r.reason or r.note or "",
    ]  # fmt: skip


TABLE_HEADER = (
    "backend", "batch", "size", "status", "p50 ms", "p90 ms", "p99 ms", "img/s", "x torch", "eff.", "eff. peak",
    "accuracy", "agree", "+RSS MB", "note",
)  # fmt: skip
# Columns of TABLE_HEADER aligned left (text); the others are numbers, aligned right.
TABLE_LEFT = frozenset({"backend", "status", "note"})


def efficiency_notes(rows: list[Row]) -> list[str]:
    """The record's notes on rows whose efficiency is over 1 against the ceiling or the estimated peak."""
    notes = []
    for attr, over, why in (
        ("efficiency", OVER_CEILING, "the model's kernels outran the best library GEMM measured in the same rounds, "
         "so that ceiling underestimates this CPU"),
        ("efficiency_peak", OVER_PEAK, "the peak estimate is wrong (the clock under load is above the nominal one, "
         "or the table's MAC/cycle is low; see ceilings' peak) or the runtime does fewer multiplies than the "
         "model's MACs count (Winograd convolutions)"),
    ):  # fmt: skip
        over_1 = [f"{r.backend} batch {r.batch} {r.img_size} px: {v:.2f}" for r in rows if (v := getattr(r, attr))
                  and math.isfinite(v) and v > 1.0]  # fmt: skip
        if over_1:
            notes.append(f"{attr} over 1 ({'; '.join(over_1)}): {why}; the tables print '{over}'")
    return notes


def ceilings_rows(record: dict[str, Any]) -> list[list[str]]:
    """Per precision: measured ceiling (median, min-max over rounds, spread), library, estimated peak, its basis."""
    out = []
    for key, c in record["ceilings"].items():
        r, pk = c.get("rounds") or {}, c.get("peak") or {}
        spread = f"{r['min']:.0f}-{r['max']:.0f} ({r['spread']:.0%}, {r['n']} rounds)" if r else ""
        basis = (f"{pk['isa']}: {pk['mac_per_cycle_per_core']:.4g} MAC/cycle x {pk['cores']} cores x "
                 f"{pk['mhz']:.0f} MHz nominal") if pk else "no estimate"  # fmt: skip
        of_peak = efficiency_text(c.get("of_peak"), OVER_PEAK)
        out.append([key, f"{c['gmacs']:.1f}", spread, c["library"], _f(c.get("peak_gmacs"), ".1f"), of_peak, basis])
    return out


CEILINGS_HEADER = (
    "ceiling",
    "GMAC/s",
    "rounds min-max (spread)",
    "best library",
    "peak GMAC/s",
    "of peak",
    "peak from",
)


def ceilings_summary(record: dict[str, Any]) -> str:
    """One line for the terminal: each measured ceiling (median, range over rounds) beside its estimated peak."""
    parts = []
    for key, c in record["ceilings"].items():
        r = c.get("rounds")
        text = f"{key} {c['gmacs']:.1f} GMAC/s" + (f" (rounds {r['min']:.0f}-{r['max']:.0f})" if r else "")
        if c.get("peak_gmacs"):
            of = c["gmacs"] / c["peak_gmacs"]
            text += f" vs estimated peak {c['peak_gmacs']:.1f} " + (
                "(exceeded: the estimate is low)" if of > 1 else f"({of:.0%} of it)"
            )
        else:
            text += ", no peak estimate"
        parts.append(text)
    return "; ".join(parts)


def to_markdown(record: dict[str, Any], rows: list[Row]) -> str:
    """results.md: machine, ceilings beside the estimated peak, the table, the recommendation and the notes."""
    fp = record["fingerprint"]
    lines = [
        f"# omsf2 bench: {record['source']}",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {fp['cpu']}, {fp['cores']} cores, ISA {', '.join(fp['isa']) or 'unknown'}, "
        f"{fp['threads']} threads{', GPU ' + fp['gpu']['name'] if fp.get('gpu') else ''}; {record['date']}.",
        "",
        "Ceilings (the best library's GEMM, measured in the same rounds) beside the silicon's estimated peak; "
        "eff. = multiply-adds / (p50 x best ceiling), eff. peak = against the estimated peak of the row's precision:",
        "",
        "| " + " | ".join(CEILINGS_HEADER) + " |",
        "|---|---:|---:|---|---:|---:|---|",
        *["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in ceilings_rows(record)],
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join("---" if h in TABLE_LEFT else "---:" for h in TABLE_HEADER) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in table_cells(r)) + " |" for r in rows]
    lines += core_lines(rows)
    lines += ["", "Recommendation:", ""]
    lines += [
        f"- batch {rec['batch']}, {rec['img_size']} px: **{rec['backend']}** ({rec['p50_ms']:.2f} ms p50"
        + (f", {rec['speedup_vs_torch']:.2f}x torch" if rec.get("speedup_vs_torch") else "")
        + f"): {rec['why']}"
        for rec in record["recommendation"]
    ] or ["- none: no backend ran with accuracy evidence"]
    lines += ["", *[f"- {n}" for n in record["notes"]], ""]
    return "\n".join(lines)


#: ``--check-core``: a row and an independently opened Predictor.run_batch may differ by this share at p50.
CORE_TOLERANCE = 0.05


def core_lines(rows: list[Row]) -> list[str]:
    """results.md's ``--check-core`` table: each runtime row beside Predictor.run_batch timed in the same rounds."""
    checked = [r for r in rows if r.core_ratio is not None]
    if not checked:
        return []
    lines = [
        "",
        "The bench's row beside `Predictor.from_bundle(...).run_batch` opened on its own and timed in the same "
        "rounds, right after the row (--check-core; ratio: the median over rounds of each round's p50 ratio, "
        f"twin / row; they agree when it is within {CORE_TOLERANCE:.0%} of 1):",
        "",
        "| backend | batch | size | row p50 ms | run_batch p50 ms | ratio | agree |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in checked:
        ok = abs((r.core_ratio or 0.0) - 1.0) <= CORE_TOLERANCE
        lines.append(
            f"| {r.backend} | {r.batch} | {r.img_size} | {_f(r.p50_ms, '.2f')} | {_f(r.core_p50_ms, '.2f')} "
            f"| {_f(r.core_ratio, '.3f')} | {'yes' if ok else 'NO'} |"
        )
    return lines


def write_results(folder: Path, record: dict[str, Any], rows: list[Row]) -> list[Path]:
    """Write results.json, results.csv and results.md into ``folder``; returns their paths."""
    from omsf2.fileio import write_json

    paths = [write_json(folder / "results.json", record)]
    for name, text in (("results.csv", to_csv(rows)), ("results.md", to_markdown(record, rows))):
        (folder / name).write_text(text)
        paths.append(folder / name)
    return paths
