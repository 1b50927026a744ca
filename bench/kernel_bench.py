"""Records the kernel micro-benchmark (``omsf2 bench --kernels``, logic in ``omsf2/bench/kernels.py``).

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/kernel_bench.py                 # cuda if present, else cpu
    .venv/bin/python bench/kernel_bench.py --device cpu --iters 50

The result is written to ``bench/results/kernels-<machine>.json`` with the command that produced
it, and rendered into ``bench/results/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import RESULTS, machine, summarize, written_by


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    ap.add_argument("--iters", type=int, default=200, help="timed iterations per row")
    ap.add_argument("--plugin-lib", type=Path, default=None, help="libomsf2_plugins.so for the plugin engine rows")
    ap.add_argument("--no-write", action="store_true", help="print only; do not record the result")
    ap.add_argument("--out", type=Path, default=None, help="write the record here instead of bench/results (no README)")
    return ap.parse_args()


def main() -> None:
    """Run the benchmark on this machine and record it."""
    args = _parse()
    from omsf2.bench.kernels import run_kernel_bench

    record = run_kernel_bench(args.device, args.iters, args.plugin_lib)
    slug, desc = machine()
    for r in record["rows"]:
        ms = f"{r['median_ms']:.4f} ms" if r.get("median_ms") is not None else "-"
        print(f"{r['op']:16s} {r['case']:40s} {r['backend']:20s} {r['dtype']:5s} {r['status']:11s} {ms}")
    record = {"about": record["about"], "machine": desc, **record}
    record["command"] = " ".join(["python", "bench/kernel_bench.py", *sys.argv[1:]])
    record["written_by"] = written_by(__file__)
    if args.no_write:
        return
    out = args.out or RESULTS / f"kernels-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}" + ("" if args.out else f"\nwrote {summarize()}"))
    if any(r["status"] in ("MISMATCH", "error") for r in record["rows"]):
        raise SystemExit("some kernels failed their check; see the table")


if __name__ == "__main__":
    main()
