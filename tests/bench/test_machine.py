from __future__ import annotations

import dataclasses
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


# --------------------------------------------------------------------------- ceilings


def _zen4_peaks() -> dict:
    from omsf2.bench.peak import CpuInfo, estimate_peak

    text = "".join(
        f"processor\t: {i}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\ncpu MHz\t\t: 2596.142\n"
        f"physical id\t: 0\ncore id\t\t: {i}\nflags\t\t: avx2 fma avx512f avx512_vnni\n\n"
        for i in (0, 1)
    )  # fmt: skip
    return estimate_peak(2, CpuInfo.parse(text), Path("/nonexistent"), allowed={0, 1})


def test_ceiling_is_the_best_library_with_its_spread_over_rounds_beside_the_peak():
    from omsf2.bench.machine import summarize_ceilings

    rates = {  # MAC/s per interleaved round
        "gemm-int8-onnxruntime": [300e9, 417e9, 350e9],
        "gemm-int8-openvino": [380e9, 400e9, 390e9],
        "gemm-fp32-torch": [60e9, 64e9, 62e9],
        "gemm-fp32-openvino": [],
    }
    libs = {"gemm-int8-onnxruntime": "ort MatMulInteger", "gemm-int8-openvino": "OV conv", "gemm-fp32-torch": "mm"}
    ceil, notes = summarize_ceilings(rates, libs, _zen4_peaks())
    int8 = ceil["gemm-int8"]
    # OpenVINO's median (390) beats onnxruntime's (350) although onnxruntime had the single fastest round.
    assert int8["library"] == "OV conv" and int8["gmacs"] == pytest.approx(390)
    assert int8["rounds"] == pytest.approx({"n": 3, "min": 380, "median": 390, "max": 400, "spread": 20 / 390})
    assert int8["libraries"]["ort MatMulInteger"]["max"] == pytest.approx(417)
    assert int8["peak_gmacs"] == pytest.approx(64 * 2 * 2.596142)
    assert int8["peak"]["mac_per_cycle_per_core"] == 64 and int8["peak"]["cores"] == 2
    assert int8["of_peak"] == pytest.approx(390 / (64 * 2 * 2.596142))
    assert ceil["gemm-fp32"]["gmacs"] == pytest.approx(62) and ceil["gemm-fp32"]["of_peak"] < 1
    # 417 GMAC/s in one round is over the 332 estimated: the estimate is low, and the note says by how much.
    (note,) = notes
    assert note.startswith("gemm-int8: a measured round (417 GMAC/s) exceeds the estimated peak (332 GMAC/s")
    assert ">= 3258 MHz" in note and "nominal clock" in note


def test_ceiling_without_a_peak_says_so():
    from omsf2.bench.machine import summarize_ceilings

    ceil, notes = summarize_ceilings({"gemm-fp32-torch": [1e9]}, {}, {})
    assert ceil["gemm-fp32"]["library"] == "gemm-fp32-torch" and ceil["gemm-fp32"]["peak_gmacs"] is None
    assert notes == ["gemm-fp32: no peak estimate (no table row for this CPU's ISA, or no clock to read)"]


def test_ceiling_names_and_shapes():
    from omsf2.bench.machine import CONV_SHAPE, OPENVINO_CONV, GemmShape, ceiling_precision

    assert ceiling_precision("gemm-int8-openvino") == "int8"
    with pytest.raises(ValueError, match="not a ceiling call name"):
        ceiling_precision("torch")
    assert CONV_SHAPE.macs == OPENVINO_CONV.macs == 28 * 28 * 256 * 256 * 9
    assert CONV_SHAPE.label == "784x2304x256"
    assert OPENVINO_CONV.label == "3x3 conv 256->256 ch at 28x28 (784x2304x256)"
    with pytest.raises(ValueError, match="a 3x3 conv needs K a multiple of 9 and M a square"):
        GemmShape(50, 18, 4, conv=True)
    with pytest.raises(ValueError, match="GEMM dimensions must be >= 1"):
        GemmShape(0, 1, 1)


def test_a_missing_library_is_a_note_not_an_error(monkeypatch):
    from omsf2.bench import machine

    def missing(threads, shape, int8):
        raise ImportError("No module named 'openvino'")

    def fake(threads, shape, int8):
        return machine.CeilingCall("gemm-fp32-torch", lambda: None, shape.macs, f"fake {shape.label}")

    monkeypatch.setattr(
        machine, "CEILINGS",
        (machine.Ceiling("torch", "fp32", machine.GemmShape(128, 64, 32), fake, "train"),
         machine.Ceiling("openvino", "int8", machine.OPENVINO_CONV, missing, "openvino")),
    )  # fmt: skip
    calls, notes = machine.ceiling_calls(1)
    assert [c.library for c in calls] == ["fake 128x64x32"] and calls[0].macs == 128 * 64 * 32
    assert notes == ["no openvino INT8 ceiling: No module named 'openvino' (pip install 'omsf2[openvino]')"]


def test_every_ceiling_builds_and_runs_at_a_small_shape():
    from omsf2.bench import machine

    assert {(r.library, r.precision) for r in machine.CEILINGS} == {
        (lib, p) for lib in ("torch", "onnxruntime", "openvino") for p in ("fp32", "int8")
    }

    small = machine.GemmShape(8 * 8, 9 * 16, 32)
    for row in machine.CEILINGS:
        shape = dataclasses.replace(small, conv=row.shape.conv)
        call = row.build(1, shape, row.precision == "int8")
        call.call()
        assert call.name == f"gemm-{row.precision}-{row.library}" and call.precision == row.precision
        assert call.macs == 64 * 144 * 32 and shape.label in call.library
