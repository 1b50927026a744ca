"""The silicon's estimated peak: table lookups by ISA and core family, cores, clock and its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from omsf2.bench.peak import FP32_RATES, INT8_RATES, SOURCES, CpuInfo, core_family, estimate_peak, mac_rate


def cpuinfo(
    vendor: str, family: int, model: int, flags: str, mhz: float = 3000.0, cores: tuple[int, ...] = (0,)
) -> str:
    """/proc/cpuinfo text: one block per logical CPU, ``cores[i]`` the core id of CPU i."""
    return "\n\n".join(
        f"processor\t: {i}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
        f"cpu MHz\t\t: {mhz}\nphysical id\t: 0\ncore id\t\t: {core}\nflags\t\t: fpu sse2 {flags}\n"
        for i, core in enumerate(cores)
    )  # fmt: skip


HASWELL = cpuinfo("GenuineIntel", 6, 63, "avx avx2 fma")
SKYLAKE_SP = cpuinfo("GenuineIntel", 6, 85, "avx2 fma avx512f avx512bw")
CASCADE_LAKE = cpuinfo("GenuineIntel", 6, 85, "avx2 fma avx512f avx512bw avx512_vnni")
ALDER_LAKE = cpuinfo("GenuineIntel", 6, 151, "avx2 fma avx_vnni")
SAPPHIRE_RAPIDS = cpuinfo("GenuineIntel", 6, 143, "avx2 fma avx512f avx512bw avx512_vnni amx_tile amx_int8 amx_bf16")
ZEN1 = cpuinfo("AuthenticAMD", 23, 1, "avx2 fma")
ZEN2 = cpuinfo("AuthenticAMD", 23, 49, "avx2 fma")
ZEN4 = cpuinfo("AuthenticAMD", 25, 17, "avx2 fma avx512f avx512bw avx512_vnni avx512_bf16", mhz=2596.142)


@pytest.mark.parametrize(
    ("text", "fp32", "int8", "int8_isa"),
    [
        (HASWELL, 16, 32, "AVX2"),
        (SKYLAKE_SP, 32, 128 / 3, "AVX-512BW"),
        (CASCADE_LAKE, 32, 128, "AVX512-VNNI"),
        (ALDER_LAKE, 16, 64, "AVX-VNNI"),
        (SAPPHIRE_RAPIDS, 32, 1024, "AMX-INT8"),
        (ZEN1, 8, 16, "AVX2 (Zen 1: 2 x 128-bit)"),
        (ZEN2, 16, 32, "AVX2"),
        (ZEN4, 16, 64, "AVX512-VNNI (Zen 4: 2 x 256-bit)"),
    ],
)
def test_mac_per_cycle_by_isa_and_core_family(text, fp32, int8, int8_isa):
    cpu = CpuInfo.parse(text)
    assert mac_rate("fp32", cpu).mac_per_cycle == fp32
    row = mac_rate("int8", cpu)
    assert row.mac_per_cycle == pytest.approx(int8) and row.isa == int8_isa


def test_core_family_only_for_the_narrow_amd_cores():
    assert [core_family(CpuInfo.parse(t)) for t in (ZEN1, ZEN2, ZEN4, CASCADE_LAKE)] == ["zen1", None, "zen4", None]


def test_every_table_row_cites_a_source_and_no_isa_means_no_row():
    assert all(r.source in SOURCES and r.how for r in FP32_RATES + INT8_RATES)
    bare = CpuInfo.parse(cpuinfo("GenuineIntel", 6, 1, "sse4_2"))
    assert mac_rate("fp32", bare) is None and mac_rate("int8", bare) is None
    with pytest.raises(ValueError, match="unknown precision 'bf16'; choose from fp32, int8"):
        mac_rate("bf16", bare)


def test_peak_is_mac_per_cycle_times_cores_times_nominal_clock(tmp_path):
    no_cpufreq = tmp_path / "none"
    peaks = estimate_peak(2, CpuInfo.parse(ZEN4), no_cpufreq, allowed={0})
    # One physical core in the allowed set: 2 threads still use one core's vector units.
    assert peaks["int8"].cores == 1 and peaks["int8"].gmacs == pytest.approx(64 * 2.596142)
    zen4_2c = CpuInfo.parse(cpuinfo("AuthenticAMD", 25, 17, "avx2 fma avx512f avx512_vnni", 2596.142, (0, 1)))
    peaks = estimate_peak(2, zen4_2c, no_cpufreq, allowed={0, 1})
    assert peaks["fp32"].gmacs == pytest.approx(16 * 2 * 2.596142)
    assert peaks["int8"].gmacs == pytest.approx(64 * 2 * 2.596142)
    d = peaks["int8"].to_dict()
    assert d["mac_per_cycle_per_core"] == 64 and d["cores"] == 2 and d["mhz"] == pytest.approx(2596.142)
    assert d["mhz_from"].startswith("/proc/cpuinfo cpu MHz (nominal") and "Zen4" in d["source"]
    assert peaks["int8"].mhz_needed(2 * 64 * 3.0) == pytest.approx(3000.0)


def test_threads_beyond_physical_cores_add_nothing_and_cpufreq_comes_first(tmp_path: Path):
    smt = CpuInfo.parse(cpuinfo("GenuineIntel", 6, 85, "avx2 fma avx512f avx512_vnni", 1200.0, (0, 0, 1, 1)))
    (tmp_path / "cpuinfo_max_freq").write_text("3500000\n")  # kHz
    peaks = estimate_peak(4, smt, tmp_path, allowed={0, 1, 2, 3})
    assert peaks["fp32"].cores == 2 and peaks["fp32"].mhz == 3500.0
    assert peaks["fp32"].gmacs == pytest.approx(32 * 2 * 3.5) and "cpuinfo_max_freq" in peaks["fp32"].mhz_from
    assert estimate_peak(1, smt, tmp_path, allowed={0, 1, 2, 3})["int8"].gmacs == pytest.approx(128 * 3.5)


def test_no_clock_no_peak_and_bad_threads(tmp_path):
    no_mhz = CpuInfo.parse(HASWELL.replace("cpu MHz\t\t: 3000.0\n", ""))
    assert estimate_peak(1, no_mhz, tmp_path) == {}
    with pytest.raises(ValueError, match="threads must be >= 1"):
        estimate_peak(0, no_mhz, tmp_path)


def test_this_machine_gets_an_estimate_or_none():
    peaks = estimate_peak(1)
    for p in peaks.values():
        assert p.gmacs > 0 and p.cores == 1 and p.mhz > 0
