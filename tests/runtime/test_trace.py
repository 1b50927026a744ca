"""The trace as a library: links from a report, an older chain's gaps, and a bundle that holds no trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omsf2.runtime.bundle import BundleError
from omsf2.runtime.trace import NOT_RECORDED, VERIFIED, export_links, trace_bundle


def test_an_old_checkpoint_leaves_gaps_not_failures(tiny_bundle: Path) -> None:
    """The checkpoint has no data record and the export no INT8: those links read "not recorded"."""
    report = trace_bundle(tiny_bundle)
    assert report.ok, report.errors
    text = "\n".join(report.lines)
    assert "checkpoint: training data - (not recorded) -> checkpoint " in text
    assert "calibration set:" not in text and "engine: none built in this export" in text
    assert report.counts[NOT_RECORDED] == 1 and report.counts[VERIFIED] >= 3


def test_a_bundle_without_a_trace_is_one_line(tiny_bundle: Path) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    del manifest["trace"]
    (tiny_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match=r"holds no trace \(made before omsf2 recorded one\); bundle the export again"
    ):
        trace_bundle(tiny_bundle)


def test_links_follow_the_chain_and_engines_name_their_source(tmp_path: Path) -> None:
    report = {
        "checkpoint": {"path": "ck.pt", "resolved": str(tmp_path / "ck.pt"), "sha256": "c" * 64},
        "artifacts": {
            "onnx": {"file": "model.onnx", "sha256": "a" * 64, "built_from": "checkpoint"},
            "onnx_int8": {"file": "model.int8.onnx", "sha256": "b" * 64, "built_from": "onnx"},
            "engine_int8": {"file": "model.int8.engine", "sha256": "e" * 64, "built_from": "onnx_int8"},
        },
        "calibration": {"data_dir": "calib", "count": 2, "sha256": "d" * 64},  # before the lineage fields
        "int8": {"file": "model.int8.onnx", "passed": True},
    }
    links = export_links(report, tmp_path / "export")
    assert [link["step"] for link in links] == [
        "checkpoint",
        "ONNX",
        "calibration set",
        "quantized ONNX",
        "gate",
        "engine",
    ]
    engine = links[-1]
    assert engine["input"][0]["what"] == "model.int8.onnx" and engine["output"][0]["sha256"] == "e" * 64
    calib = links[2]
    assert calib["input"][0]["sha256"] is None and calib["output"][0]["sha256"] is None  # not recorded then
    gate = links[4]
    assert gate["output"][0]["verdicts"] == {"int8": True} and gate["input"][0]["sha256"] is None
