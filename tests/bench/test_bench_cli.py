from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omsf2.bench.report import COLUMNS
from omsf2.cli.app import app

runner = CliRunner()
FAST = ["--warmup-s", "0", "--iters", "3", "--rounds", "3", "--threads", "1"]


def _fails(args: list[str], out: Path, match: str) -> None:
    res = runner.invoke(app, ["bench", *args, "--out", str(out), *FAST])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert match in res.output
    assert "Traceback" not in res.output
    assert not out.exists() or not any(out.iterdir()), "nothing may be written to OUT on an error"


def test_unknown_backend(bench_export, tmp_path):
    _fails([str(bench_export), "--backends", "ort,fastest"], tmp_path / "o", "unknown backend fastest")


def test_batch_zero(bench_export, tmp_path):
    _fails([str(bench_export), "--batch", "1,0"], tmp_path / "o", "--batch takes comma-separated positive")


def test_image_size_not_exported(bench_export, tmp_path):
    _fails([str(bench_export), "--img-size", "96"], tmp_path / "o", "image size 96 was not exported")


def test_missing_source(tmp_path):
    _fails([str(tmp_path / "nowhere")], tmp_path / "o", "does not exist")


def test_empty_source_folder_and_file(tmp_path):
    (tmp_path / "empty").mkdir()
    _fails([str(tmp_path / "empty")], tmp_path / "o", "is an empty folder")
    (tmp_path / "empty.pt").write_bytes(b"")
    _fails([str(tmp_path / "empty.pt")], tmp_path / "o", "is an empty file")


def test_no_source_at_all(tmp_path):
    _fails([], tmp_path / "o", "missing SOURCE")


def test_report_hash_mismatch(bench_export, tmp_path):
    tampered = tmp_path / "export"
    shutil.copytree(bench_export, tampered)
    with (tampered / "model.int8-cpu.onnx").open("ab") as f:
        f.write(b"\0")
    out = tmp_path / "o"
    out.mkdir()
    _fails([str(tampered)], out, "model.int8-cpu.onnx does not match report.json (sha256 differs)")


def test_named_backend_that_cannot_run_is_an_error(bench_export, tmp_path):
    _fails([str(bench_export), "--backends", "ort,tensorrt"], tmp_path / "o", "backend tensorrt cannot run here")


def test_bench_writes_schema_and_table(bench_export, bench_phantoms, tmp_path):
    out = tmp_path / "res"
    args = [str(bench_export), "--backends", "torch,ort,ort-int8", "--batch", "1,2", "--no-plot"]
    args += ["--eval-data", str(bench_phantoms / "test")]
    res = runner.invoke(app, ["bench", *args, "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    assert "p50 ms" in res.output and "recommended at batch 1" in res.output
    record = json.loads((out / "results.json").read_text())
    for key in ("fingerprint", "isa", "ceilings", "rows", "recommendation", "command"):
        assert key in record
    assert set(record["ceilings"]) == {"gemm-fp32", "gemm-int8"}
    assert all(v["gmacs"] > 0 for v in record["ceilings"].values())
    rows = record["rows"]
    assert [(r["backend"], r["batch"]) for r in rows] == [
        ("torch", 1), ("ort", 1), ("ort-int8", 1), ("torch", 2), ("ort", 2), ("ort-int8", 2)
    ]  # fmt: skip
    for r in rows:
        assert list(r) == list(COLUMNS)
        assert r["status"] == "ok" and r["reason"] is None
        assert r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"] and r["p99_ms"] >= r["p90_ms"]
        assert r["throughput_ips"] == pytest.approx(r["batch"] * 1000 / r["p50_ms"])
        # Efficiency is against the faster of the two ceilings of the same rounds, so never above the one
        # of the row's own precision; no fixed upper bound: under load a ceiling GEMM can be slowed more
        # than a 64-px model, and the ratio then exceeds 1.
        assert 0 < r["efficiency"] <= r["efficiency_own"] * (1 + 1e-9)
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["agreement"] <= 1
        assert r["img_size"] == 64 and r["macs_per_image"] > 0
    assert {r["agreement"] for r in rows if r["backend"] in ("torch", "ort")} == {1.0}
    assert [r["speedup_vs_torch"] for r in rows if r["backend"] == "torch"] == [1.0, 1.0]
    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(COLUMNS) and len(table) == len(rows)
    md = (out / "results.md").read_text()
    assert "| ort-int8 | 1 | 64 |" in md and "Recommendation" in md
    assert not [p for p in out.iterdir() if p.name.startswith(".omsf2-bench-")]


def test_check_core_times_an_independent_predictor_beside_each_runtime_row(bench_export, tmp_path):
    """--check-core: each runtime row (here onnxruntime, its S8S8 file, OpenVINO INT8) gets the p50 of
    Predictor.from_bundle(...).run_batch opened on its own in the same rounds; torch, the baseline, none."""
    pytest.importorskip("openvino")
    out = tmp_path / "res"
    args = [str(bench_export), "--backends", "torch,ort,ort-int8-trt,openvino-int8", "--no-plot", "--check-core"]
    res = runner.invoke(app, ["bench", *args, "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    rows = {r["backend"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["torch"]["core_ratio"] is None
    for name in ("ort", "ort-int8-trt", "openvino-int8"):
        r = rows[name]
        assert r["core_p50_ms"] > 0 and r["core_ratio"] > 0  # paired per round: not recomputable from the p50s
    assert rows["ort-int8-trt"]["artifact"] == "model.int8.onnx"  # the TensorRT contract, through ort-int8
    assert "ort-int8-trt @ Predictor.run_batch" not in {r["backend"] for r in rows.values()}
    md = (out / "results.md").read_text()
    assert "Predictor.from_bundle(...).run_batch" in md and "| openvino-int8 | 1 | 64 |" in md
    assert "run_batch p50 ms" in res.output


def test_default_backends_list_skipped_ones_with_reasons(bench_export, tmp_path, monkeypatch):
    from omsf2.bench import runners

    # Keep the run small: pretend the slow-to-load backends are not installed.
    real = runners.unavailable_reason

    def fake(backend, *a):
        if backend.name in ("torch-compile", "openvino", "openvino-int8", "openvino-bf16", "ort-int8-trt", "torch"):
            return f"{backend.name} disabled in this test"
        return real(backend, *a)

    monkeypatch.setattr("omsf2.bench.run.unavailable_reason", fake)
    out = tmp_path / "res"
    res = runner.invoke(app, ["bench", str(bench_export), "--no-plot", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    rows = {r["backend"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["torch"]["status"] == "skipped" and rows["torch"]["reason"] == "torch disabled in this test"
    assert rows["ort"]["status"] == "ok" and rows["ort"]["speedup_vs_torch"] is None
    assert rows["tensorrt"]["status"] == "skipped" and rows["tensorrt"]["reason"]


def test_checkpoint_source_is_exported_into_out(bench_ckpt, tmp_path):
    out = tmp_path / "res"
    args = [str(bench_ckpt), "--backends", "torch,ort", "--img-size", "64,96", "--no-plot"]
    res = runner.invoke(app, ["bench", *args, "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    assert (out / "export-64" / "model.onnx").is_file() and (out / "export-96" / "report.json").is_file()
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted({r["img_size"] for r in rows}) == [64, 96]
    assert all(r["status"] == "ok" for r in rows)


def test_kernels_bench_runs_on_cpu_and_records(tmp_path):
    out = tmp_path / "k"
    res = runner.invoke(app, ["bench", "--kernels", "--device", "cpu", "--iters", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "kernels.json").read_text())
    assert record["device"] == "cpu"
    assert {r["backend"] for r in record["rows"]} >= {"ref", "direct pools (torch)"}
    assert all(r["status"] != "MISMATCH" for r in record["rows"])


def test_kernels_takes_no_source(bench_export, tmp_path):
    _fails([str(bench_export), "--kernels"], tmp_path / "o", "--kernels takes no SOURCE")
