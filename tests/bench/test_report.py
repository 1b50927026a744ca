"""The bench's tables: an efficiency over 1 is printed as a low ceiling (or peak), never as a figure."""

from __future__ import annotations

import csv
import io

from omsf2.bench.report import (
    OVER_CEILING,
    OVER_PEAK,
    TABLE_HEADER,
    Row,
    ceilings_summary,
    efficiency_notes,
    efficiency_text,
    table_cells,
    to_csv,
    to_markdown,
)

RECORD = {
    "source": "export",
    "command": "omsf2 bench export",
    "date": "2026-12-06 12:00 UTC",
    "fingerprint": {"cpu": "AMD EPYC", "cores": 2, "isa": ["AVX2"], "threads": 2, "gpu": None},
    "ceilings": {
        "gemm-int8": {
            "gmacs": 366.6,
            "library": "onnxruntime MatMulInteger u8s8 784x2304x256",
            "rounds": {"n": 20, "min": 300.0, "median": 366.6, "max": 417.0, "spread": 0.319},
            "peak_gmacs": 332.3,
            "of_peak": 366.6 / 332.3,
            "peak": {
                "isa": "AVX512-VNNI (Zen 4: 2 x 256-bit)",
                "mac_per_cycle_per_core": 64,
                "cores": 2,
                "mhz": 2596.1,
            },
        },
        "gemm-fp32": {"gmacs": 80.0, "library": "mm", "peak_gmacs": None, "peak": None},
    },
    "recommendation": [],
    "notes": [],
}


def _rows() -> list[Row]:
    return [
        Row("openvino-int8", 1, 448, precision="int8", p50_ms=32.2, efficiency=1.0123, efficiency_own=1.0123,
            efficiency_peak=1.1),
        Row("ort", 1, 448, p50_ms=131.3, efficiency=0.2435, efficiency_own=0.98, efficiency_peak=0.72),
        Row("tensorrt", 1, 448, status="skipped", reason="no GPU"),
    ]  # fmt: skip


def test_efficiency_text():
    assert efficiency_text(0.987, OVER_CEILING) == "99%"
    assert efficiency_text(1.0, OVER_CEILING) == "100%"
    assert efficiency_text(1.0001, OVER_CEILING) == ">1 (ceiling low)"
    assert efficiency_text(2.3, OVER_PEAK) == ">1 (peak low)"
    assert efficiency_text(None, OVER_CEILING) == efficiency_text(float("nan"), OVER_CEILING) == ""


def test_terminal_and_markdown_tables_print_words_over_1():
    over, ok, skipped = (dict(zip(TABLE_HEADER, table_cells(r), strict=True)) for r in _rows())
    assert over["eff."] == ">1 (ceiling low)" and over["eff. peak"] == ">1 (peak low)"
    assert ok["eff."] == "24%" and ok["eff. peak"] == "72%"
    assert skipped["eff."] == skipped["eff. peak"] == "" and skipped["note"] == "no GPU"
    md = to_markdown(RECORD, _rows())
    assert "| openvino-int8 | 1 | 448 | ok | 32.20 |" in md and ">1 (ceiling low) | >1 (peak low) |" in md
    assert "101%" not in md
    # The ceilings beside the estimated peak, with the spread over rounds.
    assert (
        "| gemm-int8 | 366.6 | 300-417 (32%, 20 rounds) | onnxruntime MatMulInteger u8s8 784x2304x256 | 332.3 "
        "| >1 (peak low) | AVX512-VNNI (Zen 4: 2 x 256-bit): 64 MAC/cycle x 2 cores x 2596 MHz nominal |"
    ) in md
    assert "| gemm-fp32 | 80.0 |  | mm |  |  | no estimate |" in md


def test_csv_keeps_numbers_up_to_1_and_words_above():
    rows = list(csv.DictReader(io.StringIO(to_csv(_rows()))))
    assert rows[0]["efficiency"] == rows[0]["efficiency_own"] == ">1 (ceiling low)"
    assert rows[0]["efficiency_peak"] == ">1 (peak low)"
    assert float(rows[1]["efficiency"]) == 0.2435 and float(rows[1]["efficiency_peak"]) == 0.72
    assert rows[2]["efficiency"] == rows[2]["efficiency_peak"] == ""


def test_record_notes_name_the_rows_over_1():
    ceiling, peak = efficiency_notes(_rows())
    assert ceiling.startswith("efficiency over 1 (openvino-int8 batch 1 448 px: 1.01): the model's kernels outran")
    assert ceiling.endswith("the tables print '>1 (ceiling low)'")
    assert peak.startswith("efficiency_peak over 1 (openvino-int8 batch 1 448 px: 1.10): the peak estimate is wrong")
    assert efficiency_notes(_rows()[1:]) == []


def test_terminal_summary_puts_ceiling_beside_peak():
    line = ceilings_summary(RECORD)
    fp32 = {**RECORD["ceilings"]["gemm-fp32"], "peak_gmacs": 160.0}
    assert (
        ceilings_summary({"ceilings": {"gemm-fp32": fp32}})
        == "gemm-fp32 80.0 GMAC/s vs estimated peak 160.0 (50% of it)"
    )
    assert line == (
        "gemm-int8 366.6 GMAC/s (rounds 300-417) vs estimated peak 332.3 (exceeded: the estimate is low); "
        "gemm-fp32 80.0 GMAC/s, no peak estimate"
    )
