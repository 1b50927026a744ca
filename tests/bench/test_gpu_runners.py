"""GPU backends on a GPU machine (skipped here, with the reason): torch(-compile)-cuda, ort-cuda, ort-trt, tensorrt."""

from __future__ import annotations

import pytest

from omsf2.bench.run import BenchSpec, run_bench
from omsf2.bench.timing import RoundsPlan

PLAN = RoundsPlan(warmup_s=0, iters=3, rounds=3)


def _ort_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


@pytest.mark.needs_cuda
@pytest.mark.parametrize("backend", ["torch-cuda", "torch-compile-cuda"])
def test_torch_on_cuda_agrees_with_torch_on_the_cpu(bench_ckpt, bench_phantoms, tmp_path, backend):
    """The PyTorch rows on the GPU: timed with the host waiting for the GPU, CUDA-event GPU time beside it."""
    res = run_bench(BenchSpec(str(bench_ckpt), str(tmp_path / "o"), backends=("torch", backend), plan=PLAN,
                              eval_data=str(bench_phantoms / "test"), plot=False))  # fmt: skip
    row = next(r for r in res.rows if r.backend == backend)
    assert row.status == "ok", row.reason
    assert row.gpu_compute_ms is not None and 0 < row.gpu_compute_ms <= row.p50_ms
    assert row.agreement is not None and row.agreement >= 0.75


def test_torch_cuda_rows_are_refused_without_a_gpu(bench_ckpt, tmp_path, monkeypatch):
    import omsf2.bench.runners as runners

    monkeypatch.setattr(runners, "_cuda_visible", lambda: False)
    with pytest.raises(ValueError, match="backend torch-cuda cannot run here: no CUDA GPU is visible"):
        run_bench(BenchSpec(str(bench_ckpt), str(tmp_path / "o"), backends=("torch-cuda",), plan=PLAN, plot=False))


def test_a_checkpoint_benched_on_pytorch_rows_only_is_not_exported(bench_ckpt, tmp_path, monkeypatch):
    """PyTorch rows run the checkpoint itself: no ONNX export first (the GPU check's machine has no onnxslim)."""
    import omsf2.bench.run as run

    def no_export(*args, **kwargs):
        raise AssertionError("exported although no backend runs an artifact")

    monkeypatch.setattr(run, "_export_checkpoint", no_export)
    res = run_bench(BenchSpec(str(bench_ckpt), str(tmp_path / "o"), backends=("torch",), plan=PLAN, plot=False))
    assert [r.status for r in res.rows] == ["ok"]


@pytest.mark.needs_cuda
@pytest.mark.skipif("CUDAExecutionProvider" not in _ort_providers(), reason="onnxruntime-gpu is not installed")
@pytest.mark.parametrize("backend", ["ort-cuda", "ort-trt"])
def test_onnxruntime_gpu_backends_agree_with_torch(bench_export, bench_phantoms, tmp_path, backend):
    if backend == "ort-trt" and "TensorrtExecutionProvider" not in _ort_providers():
        pytest.skip("this onnxruntime has no TensorrtExecutionProvider")
    res = run_bench(
        BenchSpec(str(bench_export), str(tmp_path / "o"), backends=("torch", backend), plan=PLAN,
                  eval_data=str(bench_phantoms / "test"), plot=False)
    )  # fmt: skip
    row = next(r for r in res.rows if r.backend == backend)
    assert row.status == "ok", row.reason
    assert row.p50_ms and row.p50_ms > 0
    assert row.agreement is not None and row.agreement >= 0.75


@pytest.mark.needs_trt
def test_tensorrt_engine_backend_times_host_and_gpu(bench_ckpt, bench_phantoms, tmp_path):
    from omsf2.export.targets import ExportFormat, ExportSpec, run_export

    export = tmp_path / "engine"
    run_export(ExportSpec(str(bench_ckpt), str(export), format=ExportFormat.ALL, batch=(1, 1, 4),
                          eval_data=str(bench_phantoms / "test")))  # fmt: skip
    res = run_bench(BenchSpec(str(export), str(tmp_path / "o"), backends=("tensorrt",), plan=PLAN, plot=False))
    (row,) = res.rows
    assert row.status == "ok", row.reason
    assert row.gpu_compute_ms is not None and 0 < row.gpu_compute_ms <= row.p50_ms
