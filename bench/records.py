"""Every record in ``bench/results`` names the script and the command that wrote it (``written_by``).

Usage (from the repository root):

    python bench/records.py check    # list the records without written_by (exit 1 if any)
    python bench/records.py stamp [RECORD.json ...]   # add written_by to records written before the field existed

The scripts write the field themselves (:func:`common.written_by`). For records written before it
existed, ``stamp`` adds it from :data:`WRITERS`, the table of which script writes records named so and
how its command is rebuilt from the record's own fields (scenario, tag, seeds, its own command where it
kept one), and marks it ``"backfilled": true``: the script is certain (only it writes that name), the
arguments are read back from the record. A record no script in ``bench/`` writes is left alone and
``check`` names it. Nothing else in a record changes, so the .md beside it stays what its script
rendered.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _args(rec: dict[str, Any], prefix: str) -> str:
    """The arguments a record's own ``command`` field kept, after ``prefix``."""
    cmd = str(rec.get("command", ""))
    return cmd.split(prefix, 1)[1].strip() if prefix in cmd else ""


def _stability(rec: dict[str, Any]) -> str:
    seeds = ",".join(str(s["seed"]) for s in rec.get("seeds", []) if "seed" in s)
    return f"--tag {rec['scenario'].removeprefix('stability-')}" + (f" --seeds {seeds}" if seeds else "")


#: (record file prefix, script, the script's arguments from the record); the first matching prefix wins.
WRITERS: tuple[tuple[str, str, Callable[[dict[str, Any]], str]], ...] = (
    ("ablation-first-pass-", "bench/ablation.py", lambda r: "(its first pass; the record was kept under this name)"),
    ("ablation-folds", "bench/ablation_folds.py", lambda r: ""),
    ("ablation-", "bench/ablation.py", lambda r: ""),
    ("bench-", "bench/bench_scenarios.py", lambda r: str(r["scenario"])),
    ("calibration-", "bench/calibration.py", lambda r: ""),
    ("ddp-", "bench/ddp_train.py", lambda r: ""),
    ("demo-spread-", "bench/demo_spread.py", lambda r: ""),
    ("dicom-load-", "bench/dicom_load.py", lambda r: ""),
    ("gpu-check-", "bench/gpu_check.sh", lambda r: "--dry-run" if str(r.get("mode", "")).startswith("dry") else ""),
    ("int8-cxr-seeds-", "bench/int8_cxr_seeds.py", lambda r: ""),
    ("int8-cxr-", "bench/int8_cxr.py", lambda r: f"--ckpt {r['checkpoint']}" if r.get("checkpoint") else ""),
    ("int8-quantizers-", "bench/int8_quantizers.py", lambda r: ""),
    ("kernels-", "bench/kernel_bench.py", lambda r: _args(r, "bench/kernel_bench.py")),
    ("phantom-diagnosis-", "bench/phantom_diagnosis.py", lambda r: "record"),
    ("preprocess-", "bench/preprocess_bench.py", lambda r: ""),
    ("profile-", "bench/profile_cpu.py", lambda r: _args(r, "bench/profile_cpu.py")),
    ("qat-cxr-", "bench/qat_cxr.py", lambda r: ""),
    ("stability-", "bench/stability.py", _stability),
    ("train-", "bench/train_scenarios.py", lambda r: str(r["scenario"])),
    ("triton-serve-", "bench/triton_serve.py", lambda r: _args(r, "bench/triton_serve.py")),
)


def writer_of(path: Path, rec: dict[str, Any]) -> dict[str, Any] | None:
    """``written_by`` for a record that lacks it, from :data:`WRITERS`; None when no script writes such a name."""
    for prefix, script, args in WRITERS:
        if path.name.startswith(prefix) and (REPO / script).is_file():
            rest = args(rec)
            command = f"{'bash' if script.endswith('.sh') else 'python'} {script}" + (f" {rest}" if rest else "")
            return {"script": script, "command": command, "backfilled": True}
    return None


def problems(path: Path) -> str | None:
    """Why a record does not name its writer properly, or None."""
    rec = json.loads(path.read_text())
    wb = rec.get("written_by") if isinstance(rec, dict) else None
    if not isinstance(wb, dict) or not wb.get("script") or not wb.get("command"):
        return "no written_by.script / written_by.command"
    if not (REPO / wb["script"]).is_file():
        return f"written_by.script {wb['script']!r} is not a file in the repository"
    if Path(wb["script"]).name not in wb["command"]:
        return f"written_by.command {wb['command']!r} does not run {wb['script']}"
    return None


def stamp(paths: list[Path] | None = None) -> list[Path]:
    """Add ``written_by`` to each record (default: all) that lacks it and whose writer is known; those changed."""
    changed = []
    for path in paths if paths is not None else sorted(RESULTS.glob("*.json")):
        rec = json.loads(path.read_text())
        if not isinstance(rec, dict) or "written_by" in rec or (wb := writer_of(path, rec)) is None:
            continue
        path.write_text(json.dumps({**rec, "written_by": wb}, indent=2) + "\n")
        changed.append(path)
    return changed


def main() -> None:
    """``check`` or ``stamp``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("check", "stamp"))
    ap.add_argument("records", nargs="*", type=Path, help="stamp only these (default: every record)")
    a = ap.parse_args()
    if a.action == "stamp":
        for p in stamp([p.resolve() for p in a.records] or None):
            print(f"stamped {p.relative_to(REPO)}")
        return
    bad = [(p, why) for p in sorted(RESULTS.glob("*.json")) if (why := problems(p))]
    for p, why in bad:
        print(f"{p.relative_to(REPO)}: {why}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
