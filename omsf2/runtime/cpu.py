"""What this CPU can do, from ``/proc/cpuinfo``: the one reader of its feature flags.

The runtime picks backends by them (bf16), the export's gate names the integer kernel path by them,
and the bench reports them. Stdlib only.
"""

from __future__ import annotations

import functools
from pathlib import Path


def parse_flags(cpuinfo: str) -> frozenset[str]:
    """The ``flags`` (x86) or ``Features`` (Arm) of the first CPU in a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def _this_cpu() -> frozenset[str]:
    try:
        return parse_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return frozenset()


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """This machine's CPU feature flags (read once), or those of a given ``/proc/cpuinfo`` text; empty if none."""
    return _this_cpu() if cpuinfo is None else parse_flags(cpuinfo)
