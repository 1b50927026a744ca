"""The silicon's estimated peak multiply-add rate: MACs per cycle per core x cores x clock.

The GEMM ceilings of :mod:`omsf2.bench.machine` say what the best library reaches on this machine;
this module says what the cores could reach at most, from one table of MACs per cycle per core by
instruction set (:data:`FP32_RATES`, :data:`INT8_RATES`), the physical cores the bench's threads can
use, and a nominal clock. The trade-off: a table and a nominal clock, not a measurement. The table
gives upper bounds (two vector units where a family ships with one or two), but a CPU that boosts
above the clock the OS reports (a hypervisor reports the host's base clock) runs faster than the
estimate; a measured rate above the peak then says the estimate is wrong, and the record says so.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

CPUFREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq")

# Where each number comes from (cited once, by key, in the tables below).
SOURCES: dict[str, str] = {
    "intel-opt": "Intel 64 and IA-32 Architectures Optimization Reference Manual, Vol. 1 (2024): the "
    "Intel AVX-512 chapter (Xeon Scalable parts with two 512-bit FMA units, ports 0 and 5) and the Intel AMX chapter",
    "intel-vnni": "Intel, 'Lower Numerical Precision Deep Learning Inference and Training' (2018) and the "
    "Optimization Reference Manual: VPDPBUSD fuses VPMADDUBSW + VPMADDWD + VPADDD into one instruction, 3x the "
    "INT8 throughput of the three-instruction sequence, 4x FP32",
    "uops": "uops.info instruction tables and Agner Fog, 'Instruction tables' (agner.org/optimize): VFMADD*PS and "
    "VPMADDUBSW / VPMADDWD / VPDPBUSD throughputs per microarchitecture",
    "amd-zen4": "AMD, Software Optimization Guide for the AMD Zen4 Microarchitecture (pub. 57647): two 256-bit FMA "
    "pipes; 512-bit instructions execute as two 256-bit halves; uops.info (Zen 4): VPDPBUSD ymm 2 per cycle",
    "amd-zen1": "AMD, Software Optimization Guide for AMD Family 17h Processors (pub. 55723): four 128-bit FP "
    "pipes, two of them FMA; 256-bit instructions execute as two 128-bit halves",
}


@dataclasses.dataclass(frozen=True)
class MacRate:
    """Multiply-accumulates per cycle per core of one instruction-set path.

    Attributes:
        isa: the path, as the record prints it.
        needs: /proc/cpuinfo flags that must all be present.
        mac_per_cycle: MACs per cycle per core at the path's best sustained instruction throughput.
        how: the arithmetic behind the number (units x lanes x MACs per lane).
        source: a key of :data:`SOURCES`.
        family: restrict the row to one core family (see :func:`core_family`); None: any.
    """

    isa: str
    needs: frozenset[str]
    mac_per_cycle: float
    how: str
    source: str
    family: str | None = None


def _r(isa: str, needs: str, mac: float, how: str, source: str, family: str | None = None) -> MacRate:
    return MacRate(isa, frozenset(needs.split()), mac, how, source, family)


# First matching row wins: family-specific rows before the generic row of the same ISA, wider ISAs first.
# Checked on this bench's AMD EPYC (Zen 4, 2 threads): the fastest ceiling calls, FP32 108 and INT8
# 444 GMAC/s, need 3.4 and 3.5 GHz at 16 and 64 MAC/cycle per core: within Zen 4's boost range,
# while the 2596 MHz in /proc/cpuinfo is the base clock the hypervisor reports.
FP32_RATES: tuple[MacRate, ...] = (
    _r("AVX-512 (Zen 4: 2 x 256-bit FMA)", "avx512f", 16, "2 FMA pipes x 8 FP32 lanes; a 512-bit FMA takes both",
       "amd-zen4", "zen4"),
    _r("AVX-512", "avx512f", 32, "2 FMA units x 16 FP32 lanes (parts with one 512-bit FMA unit reach half)",
       "intel-opt"),
    _r("AVX2+FMA (Zen 1: 2 x 128-bit FMA)", "avx2 fma", 8, "2 FMA pipes x 4 FP32 lanes", "amd-zen1", "zen1"),
    _r("AVX2+FMA", "avx2 fma", 16, "2 FMA units x 8 FP32 lanes", "uops"),
)  # fmt: skip
INT8_RATES: tuple[MacRate, ...] = (
    _r("AMX-INT8", "amx_int8", 1024, "TDPBUSD: 16 x 16 x 64 = 16384 u8s8 MACs per 16 cycles", "intel-opt"),
    _r("AVX512-VNNI (Zen 4: 2 x 256-bit)", "avx512_vnni", 64, "2 pipes x 8 INT32 lanes x 4 MACs (VPDPBUSD ymm)",
       "amd-zen4", "zen4"),
    _r("AVX512-VNNI", "avx512_vnni", 128, "2 units x 16 INT32 lanes x 4 MACs (VPDPBUSD zmm, ports 0 and 5)",
       "intel-vnni"),
    _r("AVX-VNNI", "avx_vnni", 64, "2 units x 8 INT32 lanes x 4 MACs (VPDPBUSD ymm)", "intel-vnni"),
    _r("AVX-512BW", "avx512bw", 128 / 3, "VPMADDUBSW + VPMADDWD + VPADDD (3 uops) per 64 MACs on 2 ports",
       "intel-vnni"),
    _r("AVX2 (Zen 1: 2 x 128-bit)", "avx2", 16, "half the AVX2 rate: 256-bit ops split in two", "amd-zen1", "zen1"),
    _r("AVX2", "avx2", 32, "VPMADDUBSW + VPMADDWD per 32 MACs on 2 multiply ports (ports 0 and 1)", "uops"),
)  # fmt: skip
RATES: dict[str, tuple[MacRate, ...]] = {"fp32": FP32_RATES, "int8": INT8_RATES}


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """What the estimate reads from /proc/cpuinfo: vendor, family, model, flags, and the cores of each CPU."""

    vendor: str
    family: int | None
    model: int | None
    flags: frozenset[str]
    mhz: float | None
    core_of: dict[int, tuple[str, str]]

    @classmethod
    def parse(cls, text: str) -> CpuInfo:
        """Parse /proc/cpuinfo's text (missing fields stay empty or None)."""
        vendor, family, model, mhz = "", None, None, None
        flags: frozenset[str] = frozenset()
        core_of: dict[int, tuple[str, str]] = {}
        for block in text.split("\n\n"):
            f = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in block.splitlines()) if k.strip()}
            if "processor" in f and f["processor"].isdigit():
                core_of[int(f["processor"])] = (f.get("physical id", "0"), f.get("core id", f["processor"]))
            vendor = vendor or f.get("vendor_id", "")
            family = family if family is not None else _int(f.get("cpu family"))
            model = model if model is not None else _int(f.get("model"))
            flags = flags or frozenset((f.get("flags") or f.get("Features") or "").split())
            m = _float(f.get("cpu MHz"))
            if m is not None and (mhz is None or m > mhz):
                mhz = m
        return cls(vendor, family, model, flags, mhz, core_of)

    @classmethod
    def read(cls) -> CpuInfo:
        """This machine's (empty where /proc/cpuinfo cannot be read)."""
        try:
            return cls.parse(Path("/proc/cpuinfo").read_text())
        except OSError:
            return cls.parse("")


def _int(v: str | None) -> int | None:
    return int(v) if v is not None and v.isdigit() else None


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


def core_family(cpu: CpuInfo) -> str | None:
    """The core families whose vector units are narrower than their ISA: ``zen1`` (Zen / Zen+), ``zen4``; else None.

    Zen and Zen+ (family 0x17, models below 0x30) split 256-bit instructions in two; Zen 4 (family
    0x19 with AVX-512) splits 512-bit ones. Zen 2 and 3 run AVX2 full width; Zen 5 (0x1A) runs
    AVX-512 full width on desktop and server parts.
    """
    if cpu.vendor != "AuthenticAMD" or cpu.family is None:
        return None
    if cpu.family == 0x17 and cpu.model is not None and cpu.model < 0x30:
        return "zen1"
    if cpu.family == 0x19 and "avx512f" in cpu.flags:
        return "zen4"
    return None


def mac_rate(precision: str, cpu: CpuInfo) -> MacRate | None:
    """The table row that applies to ``cpu`` for ``precision`` (``fp32`` or ``int8``); None: no row fits.

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in RATES:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(RATES)}")
    fam = core_family(cpu)
    for row in RATES[precision]:
        if row.needs <= cpu.flags and row.family in (None, fam):
            return row
    return None


def physical_cores(cpu: CpuInfo, allowed: set[int] | None = None) -> int:
    """Physical cores among the CPUs this process may run on (SMT siblings share one core's vector units)."""
    if allowed is None:
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    if not cpu.core_of:
        return max(1, len(allowed))
    return max(1, len({cpu.core_of[c] for c in allowed if c in cpu.core_of}))


def clock_mhz(cpu: CpuInfo, cpufreq: Path = CPUFREQ) -> tuple[float, str] | None:
    """The nominal clock (MHz) and where it came from; None where neither source exists.

    cpufreq's ``cpuinfo_max_freq`` (the highest clock the frequency driver reports) comes first,
    then the highest ``cpu MHz`` of /proc/cpuinfo (the current clock; under a hypervisor, what the
    host reports, often its base clock). Neither is the clock under load: boost can exceed both, and
    AVX-512 licences can stay below.
    """
    try:
        khz = float((cpufreq / "cpuinfo_max_freq").read_text().split()[0])
        if khz > 0:
            return khz / 1e3, f"{cpufreq}/cpuinfo_max_freq (nominal maximum)"
    except (OSError, ValueError, IndexError):
        pass
    if cpu.mhz:
        return cpu.mhz, "/proc/cpuinfo cpu MHz (nominal: the current or, under a hypervisor, the reported base clock)"
    return None


@dataclasses.dataclass(frozen=True)
class Peak:
    """One precision's estimated peak: ``mac_per_cycle`` x ``cores`` x ``mhz``."""

    precision: str
    gmacs: float
    rate: MacRate
    cores: int
    mhz: float
    mhz_from: str

    def to_dict(self) -> dict[str, Any]:
        """The record's ``peak`` entry: the figure and every assumption behind it."""
        return {
            "gmacs": self.gmacs,
            "isa": self.rate.isa,
            "mac_per_cycle_per_core": self.rate.mac_per_cycle,
            "how": self.rate.how,
            "source": SOURCES[self.rate.source],
            "cores": self.cores,
            "mhz": self.mhz,
            "mhz_from": self.mhz_from,
        }

    def mhz_needed(self, gmacs: float) -> float:
        """The clock at which this table row and these cores would deliver ``gmacs``."""
        return gmacs * 1e3 / (self.rate.mac_per_cycle * self.cores)


def estimate_peak(
    threads: int, cpu: CpuInfo | None = None, cpufreq: Path = CPUFREQ, allowed: set[int] | None = None
) -> dict[str, Peak]:
    """FP32 and INT8 peaks for ``threads`` threads (those the table, the cores and the clock allow).

    The cores are ``min(threads, physical cores)``: more threads than cores add no vector units.

    Raises:
        ValueError: ``threads`` below 1.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    cpu = CpuInfo.read() if cpu is None else cpu
    clock = clock_mhz(cpu, cpufreq)
    if clock is None:
        return {}
    cores = min(threads, physical_cores(cpu, allowed))
    out = {}
    for precision in RATES:
        row = mac_rate(precision, cpu)
        if row is not None:
            out[precision] = Peak(precision, row.mac_per_cycle * cores * clock[0] / 1e3, row, cores, *clock)
    return out
