"""``omsf2 bench``: plan (every check before any work), export if needed, measure, write.

:func:`run_bench` resolves SOURCE, the sizes, the backends and the eval data first, so that bad
input is a one-line error before anything is exported or timed. Results are written in a staging
folder inside OUT and moved in only when the whole run succeeded: OUT never holds half a result.
Measurement is grouped by (image size, batch): in each group every runnable backend, the GEMM
ceilings of every installed library (FP32 and INT8) and, with ``--check-core``, each runtime backend
opened again as a user opens it share the same interleaved rounds, so speed-ups, efficiencies and
the core check are ratios of figures taken under the same load.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from omsf2.bench.report import Row, recommend, write_results
from omsf2.bench.runners import BY_NAME, Backend, Context, artifact_for, parse_backends, unavailable_reason
from omsf2.bench.source import Source, check_sizes, open_source
from omsf2.bench.timing import RoundsPlan

log = logging.getLogger(__name__)


def parse_ints(text: str | tuple[int, ...] | None, what: str) -> tuple[int, ...] | None:
    """``"1,8"`` -> ``(1, 8)``; None or empty -> None.

    Raises:
        ValueError: not positive integers (naming the option).
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        vals = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        raise ValueError(f"{what} takes comma-separated positive integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise ValueError(f"{what} takes comma-separated positive integers, got {text!r}")
    return tuple(dict.fromkeys(vals))


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """Everything ``omsf2 bench`` was asked for (see ``omsf2 bench --help``)."""

    source: str
    out: str
    backends: tuple[str, ...] | None = None
    batches: tuple[int, ...] = (1,)
    img_sizes: tuple[int, ...] | None = None
    threads: int | None = None
    plan: RoundsPlan = dataclasses.field(default_factory=RoundsPlan)
    eval_data: str | None = None
    calib_data: str | None = None
    max_drop: float | None = None
    plot: bool = True
    check_core: bool = False
    command: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.backends, str):
            if not self.backends.strip():  # an empty list is a mistake, not "every backend"
                raise ValueError(f"--backends is empty; name one or more of {', '.join(BY_NAME)}, or leave it out")
            parsed = parse_backends(self.backends)
            object.__setattr__(self, "backends", None if parsed is None else tuple(parsed))
        elif self.backends is not None:
            object.__setattr__(self, "backends", tuple(parse_backends(",".join(self.backends)) or ()) or None)
        object.__setattr__(self, "batches", parse_ints(self.batches, "--batch") or (1,))
        object.__setattr__(self, "img_sizes", parse_ints(self.img_sizes, "--img-size"))
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.max_drop is not None and not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise ValueError(f"--max-drop must be a number >= 0, got {self.max_drop}")
        if self.calib_data and not self.eval_data:
            raise ValueError("--calib-data (INT8 export of a checkpoint) needs --eval-data for the accuracy gate")


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """What :func:`run_bench` measured and wrote."""

    out: Path
    record: dict[str, Any]
    rows: list[Row]
    files: list[Path]


@dataclasses.dataclass
class Plan:
    """What one bench run will do: its source, sizes, the backends that run and those skipped (with why)."""

    source: Source
    sizes: tuple[int, ...]
    runnable: list[tuple[Backend, str | None]]
    skipped: dict[str, str]
    threads: int
    evalset: Any = None


def _plan(spec: BenchSpec) -> Plan:
    """Every check that can fail on user input, before any work."""
    out = Path(spec.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' exists and is not a folder")
    source = open_source(spec.source)
    sizes = check_sizes(source, spec.img_sizes)
    if spec.calib_data and source.kind == "export":
        raise ValueError("--calib-data exports a checkpoint; SOURCE is already an export folder")
    planned = {"model.onnx"} | ({"model.int8.onnx", "model.int8-cpu.onnx"} if spec.calib_data else set())
    planned = planned if source.kind == "checkpoint" else set()
    has_ckpt = source.checkpoint is not None
    runnable: list[tuple[Backend, str | None]] = []
    skipped: dict[str, str] = {}
    for backend in [BY_NAME[n] for n in spec.backends] if spec.backends else list(BY_NAME.values()):
        reason = unavailable_reason(backend, source.export_dir, planned, has_ckpt)
        if reason and not backend.artifacts and source.checkpoint_note:
            reason = source.checkpoint_note
        if reason is None:
            runnable.append((backend, artifact_for(backend, source.export_dir, planned)))
        elif spec.backends:
            raise ValueError(f"backend {backend.name} cannot run here: {reason}")
        else:
            skipped[backend.name] = reason
    if not runnable:
        raise ValueError("no backend can run here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    threads = spec.threads or os.cpu_count() or 1
    evalset = None
    if spec.eval_data:
        from omsf2.export.calibration import load_eval

        if not source.classes:
            raise ValueError("SOURCE records no class names; --eval-data needs them")
        evalset = load_eval(spec.eval_data, source.preprocess, source.classes)
    return Plan(source, sizes, runnable, skipped, threads, evalset)


def _export_checkpoint(spec: BenchSpec, plan: Plan, size: int, stage: Path, say: Callable[[str], None]) -> Path:
    """Export the checkpoint SOURCE at ``size`` into ``stage/export-<size>``."""
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.models.checkpoint import load_checkpoint, save_checkpoint

    ckpt_path = plan.source.path
    if size != plan.source.img_size:
        ckpt = load_checkpoint(ckpt_path)
        ckpt["preprocess"] = {**ckpt["preprocess"], "size": [size, size]}
        if "img_size" in ckpt["model_config"]:
            ckpt["model_config"] = {**ckpt["model_config"], "img_size": size}
        ckpt_path = save_checkpoint(stage / f"checkpoint-{size}.pt", ckpt)
    dest = stage / f"export-{size}"
    say(f"exporting {plan.source.path.name} at {size} px to {dest.name}")
    int8 = spec.calib_data is not None
    run_export(
        ExportSpec(
            str(ckpt_path), str(dest), int8=int8, calib_data=spec.calib_data, eval_data=spec.eval_data,
            max_drop=1.0 if spec.max_drop is None else spec.max_drop,
        )
    )  # fmt: skip
    return dest


def _staging(out: Path) -> tuple[Path, bool]:
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".omsf2-bench-", dir=out)), created
    except OSError as e:
        raise ValueError(f"cannot write to --out '{out}': {e.strerror or e}") from e


def run_bench(spec: BenchSpec, on_stage: Callable[[str], None] | None = None) -> BenchResult:
    """Run the bench the spec describes and write results.json / .csv / .md (and PNGs) into OUT.

    Raises:
        ValueError: bad input (SOURCE, sizes, backends, data, OUT); nothing is left in OUT then.
    """
    from omsf2.bench.measure import measure_size

    def say(msg: str) -> None:
        log.info(msg)
        if on_stage:
            on_stage(msg)

    t0 = time.perf_counter()
    plan = _plan(spec)
    out = Path(spec.out)
    stage, created = _staging(out)
    try:
        rows: list[Row] = []
        ceilings: dict[str, list[float]] = {}
        notes: list[str] = []
        libraries: dict[str, str] = {}
        for size in plan.sizes:
            export_dir = plan.source.export_dir
            # A checkpoint is exported only when a backend runs an artifact (PyTorch rows alone need none).
            if plan.source.kind == "checkpoint" and (spec.calib_data or any(a for _, a in plan.runnable)):
                export_dir = _export_checkpoint(spec, plan, size, stage, say)
            got = measure_size(spec, plan, size, export_dir, say)
            rows += got.rows
            notes += [n for n in got.notes if n not in notes]
            libraries.update(got.libraries)
            for k, v in got.ceilings.items():
                ceilings.setdefault(k, []).extend(v)
        record = _record(spec, plan, rows, ceilings, libraries, notes, time.perf_counter() - t0)
        files = write_results(stage, record, rows)
        if spec.plot:
            files += _plots(stage, record)
        final = [out / p.name for p in files]
        for p in stage.iterdir():
            dest = out / p.name
            if p.is_dir() and dest.exists():
                shutil.rmtree(dest)
            os.replace(p, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)
    return BenchResult(out, record, rows, final)


def _record(
    spec: BenchSpec,
    plan: Plan,
    rows: list[Row],
    ceilings: dict[str, list[float]],
    libraries: dict[str, str],
    notes: list[str],
    wall_s: float,
) -> dict[str, Any]:
    from omsf2.bench.machine import fingerprint, summarize_ceilings
    from omsf2.bench.peak import estimate_peak
    from omsf2.bench.report import SCHEMA_VERSION, efficiency_notes

    fp = fingerprint(plan.threads)
    max_drop = _max_drop(spec, plan.source)
    # Per precision: the best library over the rounds, its spread, the estimated peak beside it.
    ceil, ceil_notes = summarize_ceilings(ceilings, libraries, estimate_peak(plan.threads))
    notes = [*notes, *ceil_notes, *efficiency_notes(rows)]
    extra = []
    if any(r.noisy for r in rows):
        extra.append(
            "rows marked (noisy) had a p90 over 1.25x their median or round medians spread over 1.3x: the machine "
            "was busy; ratios (x torch, efficiency) come from the same rounds and hold better than absolute times"
        )
    if not fp["int8_dot_product"]:
        extra.append("this CPU has no VNNI / AMX: INT8 convolutions gain little over FP32 here")
    return {
        "schema_version": SCHEMA_VERSION,
        "source": str(plan.source.path),
        "source_kind": plan.source.kind,
        "command": spec.command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "fingerprint": fp,
        "isa": fp["isa"],
        "ceilings": ceil,
        "plan": dataclasses.asdict(spec.plan),
        "load_average": list(os.getloadavg()),
        "max_drop": max_drop,
        "eval_data": spec.eval_data,
        "wall_s": round(wall_s, 1),
        "rows": [r.to_dict() for r in rows],
        "recommendation": recommend(rows, max_drop),
        "notes": notes + extra,
    }


def _max_drop(spec: BenchSpec, source: Source) -> float:
    if spec.max_drop is not None:
        return spec.max_drop
    for key in ("int8", "int8_cpu"):
        entry = (source.report or {}).get(key)
        if isinstance(entry, dict) and isinstance(entry.get("max_drop"), int | float):
            return float(entry["max_drop"])
    return 1.0


def _plots(folder: Path, record: dict[str, Any]) -> list[Path]:
    from omsf2.plots import batch_scaling_png, latency_png

    title = f"{record['source']} on {record['fingerprint']['cpu']} ({record['fingerprint']['threads']} threads)"
    paths = [latency_png(folder / "latency.png", record["rows"], title)]
    if len({r["batch"] for r in record["rows"]}) > 1:
        paths.append(batch_scaling_png(folder / "batch.png", record["rows"], title))
    return paths


def random_input(batch: int, channels: int, size: int) -> np.ndarray:
    """The timing input: a fixed-seed normalised-looking batch (values do not change the work)."""
    return np.random.default_rng(0).standard_normal((batch, channels, size, size), dtype=np.float32)


def context_for(plan: Plan, export_dir: Path | None, batch: int, size: int) -> Context:
    """The runner context of one group."""
    return Context(
        export_dir=export_dir or Path("."),
        checkpoint=plan.source.checkpoint,
        batch=batch,
        img_size=size,
        channels=plan.source.preprocess.channels,
        threads=plan.threads,
    )
