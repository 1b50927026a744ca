"""``omsf2 bench``: parse, call :func:`omsf2.bench.run.run_bench` (or the kernel bench), print the table.

Registered on the root app by ``omsf2.cli.app``, wrapped by :func:`omsf2.cli.errors.cli_errors`
(errors become one line and exit 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from omsf2.cli.errors import console


def bench_cmd(
    source: Annotated[
        Path | None, typer.Argument(help="A checkpoint (exported first, into OUT) or an export folder.")
    ] = None,
    backends: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: torch, torch-compile, ort, ort-int8, ort-int8-trt, openvino, openvino-int8, "
            "openvino-bf16, torch-cuda, torch-compile-cuda, ort-cuda, ort-trt, tensorrt (default: every one this "
            "machine can run)."
        ),
    ] = None,
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    img_size: Annotated[
        str | None, typer.Option(help="Square input sizes, comma-separated (default: the exported one).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads per runtime (default: all cores).")] = None,
    warmup_s: Annotated[float, typer.Option(help="Warm-up seconds per backend.")] = 2.0,
    duration_s: Annotated[float, typer.Option(help="Timed seconds per backend (over all rounds).")] = 10.0,
    iters: Annotated[int | None, typer.Option(min=1, help="Timed calls per backend instead of --duration-s.")] = None,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds.")] = 5,
    eval_data: Annotated[
        Path | None, typer.Option(help="Labelled DIR/<class>/* for the accuracy and agreement columns.")
    ] = None,
    calib_data: Annotated[
        Path | None, typer.Option(help="With a checkpoint SOURCE: also export (and bench) the INT8 flavours.")
    ] = None,
    max_drop: Annotated[
        float | None, typer.Option(help="Accuracy points a recommended backend may lose (default: the export gate's).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for results.json/csv/md, plots and exports.")] = Path("runs/bench"),
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw latency / batch PNGs (matplotlib).")] = True,
    check_core: Annotated[
        bool,
        typer.Option(
            "--check-core",
            help="Also time each runtime backend as Predictor.from_bundle(...).run_batch, opened on its own, in the "
            "same rounds: the record shows whether the bench times what ships (within 5 %).",
        ),
    ] = False,
    kernels: Annotated[
        bool, typer.Option("--kernels", help="Run the fused-kernel micro-benchmark instead (no SOURCE).")
    ] = False,
    device: Annotated[str, typer.Option(help="With --kernels: cpu, cuda or auto.")] = "auto",
) -> None:
    """Every backend side by side: latency percentiles, throughput, speed-up, efficiency, accuracy."""
    if kernels:
        if source is not None:
            raise ValueError("--kernels takes no SOURCE")
        _kernels(device, iters or 100, out)
        return
    if source is None:
        raise ValueError("missing SOURCE: a checkpoint (best.pt) or an export folder (or --kernels)")
    import shlex
    import sys

    from omsf2.bench.run import BenchSpec, run_bench
    from omsf2.bench.timing import RoundsPlan

    spec = BenchSpec(
        source=str(source),
        out=str(out),
        backends=backends,  # type: ignore[arg-type]  # parsed and validated by BenchSpec
        batches=batch,  # type: ignore[arg-type]
        img_sizes=img_size,  # type: ignore[arg-type]
        threads=threads,
        plan=RoundsPlan(warmup_s=warmup_s, duration_s=duration_s, iters=iters, rounds=rounds),
        eval_data=None if eval_data is None else str(eval_data),
        calib_data=None if calib_data is None else str(calib_data),
        max_drop=max_drop,
        plot=plot,
        check_core=check_core,
        command=shlex.join(["omsf2", *sys.argv[1:]]),
    )
    res = run_bench(spec, lambda s: console.print(f"[bold]>[/] {escape(s)}", highlight=False))
    print_results(res.record, res.rows)
    console.print(f"wrote {', '.join(p.name for p in res.files)} to {res.out}")


def print_results(record: dict[str, Any], rows: list[Any]) -> None:
    """The bench table, the machine line, the recommendation and the notes."""
    from omsf2.bench.report import TABLE_HEADER, TABLE_LEFT, ceilings_summary, core_lines, table_cells

    fp = record["fingerprint"]
    table = Table(show_header=True, title=f"omsf2 bench: {record['source']}")
    for col in TABLE_HEADER:
        table.add_column(col, justify="left" if col in TABLE_LEFT else "right", overflow="fold")
    for r in rows:
        table.add_row(*(escape(c) for c in table_cells(r)))
    # Fourteen columns: a narrow (or piped, 80-column) terminal gets 150 columns rather than folded cells.
    Console(width=max(console.width, 150)).print(table)
    console.print(
        f"{fp['cpu']}, {fp['cores']} cores, {fp['threads']} threads, ISA {', '.join(fp['isa']) or 'unknown'}; "
        f"ceilings: {ceilings_summary(record)}; eff. = multiply-adds / (p50 x best ceiling)",
        highlight=False,
    )
    for line in core_lines(rows):
        console.print(escape(line), highlight=False)
    for rec in record["recommendation"]:
        console.print(
            f"recommended at batch {rec['batch']}, {rec['img_size']} px: [bold]{rec['backend']}[/] "
            f"({rec['p50_ms']:.2f} ms p50): {escape(rec['why'])}",
            highlight=False,
        )
    for note in record["notes"]:
        console.print(f"note: {escape(note)}", highlight=False)


def _kernels(device: str, iters: int, out: Path) -> None:
    from omsf2.bench.kernels import run_kernel_bench
    from omsf2.fileio import write_json

    record = run_kernel_bench(device, iters)
    table = Table(show_header=True, title=f"omsf2 kernels on {record['device']}")
    for col in ("op", "shape", "implementation", "dtype", "status", "max abs err", "median ms", "x ref"):
        table.add_column(col)
    for r in record["rows"]:
        err_s = "" if r.get("max_abs_err") is None else f"{r['max_abs_err']:.1e}"
        med = "" if r.get("median_ms") is None else f"{r['median_ms']:.4f}"
        sp = "" if r.get("speedup_vs_ref") is None else f"{r['speedup_vs_ref']:.2f}"
        table.add_row(r["op"], r["case"], r["backend"], r["dtype"], r["status"], err_s, med, sp)
    console.print(table)
    for note in record["notes"]:
        console.print(f"note: {escape(note)}", highlight=False)
    path = write_json(out / "kernels.json", record)
    console.print(f"wrote {path}")
    bad = [r for r in record["rows"] if r["status"] in ("MISMATCH", "error")]
    if bad:
        raise ValueError(f"{len(bad)} kernel check(s) failed; see the table")
