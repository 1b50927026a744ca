from __future__ import annotations

from pathlib import Path

import pytest

from omsf2.bench.machine import cpu_flags, cpu_isa, cpu_model, fingerprint, has_int8_dot, machine_slug
from omsf2.bench.report import Row, recommend
from omsf2.bench.runners import BY_NAME, parse_backends, unavailable_reason

ZEN1 = "processor\t: 0\nmodel name\t: AMD EPYC 7601\nflags\t\t: fpu sse2 avx avx2 fma\n"
ZEN4 = "model name\t: AMD EPYC 9654\nflags\t\t: avx2 avx512f avx512bw avx512_vnni avx512_bf16\n"
SPR = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_vnni amx_tile amx_int8 amx_bf16\n"


@pytest.mark.parametrize(
    ("cpuinfo", "isa", "dot"),
    [
        (ZEN1, ["AVX2"], False),
        (ZEN4, ["AVX2", "AVX-512", "AVX512-VNNI", "AVX512-BF16"], True),
        (SPR, ["AVX2", "AVX-512", "AVX512-VNNI", "AMX-INT8", "AMX-BF16"], True),
        ("", [], False),
    ],
)
def test_isa_from_cpuinfo_flags(cpuinfo, isa, dot):
    flags = cpu_flags(cpuinfo)
    assert cpu_isa(flags) == isa
    assert has_int8_dot(flags) is dot


def test_fingerprint_names_cpu_isa_threads_and_versions():
    fp = fingerprint(3, ZEN4)
    assert fp["cpu"] == "AMD EPYC 9654" == cpu_model(ZEN4)
    assert fp["isa"] == ["AVX2", "AVX-512", "AVX512-VNNI", "AVX512-BF16"]
    assert fp["int8_dot_product"] is True
    assert fp["threads"] == 3
    assert fp["cores"] >= 1
    assert "torch" in fp["versions"] and "onnxruntime" in fp["versions"]
    assert fp["omsf2"]
    assert machine_slug({**fp, "gpu": None}) == f"amd-epyc-9654-{fp['cores']}c-cpu"
    assert machine_slug({**fp, "gpu": {"name": "NVIDIA H100 80GB HBM3"}}).endswith("-h100-80gb-hbm3")


def test_this_machines_fingerprint_reads_proc_cpuinfo():
    fp = fingerprint(1)
    if Path("/proc/cpuinfo").is_file():
        assert fp["cpu"] != "unknown CPU"


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown backend nope; choose from torch, torch-compile, ort"):
        parse_backends("ort,nope")
    assert parse_backends("ort, torch,ort") == ["ort", "torch"]
    assert parse_backends(None) is None


def test_skip_reasons(tmp_path, monkeypatch):
    (tmp_path / "model.onnx").write_bytes(b"x")
    assert unavailable_reason(BY_NAME["ort"], tmp_path, set(), True) is None
    assert "no model.int8-cpu.onnx in the export (export with --int8)" in unavailable_reason(
        BY_NAME["ort-int8"], tmp_path, set(), True
    )
    assert unavailable_reason(BY_NAME["ort-int8"], None, {"model.int8-cpu.onnx"}, True) is None
    assert "checkpoint" in unavailable_reason(BY_NAME["torch"], tmp_path, set(), False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no C++ compiler on PATH
    monkeypatch.delenv("CXX", raising=False)
    assert "C++ compiler" in unavailable_reason(BY_NAME["torch-compile"], tmp_path, set(), True)


def test_gpu_backends_say_why_they_skip_on_a_cpu_machine(tmp_path):
    import onnxruntime as ort

    (tmp_path / "model.onnx").write_bytes(b"x")
    reason = unavailable_reason(BY_NAME["ort-cuda"], tmp_path, set(), True)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert reason == "this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
    trt_reason = unavailable_reason(BY_NAME["tensorrt"], tmp_path, set(), True)
    assert trt_reason is not None  # no engine in this folder, whatever is installed


def test_recommendation_is_not_int8_by_assumption():
    rows = [
        Row("torch", 1, 64, p50_ms=10.0, accuracy_drop=0.0),
        Row("ort", 1, 64, p50_ms=6.0, accuracy_drop=0.0),
        Row("ort-int8", 1, 64, precision="int8", p50_ms=2.0, accuracy_drop=2.5),
        Row("openvino-int8", 1, 64, precision="int8", p50_ms=3.0, accuracy_drop=None),
        Row("ort-cuda", 1, 64, status="skipped", reason="no GPU"),
    ]
    (rec,) = recommend(rows, max_drop=1.0)
    assert rec["backend"] == "ort"
    assert "ort-int8 is faster but loses 2.50 pt" in rec["why"]
    rows[2].accuracy_drop = 0.5
    assert recommend(rows, max_drop=1.0)[0]["backend"] == "ort-int8"
