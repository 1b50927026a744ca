"""GPU backends on a GPU machine (skipped here, with the reason): ort-cuda, ort-trt, tensorrt."""

from __future__ import annotations

import pytest

from omsf2.bench.run import BenchSpec, run_bench
from omsf2.bench.timing import RoundsPlan

PLAN = RoundsPlan(warmup_s=0, iters=3, rounds=3)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("backend", ["ort-cuda", "ort-trt"])
def test_onnxruntime_gpu_backends_agree_with_torch(bench_export, bench_phantoms, tmp_path, backend):
    res = run_bench(
        BenchSpec(str(bench_export), str(tmp_path / "o"), backends=("torch", backend), plan=PLAN,
                  eval_data=str(bench_phantoms / "test"), plot=False)
    )  # fmt: skip
    row = next(r for r in res.rows if r.backend == backend)
    assert row.status == "ok", row.reason
    assert row.p50_ms and row.p50_ms > 0
    assert row.agreement is not None and row.agreement >= 0.75


@pytest.mark.needs_trt
def test_tensorrt_engine_backend_times_host_and_gpu(bench_ckpt, tmp_path):
    from omsf2.export.targets import ExportFormat, ExportSpec, run_export

    export = tmp_path / "engine"
    run_export(ExportSpec(str(bench_ckpt), str(export), format=ExportFormat.ALL, batch=(1, 1, 4)))
    res = run_bench(BenchSpec(str(export), str(tmp_path / "o"), backends=("tensorrt",), plan=PLAN, plot=False))
    (row,) = res.rows
    assert row.status == "ok", row.reason
    assert row.gpu_compute_ms is not None and 0 < row.gpu_compute_ms <= row.p50_ms
