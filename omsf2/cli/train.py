"""``omsf2 train``: parse the options, train (or resume, or cross-validate) through ``omsf2.train``, print.

The options are declared once as ``Annotated`` aliases below so that the command's signature is
one line per option; the command itself reads them back from the click context, which is also
what :func:`omsf2.train.options.config_from_options` builds the frozen config from.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from omsf2.cli.errors import console, err
from omsf2.cli.metrics_view import print_metrics
from omsf2.config import AugName, OptimizerName, ResizeMode, ScheduleName, UncertainPolicy

# Options that may differ when resuming: they do not change what the run computes (device aside,
# whose exactness the resume docs qualify) or only extend it.
RESUME_MAY_CHANGE = {"resume", "epochs", "workers", "out", "device", "overwrite"}
RESUME_MAY_CHANGE |= {"nproc", "resume_any_world", "dist_timeout"}  # how many processes, not what they compute

_O = typer.Option
Data = Annotated[str | None, _O(help="Image folder root/<split>/<class>/*, CheXpert folder or CSV, or 'synthetic'.")]
Out = Annotated[Path, _O(help="Output folder for best.pt, last.pt and metrics.json.")]
Model = Annotated[str, _O(help="Model variant (see 'omsf2 models').")]
Epochs = Annotated[int | None, _O(help="Training epochs (default: the library's).")]
BatchSize = Annotated[int, _O(help="Images per step.")]
ImgSize = Annotated[int | None, _O(help="Square input size, a multiple of 32 (default: the variant's).")]
Resize = Annotated[ResizeMode, _O(help="Fit images by letterbox (keep aspect) or stretch.")]
InChans = Annotated[int, _O(help="Input channels, 1 or 3.")]
Optim = Annotated[OptimizerName, _O(help="Optimizer.")]
Lr = Annotated[float, _O(help="Peak learning rate.")]
WeightDecay = Annotated[float, _O(help="Weight decay.")]
Schedule = Annotated[ScheduleName, _O(help="LR schedule after warm-up.")]
Warmup = Annotated[float, _O(help="Linear warm-up length in epochs.")]
Smoothing = Annotated[float, _O(help="Cross-entropy label smoothing.")]
Balanced = Annotated[bool, _O("--balanced/--no-balanced", help="Class-balanced sampling.")]
AttnAug = Annotated[list[AugName] | None, _O("--attention-aug", help="Attention-guided views (repeat; default all).")]
NoAttnAug = Annotated[bool, _O("--no-attention-aug", help="Disable attention-guided views.")]
AttnProb = Annotated[float, _O(help="Probability per step of one attention-guided view.")]
SoftDistance = Annotated[float, _O(help="Weight of the MAG-SD soft distance.")]
CenterLoss = Annotated[float, _O(help="Weight of the centre loss (0 = off).")]
NoBap = Annotated[bool, _O("--no-bap", help="Build the model without the BAP branch.")]
Amp = Annotated[bool, _O("--amp/--no-amp", help="Mixed precision on CUDA.")]
ClipGrad = Annotated[float, _O(help="Max gradient norm (0 = off).")]
Patience = Annotated[int, _O(help="Early stopping patience in epochs (0 = off).")]
Seed = Annotated[int, _O(help="Random seed.")]
Device = Annotated[str | None, _O(help="cpu, cuda or cuda:N (default: CUDA when present, else CPU).")]
Workers = Annotated[int | None, _O(help="Data-loading processes (default: the library's).")]
SyntheticN = Annotated[int, _O(help="Train phantoms with --data synthetic.")]
Uncertain = Annotated[UncertainPolicy, _O(help="CheXpert uncertain-label policy.")]
ValFraction = Annotated[float, _O(help="Share of patients for val when the data has no val split.")]
CkptEvery = Annotated[int, _O(help="Also save last.pt every N steps (0 = epoch ends).")]
Init = Annotated[Path | None, _O(help="Local weights to start from (omsf2 checkpoint or ResNet state dict).")]
Resume = Annotated[Path | None, _O(help="Continue a run exactly from its last.pt (its saved settings apply).")]
Overwrite = Annotated[bool, _O("--overwrite", help="Replace another run's best.pt, last.pt and metrics.json in OUT.")]
Nproc = Annotated[int | None, _O(help="Processes on this node, through torchrun (DDP).")]
SyncBn = Annotated[bool, _O("--sync-bn", help="BatchNorm over the global batch (DDP).")]
AnyWorld = Annotated[bool, _O("--resume-any-world", help="Resume with another number of processes (not exact).")]
DistTimeout = Annotated[float, _O(help="Seconds a process waits for the others before failing.")]
Ema = Annotated[
    bool | None, _O("--ema/--no-ema", help="Validate and save a moving average of the weights (default: on).")
]
EmaDecay = Annotated[
    float | None, _O(help="Decay of that average after its warm-up (default: tied to the run's length).")
]
PreciseBn = Annotated[
    int | None,
    _O(help="Recompute the validated weights' BatchNorm statistics on N un-augmented train images (0 = off)."),
]
SelectFraction = Annotated[
    float | None, _O(help="Share of train patients held out to choose best.pt on (0 = choose on val).")
]
Folds = Annotated[
    int | None, _O(help="Patient-level k-fold cross-validation: K runs in OUT/fold-<i>, summary in OUT/cv.json.")
]
Qat = Annotated[
    bool,
    _O(
        "--qat",
        help="Quantization-aware fine-tuning of the --init weights for export --int8 "
        "(recipe: --lr 1e-4 --epochs 5 --warmup-epochs 0).",
    ),
]


def train_cmd(
    ctx: typer.Context,
    data: Data = None,
    out: Out = Path("runs/train"),
    model: Model = "omsf2_tiny",
    epochs: Epochs = None,
    batch_size: BatchSize = 32,
    img_size: ImgSize = None,
    resize: Resize = ResizeMode.LETTERBOX,
    in_chans: InChans = 1,
    optimizer: Optim = OptimizerName.ADAMW,
    lr: Lr = 2e-3,
    weight_decay: WeightDecay = 0.05,
    schedule: Schedule = ScheduleName.COSINE,
    warmup_epochs: Warmup = 1.0,
    label_smoothing: Smoothing = 0.05,
    balanced: Balanced = False,
    attention_aug: AttnAug = None,
    no_attention_aug: NoAttnAug = False,
    attention_prob: AttnProb = 0.5,
    soft_distance: SoftDistance = 1.0,
    center_loss: CenterLoss = 0.0,
    no_bap: NoBap = False,
    amp: Amp = True,
    clip_grad: ClipGrad = 5.0,
    patience: Patience = 0,
    seed: Seed = 0,
    device: Device = None,
    workers: Workers = None,
    synthetic_n: SyntheticN = 1600,
    uncertain: Uncertain = UncertainPolicy.ONES,
    val_fraction: ValFraction = 0.2,
    ckpt_every: CkptEvery = 0,
    init: Init = None,
    resume: Resume = None,
    overwrite: Overwrite = False,
    nproc: Nproc = None,
    sync_bn: SyncBn = False,
    resume_any_world: AnyWorld = False,
    dist_timeout: DistTimeout = 300.0,
    ema: Ema = None,
    ema_decay: EmaDecay = None,
    precise_bn: PreciseBn = None,
    select_fraction: SelectFraction = None,
    folds: Folds = None,
    qat: Qat = False,
) -> None:
    """Train an OMSF2 model; writes OUT/best.pt, OUT/last.pt and OUT/metrics.json."""
    _run(ctx)


def _run(ctx: typer.Context) -> None:
    """The command's work, from the parsed options in ``ctx.params``."""
    from omsf2.cli.progress import RichReporter
    from omsf2.train import distributed as ddp
    from omsf2.train.reporter import LogReporter

    p = ctx.params
    if p["folds"] is not None and p["nproc"] is not None:
        raise ValueError("--folds runs its folds one after the other in one process; drop --nproc")
    if p["nproc"] is not None:  # re-run this command line in N processes under torch.distributed.run
        raise typer.Exit(ddp.launch_cli(p["nproc"], sys.argv[1:]))
    world = ddp.world_from_env()  # under torchrun only rank 0 reports
    # Options typed on the command line (typer vendors click: compare the source by name).
    given = {n for n in p if getattr(ctx.get_parameter_source(n), "name", "") == "COMMANDLINE"}
    if p["resume"] is not None:
        fixed = sorted(given - RESUME_MAY_CHANGE)
        if fixed:
            opts = ", ".join("--" + n.replace("_", "-") for n in fixed)
            raise ValueError(f"--resume continues the saved run with its own settings; drop {opts}")
    else:
        from omsf2.train.options import config_from_options

        cfg = config_from_options(p)  # checked before anything starts
    with RichReporter(console) if world.is_main else contextlib.nullcontext(LogReporter()) as rep:
        if p["resume"] is not None:
            from omsf2.train import resume as resume_run

            out_dir = p["out"] if "out" in given else None
            may_change = ("epochs", "device", "workers", "overwrite", "resume_any_world", "dist_timeout")
            result = resume_run(p["resume"], out_dir, rep, *(p[k] for k in may_change))
        elif p["folds"] is not None:
            from omsf2.train.cv import cross_validate

            return _report_cv(cross_validate(cfg, p["out"], p["folds"], rep, p["overwrite"]))
        else:
            from omsf2.train import train as train_run

            dist = {"dist_timeout_s": p["dist_timeout"]} if world.distributed else {}  # only matters with several
            result = train_run(cfg, p["out"], rep, p["overwrite"], **dist)
    _report(result, world.is_main)


def _report(result: Any, is_main: bool) -> None:
    if result.interrupted:
        hint = shlex.quote(str(result.out_dir / "last.pt"))
        msg = f"interrupted; state saved: resume with  omsf2 train --resume {hint}" if is_main else ""
        err.print(msg, highlight=False, markup=False, end="\n" if msg else "")
        raise typer.Exit(130)
    if not is_main:
        return
    chosen = "val" if result.selected_on == "val" else f"chosen on the {result.selected_on} set; val shown"
    print_metrics(result.best, f"best epoch {result.best_epoch} ({chosen})")
    console.print(f"wrote {result.out_dir / 'best.pt'}, last.pt, metrics.json  ({result.wall_s:.0f}s)")


def _report_cv(cv: Any) -> None:
    if cv.interrupted:
        where = cv.folds[-1].out_dir / "last.pt"
        err.print(
            f"interrupted; state saved in {where}: run the same command again to continue",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(130)
    table = Table(title=f"{cv.summary['folds']}-fold cross-validation (mean ± std over folds)", show_header=True)
    for col in ("metric", "held-out folds", "val"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    held, val = cv.summary["held_out"], cv.summary["val"]
    for k in dict.fromkeys([*held, *val]):
        cells = [f"{d[k]['mean']:.4f} ± {d[k]['std']:.4f}" if k in d else "-" for d in (held, val)]
        table.add_row(escape(k), *cells)
    console.print(table)
    console.print(f"wrote {cv.out_dir / 'cv.json'}, cv.md and fold-<i>/ (best.pt, last.pt, metrics.json)")
