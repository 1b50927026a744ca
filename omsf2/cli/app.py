"""``omsf2`` command line: each command parses, calls one library function and prints.

Exit codes, one rule: a usage error found by the command-line parser (an unknown command or
option, a value of the wrong type, a choice or range the option declares) exits 2 with Typer's
usage box, as in every Click program; every error found after parsing (a bad value, path, file
or data) is one ``error:`` line on stderr and exit 1, here and only here; Ctrl-C exits 130 after
the library has saved what it could. With ``-v`` an error also prints its traceback, and the
libraries' own log output (pydicom, torch, ...) reaches the terminal only with ``-v``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from omsf2._version import __version__
from omsf2.cli.bench import bench_cmd
from omsf2.cli.bundle import bundle_cmd
from omsf2.cli.errors import VERBOSE, OwnRecordsOnly, cli_errors, console, err, fail
from omsf2.cli.export_report import print_export
from omsf2.cli.metrics_view import print_metrics
from omsf2.cli.predict import predict_cmd
from omsf2.cli.serve import make_serve_app
from omsf2.cli.trace import trace_cmd
from omsf2.cli.train import train_cmd
from omsf2.config import (
    KernelBackend,
    KernelDType,
    Split,
)
from omsf2.export.calibration import DEFAULT_CALIB_COUNT
from omsf2.export.gate import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT
from omsf2.export.gate_data import DEFAULT_GATE_FRACTION
from omsf2.export.onnx import OPSETS
from omsf2.export.quantize import CalibMethod, Quantizer
from omsf2.export.targets import EngineVia, ExportFormat

EXIT_CODES = (
    "Exit codes: 0 success; 1 an error, reported in one line; 2 a usage error (unknown command or option, "
    "a value of the wrong type or outside its choices), shown with the usage; 130 interrupted."
)

app = typer.Typer(
    name="omsf2",
    help="OMSF2: stage pneumoconiosis on chest radiographs, from training to deployable artifacts.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: write the synthetic phantom dataset.", no_args_is_help=True)
kernels_app = typer.Typer(help="Fused kernels: check each backend against the reference.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"omsf2 {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """OMSF2: stage pneumoconiosis on chest radiographs, from training to deployable artifacts."""
    VERBOSE["on"] = verbose
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(OwnRecordsOnly())
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "omsf2_cli", False)]:
        root.removeHandler(h)  # an earlier invocation's, in the same process (tests)
    handler.omsf2_cli = True  # type: ignore[attr-defined]
    if not any(not getattr(h, "omsf2_cli", False) for h in root.handlers):
        root.addHandler(handler)  # someone else's handlers (pytest's) keep the records otherwise
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.captureWarnings(not verbose)  # library warnings become (filtered) log records


app.command("train")(cli_errors(train_cmd))


@app.command("eval")
@cli_errors
def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="An omsf2 checkpoint (best.pt).")],
    data: Annotated[str | None, typer.Option(help="Data root (default: the one recorded in the checkpoint).")] = None,
    split: Annotated[Split, typer.Option(help="Split to evaluate.")] = Split.VAL,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Metrics JSON (default: CKPT_DIR/eval-SPLIT.json).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda or cuda:N (default: CUDA when present, else CPU).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Data-loading processes (default: the library's).")] = None,
) -> None:
    """Evaluate a checkpoint on a split: print metrics, write JSON and a confusion-matrix PNG."""
    from rich.progress import Progress

    from omsf2.evaluate import EvalSpec, evaluate_checkpoint

    with Progress(console=console, transient=True) as prog:
        tasks: dict[str, Any] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = prog.add_task(phase, total=total)
            prog.update(tasks[phase], completed=done)

        given: dict[str, Any] = {k: v for k, v in {"device": device, "workers": workers}.items() if v is not None}
        json_file = None if json_path is None else str(json_path)
        spec = EvalSpec(str(checkpoint), data, split.value, json_file, batch_size, **given)
        res = evaluate_checkpoint(spec, on_progress)
    print_metrics(res.metrics, f"{res.metrics['model']} on {res.metrics['data']}")
    console.print(f"wrote {res.json_path}" + (f" and {res.png_path}" if res.png_path else ""))


@app.command()
@cli_errors
def models() -> None:
    """List the model variants with parameters and GFLOPs at their default input size."""
    from omsf2.models.summary import model_summaries

    table = Table(show_header=True)
    for col in ("model", "params (M)", "input", "GFLOPs", "description"):
        table.add_column(col, justify="left" if col in ("model", "description") else "right")
    for s in model_summaries():
        table.add_row(s.name, f"{s.params / 1e6:.2f}", f"{s.img_size}", f"{s.gflops:.2f}", s.description)
    console.print(table)
    console.print("GFLOPs: multiply-adds x 2 of one 1-channel image, counted by torch's FlopCounterMode.")


@data_app.command("synth")
@cli_errors
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to create: OUT/<split>/<stage>/*.png and labels.csv.")],
    n: Annotated[int, typer.Option(help="Train phantoms (val and test get a quarter each, at least 4).")] = 1600,
    seed: Annotated[int, typer.Option(help="Dataset seed.")] = 0,
    size: Annotated[int, typer.Option(help="Image size in pixels.")] = 256,
    n_val: Annotated[
        int | None, typer.Option(help="Val phantoms, 0 for no val folder (default: a quarter of N).")
    ] = None,
    n_test: Annotated[
        int | None, typer.Option(help="Test phantoms, 0 for no test folder (default: a quarter of N).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Generating processes.")] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier phantom dataset (never other files).")] = False,
) -> None:
    """Write the synthetic pneumoconiosis phantom dataset as an image folder."""
    from rich.progress import Progress

    from omsf2.data.synthetic import dataset_counts, write_dataset

    total = sum(dataset_counts(n, n_val, n_test, size).values())  # also checks the settings before any work
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("phantoms", total=total)
        counts = write_dataset(out, n, seed, size, n_val, n_test, workers, overwrite, lambda: prog.advance(task))
    console.print(
        f"wrote {sum(counts.values())} phantoms to {out} ({', '.join(f'{k} {v}' for k, v in counts.items())})"
    )


@app.command()
@cli_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the dataset and the run.")] = Path("runs/demo"),
    n: Annotated[int, typer.Option(help="Train phantoms.")] = 1600,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    workers: Annotated[int, typer.Option(help="Processes for data generation and loading.")] = 2,
) -> None:
    """End-to-end on the embedded phantoms: generate, train omsf2_tiny, evaluate on val and test, export."""
    from rich.progress import Progress

    from omsf2.cli.progress import RichReporter
    from omsf2.data.synthetic import dataset_counts
    from omsf2.demo import DemoSpec, run_demo

    spec = DemoSpec(out=str(out), n=n, epochs=epochs, seed=seed, workers=workers)
    total = sum(dataset_counts(spec.n, size=spec.size).values())
    with RichReporter(console) as rep:
        prog: Progress = rep.progress
        holder: dict[str, Any] = {}

        def on_image() -> None:
            if "t" not in holder:
                holder["t"] = prog.add_task("phantoms", total=total, extra="")
            prog.advance(holder["t"])

        res = run_demo(spec, rep, lambda s: console.print(f"[bold]>[/] {s}"), on_image)
    print_metrics(res.val, "val split (model selection)")
    print_metrics(res.test, "test split (held out)")
    if res.export is not None:
        print_export(res.export)
    if isinstance(res.bench, str):
        console.print(f"short bench not finished: {escape(res.bench)}", highlight=False)
    elif res.bench is not None:
        from omsf2.cli.bench import print_results

        print_results(res.bench.record, res.bench.rows)
    t = res.timings
    console.print(
        f"data {t['data_s']:.0f}s, train {t['train_s']:.0f}s, eval {t['eval_s']:.0f}s, "
        f"export {t.get('export_s', 0):.0f}s, bench {t.get('bench_s', 0):.0f}s, total {t['total_s']:.0f}s; "
        f"run in {res.run_dir}"
    )


@kernels_app.command("check")
@cli_errors
def kernels_check(
    device: Annotated[
        str, typer.Option(help="auto, cpu or cuda[:index] (auto: CUDA when present, else CPU).")
    ] = "auto",
    backend: Annotated[
        list[KernelBackend] | None, typer.Option("--backend", "-b", help="Backend (repeatable; default: all).")
    ] = None,
    dtype: Annotated[
        list[KernelDType] | None,
        typer.Option("--dtype", help="Data type (repeatable; default: fp32 on CPU, all on CUDA)."),
    ] = None,
    interpret: Annotated[
        bool, typer.Option(help="Run Triton in its CPU interpreter (sets TRITON_INTERPRET=1; correctness only).")
    ] = False,
    timing: Annotated[bool, typer.Option(help="Time backends where it means something (GPU; CPU reference).")] = True,
    iters: Annotated[int, typer.Option(min=1, help="Timed iterations per row.")] = 100,
) -> None:
    """Compare each op on each backend with the reference: max abs error, and on a GPU time and GB/s."""
    if interpret:
        # Triton reads this once, when first imported; nothing has imported it yet in this process.
        os.environ["TRITON_INTERPRET"] = "1"
    from omsf2.kernels.check import check_kernels
    from omsf2.kernels.ops import env_backend

    env_backend()  # a bad OMSF2_KERNELS fails here, before the table starts
    dev = device
    if device == "auto":
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
    table = Table(show_header=True, title=f"omsf2 kernels on {dev}")
    for col in ("op", "shape", "backend", "dtype", "status", "max abs err", "median ms", "p90 ms", "GB/s", "% peak"):
        table.add_column(col, justify="left" if col in ("op", "shape", "backend", "dtype", "status") else "right")
    notes: list[str] = []

    def show(r: Any) -> None:
        err_s = "" if r.max_abs_err is None else f"{r.max_abs_err:.2e}"
        med = "" if r.median_ms is None else f"{r.median_ms:.4f}"
        p90 = "" if r.p90_ms is None else f"{r.p90_ms:.4f}"
        gbs = "" if r.gb_per_s is None else f"{r.gb_per_s:.0f}"
        pct = "" if r.gb_per_s is None or not r.peak_gb_per_s else f"{100 * r.gb_per_s / r.peak_gb_per_s:.0f}%"
        status = r.status if not r.detail else f"{r.status}"
        if r.detail and r.detail not in notes:
            notes.append(f"{r.backend}: {r.detail}")
        table.add_row(r.op, r.case, r.backend, r.dtype, status, err_s, med, p90, gbs, pct)

    backends = None if not backend else [b.value for b in backend]
    dtypes = None if not dtype else [d.value for d in dtype]
    rows = check_kernels(dev, backends=backends, dtypes=dtypes, timing=timing, iters=iters, on_row=show)
    console.print(table)
    for note in dict.fromkeys(notes):
        console.print(f"note: {escape(note)}", highlight=False)
    if dev.startswith("cpu"):
        console.print(
            "CPU: the reference is timed; Triton (interpreter) is checked for correctness only, never timed.",
            highlight=False,
        )
    bad = [r for r in rows if r.status in ("MISMATCH", "error")]
    if bad:
        raise fail(f"{len(bad)} kernel check(s) failed: " + "; ".join(f"{r.op}/{r.backend}/{r.dtype}" for r in bad))


# The options of ``omsf2 export``, one alias each, so the command's signature stays one line per option.
_CheckpointOpt = Annotated[Path, typer.Argument(help="An omsf2 checkpoint (best.pt).")]
_OutOpt = Annotated[Path, typer.Option(help="Output folder for the artifacts and report.json.")]
_FormatOpt = Annotated[ExportFormat, typer.Option(help="onnx, engine or all (engines need a GPU).")]
_Int8Opt = Annotated[bool, typer.Option("--int8", help="Also write the INT8 Q/DQ ONNX flavours (gated).")]
_Fp16Opt = Annotated[bool, typer.Option("--fp16", help="Build an FP16 TensorRT engine.")]
_CalibDataOpt = Annotated[Path | None, typer.Option(help="Calibration images: DIR/<class>/* or DIR/*.")]
_CalibMethodOpt = Annotated[CalibMethod, typer.Option(help="Activation-range method.")]
_CalibCountOpt = Annotated[int, typer.Option(help="Calibration images, stratified by class (>= 64).")]
_EvalDataOpt = Annotated[
    Path | None,
    typer.Option(
        help="Labelled DIR/<class>/*: parity, and split by patient into the INT8 search part and the gate part."
    ),
]
_GateDataOpt = Annotated[
    Path | None,
    typer.Option(help="Labelled DIR/<class>/* that judges instead (then all of --eval-data is searched on)."),
]
_GateFractionOpt = Annotated[float, typer.Option(help="Share of --eval-data's patients (per class) in the gate part.")]
_MaxDropOpt = Annotated[float, typer.Option(help="Accuracy points (>= 0) an INT8 flavour may lose vs FP32 ONNX.")]
_MinAgreementOpt = Annotated[
    float, typer.Option(help="Least top-1 agreement of an INT8 flavour (or engine) with FP32.")
]
_MinGroupAgreementOpt = Annotated[
    float | None,
    typer.Option(help="Least top-1 agreement in every subgroup large enough to judge (default: not gated)."),
]
_MixedPrecisionOpt = Annotated[
    bool,
    typer.Option(
        "--mixed-precision/--no-mixed-precision",
        help="On a failed INT8 gate, keep the most sensitive layers in float until it passes.",
    ),
]
_SensitivityOpt = Annotated[
    bool, typer.Option("--sensitivity", help="Rank the layers by what INT8 costs each (report.json).")
]
_OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Export into a non-empty folder that no omsf2 export wrote.")
]
_BatchOpt = Annotated[str, typer.Option(help="TensorRT profile batch sizes MIN,OPT,MAX.")]
_OpsetOpt = Annotated[int, typer.Option(min=OPSETS.start, max=OPSETS.stop - 1, help="ONNX opset (19-23).")]
_PluginsOpt = Annotated[
    bool, typer.Option("--plugins/--no-plugins", help="Fused neck ops as omsf2 custom ops (TensorRT plugins).")
]
_QuantizerOpt = Annotated[
    Quantizer,
    typer.Option(
        help="ort (onnxruntime), modelopt (own environment), or nncf (CPU flavour only, NNCF's accuracy control)."
    ),
]
_ViaOpt = Annotated[
    EngineVia, typer.Option(help="Engines from the ONNX (TensorRT's parser) or torch-tensorrt (fp32/fp16).")
]
_PluginLibOpt = Annotated[Path | None, typer.Option(help="libomsf2_plugins.so for engines built with --plugins.")]


@app.command()
@cli_errors
def export(
    checkpoint: _CheckpointOpt,
    out: _OutOpt,
    format: _FormatOpt = ExportFormat.ONNX,
    int8: _Int8Opt = False,
    fp16: _Fp16Opt = False,
    calib_data: _CalibDataOpt = None,
    calib_method: _CalibMethodOpt = CalibMethod.PERCENTILE,
    calib_count: _CalibCountOpt = DEFAULT_CALIB_COUNT,
    eval_data: _EvalDataOpt = None,
    gate_data: _GateDataOpt = None,
    gate_fraction: _GateFractionOpt = DEFAULT_GATE_FRACTION,
    max_drop: _MaxDropOpt = DEFAULT_MAX_DROP,
    min_agreement: _MinAgreementOpt = DEFAULT_MIN_AGREEMENT,
    min_group_agreement: _MinGroupAgreementOpt = None,
    mixed_precision: _MixedPrecisionOpt = True,
    sensitivity: _SensitivityOpt = False,
    overwrite: _OverwriteOpt = False,
    batch: _BatchOpt = "1,8,32",
    opset: _OpsetOpt = 19,
    plugins: _PluginsOpt = False,
    quantizer: _QuantizerOpt = Quantizer.ORT,
    via: _ViaOpt = EngineVia.ONNX,
    plugin_lib: _PluginLibOpt = None,
) -> None:
    """Export a checkpoint: ONNX, INT8 Q/DQ ONNX (calibrated, accuracy-gated), TensorRT engines."""
    from omsf2.export.targets import ExportSpec, run_export

    spec = ExportSpec(
        checkpoint=str(checkpoint),
        out=str(out),
        format=format,
        int8=int8,
        fp16=fp16,
        calib_data=None if calib_data is None else str(calib_data),
        calib_method=calib_method,
        calib_count=calib_count,
        eval_data=None if eval_data is None else str(eval_data),
        max_drop=max_drop,
        batch=batch,  # type: ignore[arg-type]  # parsed and validated by ExportSpec
        opset=opset,
        plugins=plugins,
        quantizer=quantizer,
        via=via,
        plugin_library=None if plugin_lib is None else str(plugin_lib),
        min_agreement=min_agreement,
        mixed_precision=mixed_precision,
        sensitivity=sensitivity,
        overwrite=overwrite,
        gate_data=None if gate_data is None else str(gate_data),
        gate_fraction=gate_fraction,
        min_group_agreement=min_group_agreement,
    )
    res = run_export(spec, lambda s: console.print(f"[bold]>[/] {s}"))
    print_export(res.report)
    console.print(f"wrote {', '.join(sorted(p.name for p in res.artifacts.values()))} and report.json to {res.out}")


@app.command()
@cli_errors
def info() -> None:
    """Show versions, devices and which optional stacks are installed (works without torch)."""
    from omsf2.info import environment

    table = Table(show_header=False)
    for k, v in environment().items():
        table.add_row(escape(k), escape(str(v)))
    console.print(table)


@app.command()
@cli_errors
def keygen(
    out: Annotated[Path, typer.Option(help="Key pair prefix: writes PREFIX.key (private, mode 0600) and PREFIX.pub.")],
) -> None:
    """Make an Ed25519 key pair to sign bundles with (omsf2 bundle --sign) and trust them by (--trust)."""
    from omsf2.runtime.trust import generate_keypair, key_id, load_public_key

    key, pub = generate_keypair(out)
    console.print(f"wrote {key} (private: keep it off the machines that run bundles) and {pub}", highlight=False)
    console.print(f"key id {key_id(load_public_key(pub))}", highlight=False)


# -- registration: sub-apps and command modules, one line each ----------------------------------
# Commands defined above register with @app.command(); command groups and commands that live in
# their own module (omsf2/cli/<name>.py) are added here.
app.add_typer(data_app, name="data")
app.add_typer(kernels_app, name="kernels")
app.command("predict")(cli_errors(predict_cmd))
app.command("bundle")(cli_errors(bundle_cmd))
app.command("trace")(cli_errors(trace_cmd))
app.add_typer(make_serve_app(cli_errors), name="serve")
app.command("bench")(cli_errors(bench_cmd))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
