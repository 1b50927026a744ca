"""The export targets as a table, and :func:`run_export`, which the ``omsf2 export`` command calls.

Each :class:`Target` says what file it writes, whether it needs a GPU (TensorRT), its precision,
which other target it is built from, which ``--format`` values and precision flag pick it, and
which stage produces it. The command's flags only pick rows; the rows' dependencies pull in what
they need (an INT8 engine needs the S8S8 Q/DQ ONNX, which needs the FP32 ONNX). Adding a target
is adding a row, not another boolean. :func:`run_export` runs one function per stage
(:data:`STAGES`: ONNX, INT8, engines) for the selected rows.

Labelled images serve two jobs, kept apart (:mod:`omsf2.export.gate_data`): ``--eval-data`` is cut
by patient into a search part, on which mixed precision and NNCF choose, and a gate part, which
judges and which nothing chose on; ``--gate-data`` names a separate gate set instead. Every
engine built is judged on the gate part too, on the GPU that built it
(:mod:`omsf2.export.engine_gate`).

Nothing half-written ever appears in ``OUT``, and an export owns its ``OUT``: the rules are in
:mod:`omsf2.export.outdir`. Targets that need a GPU are checked before any work, so
``--format engine`` on a machine without TensorRT fails at once, saying which ONNX files are
ready and how to build the engine on the target.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omsf2._version import __version__
from omsf2.config import parse_enum
from omsf2.export import evidence
from omsf2.export.calibration import DEFAULT_CALIB_COUNT, MIN_CALIB_IMAGES, CalibMethod, ImageSet
from omsf2.export.gate import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT, GateSpec
from omsf2.export.gate_data import DEFAULT_GATE_FRACTION, GateData
from omsf2.export.onnx import DEFAULT_OPSET
from omsf2.export.outdir import REPORT
from omsf2.export.quantize import Quantizer

log = logging.getLogger(__name__)


class EngineVia(str, enum.Enum):
    """What ``--via`` selects: how an engine is built."""

    ONNX = "onnx"  # TensorRT's ONNX parser on the exported (Q/DQ) ONNX: every precision
    TORCH_TENSORRT = "torch-tensorrt"  # Torch-TensorRT's dynamo path from the checkpoint: fp32 / fp16


class ExportFormat(str, enum.Enum):
    """What ``--format`` selects."""

    ONNX = "onnx"
    ENGINE = "engine"
    ALL = "all"


@dataclasses.dataclass(frozen=True)
class Target:
    """One artifact ``omsf2 export`` can write.

    Attributes:
        name: key in report.json's ``artifacts``.
        kind: ``onnx`` or ``engine``.
        filename: file written in OUT.
        precision: ``fp32``, ``fp16`` or ``int8``.
        needs_gpu: needs TensorRT and a CUDA GPU.
        source: the target this one is built from (None: the checkpoint).
        flavour: INT8 flavour name in :data:`omsf2.export.quantize.FLAVOURS`.
        description: one line for the docs.
        formats: the ``--format`` values that pick this row.
        flag: the precision flag that picks it: ``""`` (none needed), ``"int8"``, ``"fp16"``, or
            ``"plain"`` (picked only when neither ``--int8`` nor ``--fp16`` is given).
        stage: the stage that produces it (:data:`STAGES`).
    """

    name: str
    kind: str
    filename: str
    precision: str
    needs_gpu: bool
    source: str | None
    flavour: str | None
    description: str
    formats: frozenset[ExportFormat]
    flag: str
    stage: str


_ONNX_FORMATS = frozenset({ExportFormat.ONNX, ExportFormat.ALL})
_ENGINE_FORMATS = frozenset({ExportFormat.ENGINE, ExportFormat.ALL})
TARGETS: tuple[Target, ...] = (
    Target("onnx", "onnx", "model.onnx", "fp32", False, None, None, "FP32 ONNX, dynamic batch, metadata",
           _ONNX_FORMATS, "", "onnx"),
    Target("onnx_int8", "onnx", "model.int8.onnx", "int8", False, "onnx", "int8", "S8S8 Q/DQ: the TensorRT contract",
           _ONNX_FORMATS, "int8", "int8"),
    Target("onnx_int8_cpu", "onnx", "model.int8-cpu.onnx", "int8", False, "onnx", "int8_cpu",
           "U8S8 Q/DQ, 7-bit weights, CPU", _ONNX_FORMATS, "int8", "int8"),
    Target("engine_fp32", "engine", "model.fp32.engine", "fp32", True, "onnx", None, "TensorRT FP32 engine",
           _ENGINE_FORMATS, "plain", "engine"),
    Target("engine_fp16", "engine", "model.fp16.engine", "fp16", True, "onnx", None, "TensorRT FP16 engine",
           _ENGINE_FORMATS, "fp16", "engine"),
    Target("engine_int8", "engine", "model.int8.engine", "int8", True, "onnx_int8", None, "strongly typed INT8",
           _ENGINE_FORMATS, "int8", "engine"),
)  # fmt: skip
_BY_NAME = {t.name: t for t in TARGETS}
FP16_ONNX = "model.fp16.onnx"  # written (and shipped) when an FP16 engine is built from the ONNX


def select_targets(fmt: ExportFormat, int8: bool, fp16: bool) -> list[Target]:
    """Rows whose ``formats`` and ``flag`` columns match the flags, plus the rows they are built from.

    Raises:
        ValueError: ``--fp16`` without an engine format.
    """
    fmt = parse_enum(ExportFormat, fmt, "format")
    if fp16 and fmt is ExportFormat.ONNX:
        raise ValueError("--fp16 selects an FP16 TensorRT engine (built from model.onnx); add --format engine or all")
    flags = {"": True, "int8": int8, "fp16": fp16, "plain": not (int8 or fp16)}
    picked = {t.name for t in TARGETS if fmt in t.formats and flags[t.flag]}
    todo = list(picked)
    while todo:
        src = _BY_NAME[todo.pop()].source
        if src and src not in picked:
            picked.add(src)
            todo.append(src)
    return [t for t in TARGETS if t.name in picked]


def parse_batch(text: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """``"1,8,32"`` -> (1, 8, 32), the TensorRT optimisation profile's min, opt and max batch.

    Raises:
        ValueError: not three integers with 1 <= min <= opt <= max.
    """
    try:
        vals = tuple(int(v) for v in (text.split(",") if isinstance(text, str) else text))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not 1 <= vals[0] <= vals[1] <= vals[2]:
        raise ValueError(f"--batch must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got {text!r}")
    return vals[0], vals[1], vals[2]


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """Everything ``omsf2 export`` was asked for (see ``omsf2 export --help``).

    The INT8 gate and output-folder fields, which the command's help states briefly:

    Attributes:
        max_drop: accuracy points (>= 0) an INT8 flavour may lose against FP32.
        min_agreement: least top-1 agreement of an INT8 flavour with FP32, in [0, 1].
        mixed_precision: on a failed gate, keep the most sensitive node groups in float until it passes.
        sensitivity: rank every node group into ``report.json`` even when the gate passes.
        overwrite: export into a non-empty folder that no omsf2 export wrote.
        fail_on_gate: a failed gate is an error (the command); off, the flavours that passed are
            written and the result names the failed ones (the demo).
        gate_data: a labelled ``DIR/<class>/*`` that judges (then all of ``eval_data`` is searched on);
            None: ``gate_fraction`` of ``eval_data``'s patients judge.
        gate_fraction: share of ``eval_data``'s patients (per class) in the gate part, in (0, 1).
        min_group_agreement: least top-1 agreement in every subgroup large enough to judge; None: off.
    """

    checkpoint: str
    out: str
    format: ExportFormat = ExportFormat.ONNX
    int8: bool = False
    fp16: bool = False
    calib_data: str | None = None
    calib_method: CalibMethod = CalibMethod.PERCENTILE
    calib_count: int = DEFAULT_CALIB_COUNT
    eval_data: str | None = None
    max_drop: float = DEFAULT_MAX_DROP
    batch: tuple[int, int, int] = (1, 8, 32)
    opset: int = DEFAULT_OPSET
    plugins: bool = False
    quantizer: Quantizer = Quantizer.ORT
    min_calib: int = MIN_CALIB_IMAGES
    via: EngineVia = EngineVia.ONNX
    plugin_library: str | None = None
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    mixed_precision: bool = True
    sensitivity: bool = False
    overwrite: bool = False
    fail_on_gate: bool = True
    gate_data: str | None = None
    gate_fraction: float = DEFAULT_GATE_FRACTION
    min_group_agreement: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", parse_enum(ExportFormat, self.format, "format"))
        object.__setattr__(self, "calib_method", parse_enum(CalibMethod, self.calib_method, "calibration method"))
        object.__setattr__(self, "quantizer", parse_enum(Quantizer, self.quantizer, "quantizer"))
        object.__setattr__(self, "batch", parse_batch(self.batch))
        object.__setattr__(self, "via", parse_enum(EngineVia, self.via, "--via"))
        engines = self.format is not ExportFormat.ONNX
        GateSpec(self.max_drop, self.min_agreement, self.min_group_agreement)  # validates the bounds
        if not 0 < self.gate_fraction < 1:
            raise ValueError(f"--gate-fraction must lie strictly between 0 and 1, got {self.gate_fraction!r}")
        if self.via is EngineVia.TORCH_TENSORRT and not engines:
            raise ValueError("--via torch-tensorrt builds TensorRT engines; add --format engine or all (or drop --via)")
        if self.sensitivity and not self.int8:
            raise ValueError("--sensitivity ranks the layers INT8 hurts; add --int8")
        if self.sensitivity and self.quantizer is not Quantizer.ORT:
            raise ValueError(
                "--sensitivity (like the mixed-precision search) needs onnxruntime's quantizer: --quantizer ort"
            )
        if self.quantizer is Quantizer.NNCF and engines and self.int8:
            raise ValueError(
                "--quantizer nncf writes the CPU flavour only (NNCF cannot write signed int8 activations); the INT8 "
                "engine is built from the TensorRT contract of --quantizer ort or modelopt"
            )
        if self.via is EngineVia.TORCH_TENSORRT and engines and self.int8:
            raise ValueError(
                "--via torch-tensorrt builds fp32 / fp16 engines; INT8 engines come from the Q/DQ ONNX (--via onnx)"
            )
        if self.plugins and engines and not self.plugin_library:
            raise ValueError(
                "--plugins with an engine format needs --plugin-lib PATH/libomsf2_plugins.so "
                "(built with CMake on the target: omsf2/kernels/cuda/README.md)"
            )
        if self.plugin_library and not Path(self.plugin_library).is_file():
            raise ValueError(f"--plugin-lib {self.plugin_library}: no such file")
        if self.int8 and not self.calib_data:
            raise ValueError("--int8 needs --calib-data DIR (images, ideally DIR/<class>/*) to calibrate on")
        if self.int8 and not self.eval_data:
            raise ValueError(
                "--int8 needs --eval-data DIR/<class>/* (disjoint from --calib-data) for the accuracy gate"
            )
        if self.int8 and self.plugins:
            # Calibrating the expanded custom-op graph fails in onnxruntime's histogram calibrators
            # (Resize shape inference inside the expansion); until fixed, refuse rather than half-work.
            raise ValueError("--plugins with --int8 is not supported yet; export INT8 with --no-plugins")
        if self.calib_count < self.min_calib:
            raise ValueError(f"--calib-count must be at least {self.min_calib}, got {self.calib_count}")
        if engines and not (self.eval_data or self.gate_data):
            raise ValueError(
                "--format engine judges every engine on labelled images on the GPU that builds it: add "
                "--eval-data DIR/<class>/* (or --gate-data DIR)"
            )
        if self.gate_data and not (self.int8 or engines):
            raise ValueError("--gate-data judges INT8 flavours and engines; add --int8 or --format engine|all")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`run_export` wrote: artifact paths by target name, the report, and failed gates.

    ``gate_failed`` names INT8 flavours that failed their gate; it is non-empty only with
    ``ExportSpec.fail_on_gate`` off (the demo), where the export keeps what passed.
    """

    out: Path
    artifacts: dict[str, Path]
    report: dict[str, Any]
    gate_failed: tuple[str, ...] = ()


def _engine_unavailable() -> str | None:
    try:
        from omsf2.export.tensorrt import tensorrt_unavailable_reason
    except ImportError as e:
        return f"the TensorRT build layer is not available ({e})"
    return tensorrt_unavailable_reason()


def _engine_hint(spec: ExportSpec, targets: list[Target], reason: str) -> str:
    out = Path(spec.out)
    ready = [t.filename for t in TARGETS if t.kind == "onnx" and (out / t.filename).is_file()]
    int8 = any(t.precision == "int8" for t in targets)
    have = (
        f"ready in {out}: {', '.join(ready)}"
        if ready
        else (
            f"make the ONNX here first: omsf2 export {spec.checkpoint} --out {out} --format onnx"
            + (" --int8 --calib-data DIR --eval-data DIR" if int8 else "")
        )
    )
    onnx_name = "model.int8.onnx" if int8 else "model.onnx"
    # Strongly typed builds take precision from the graph (TensorRT 11 has no --fp16/--int8 flags):
    # an FP16 engine needs the FP16 ONNX that omsf2 export writes, so trtexec is offered for the others.
    trtexec = (
        "" if spec.fp16 and not int8 else f" or 'trtexec --onnx={onnx_name} --stronglyTyped --saveEngine=model.engine'"
    )
    return (
        f"cannot build TensorRT engines here: {reason}. {have}. On the target GPU run "
        f"'omsf2 export {spec.checkpoint} --format engine{' --int8' if int8 else ''}{' --fp16' if spec.fp16 else ''} "
        f"...'{trtexec}"
    )


@dataclasses.dataclass
class _Run:
    """The state one export carries from stage to stage."""

    spec: ExportSpec
    targets: list[Target]
    stage_dir: Path
    report: dict[str, Any]
    on_stage: Callable[[str], None] | None
    calib: ImageSet | None = None
    evaluation: ImageSet | None = None
    gates: GateData | None = None
    pre: Any = None  # the checkpoint's PreprocessSpec
    engine_gate: Any = None  # omsf2.export.engine_gate.EngineGateSpec, made for the first engine
    produced: dict[str, Path] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    gate_failed: tuple[str, ...] = ()

    def say(self, msg: str) -> None:
        log.info(msg)
        if self.on_stage:
            self.on_stage(msg)


def _stage_onnx(run: _Run) -> None:
    from omsf2.export.onnx import OnnxExportSpec, export_onnx

    spec = run.spec
    labelled = run.evaluation if run.evaluation is not None else run.gates.gate if run.gates else None
    parity_images = labelled.images if labelled is not None else (run.calib.images if run.calib else None)
    run.say(f"exporting {Path(spec.checkpoint).name} to ONNX (opset {spec.opset}{', plugins' if spec.plugins else ''})")
    res = export_onnx(
        OnnxExportSpec(
            spec.checkpoint, str(run.stage_dir / "model.onnx"), spec.opset, spec.plugins, parity_inputs=parity_images
        )
    )
    run.produced["onnx"] = res.path
    run.report["onnx_parity"] = {**res.parity, "data_dir": spec.eval_data or spec.gate_data or spec.calib_data}
    run.report["onnx_nodes"] = res.nodes
    run.timings.update({f"onnx_{k}": v for k, v in res.timings.items()})


def _stage_int8(run: _Run) -> None:
    from omsf2.export.onnx import images_hash
    from omsf2.export.quantize import GateError, QuantizeSpec, quantize_int8

    spec, calib, gates = run.spec, run.calib, run.gates
    if calib is None or gates is None:
        raise ValueError("--int8 needs calibration and evaluation images")
    calib_sha = images_hash(calib.paths)
    method = "nncf (its own ranges)" if spec.quantizer is Quantizer.NNCF else spec.calib_method.value
    run.report["calibration"] = {
        "data_dir": spec.calib_data,
        "count": len(calib),
        "per_class": calib.per_class(),
        "method": method,
        "sha256": calib_sha,
        **evidence.calibration_lineage(calib),  # the folder's listing, the images drawn, their hash
    }
    run.report["calibration_sha256"] = calib_sha  # engine manifests read it from here
    flavours = tuple(t.flavour for t in run.targets if t.flavour)
    run.say(
        f"INT8: calibrating on {len(calib)} images ({method}), searching on {len(gates.search)}, gating on "
        f"{len(gates.gate)} that nothing chose on"
    )
    qspec = QuantizeSpec(
        str(run.produced["onnx"]),
        str(run.stage_dir),
        calib,
        gates.search,
        spec.calib_method,
        spec.max_drop,
        spec.quantizer,
        flavours,
        min_agreement=spec.min_agreement,
        mixed_precision=spec.mixed_precision,
        sensitivity=spec.sensitivity,
        gate_set=gates.gate,
        min_group_agreement=spec.min_group_agreement,
    )
    try:
        q = quantize_int8(qspec)
    except GateError as e:
        if spec.fail_on_gate:
            raise
        q = e.result
        run.gate_failed = q.failed
        run.say(f"INT8 gate failed for {', '.join(q.failed)}: {e}")
    for t in run.targets:
        if t.flavour in q.paths:
            run.produced[t.name] = q.paths[t.flavour]
    run.report.update(q.report)
    if q.sensitivity is not None:
        run.report["sensitivity"] = q.sensitivity
    if q.failed:
        run.report["gate_failed"] = list(q.failed)
    run.timings.update({f"int8_{k}": v for k, v in q.timings.items()})


def _stage_engines(run: _Run) -> None:
    """Build each selected engine in the staging folder, then judge each on the gate images on this GPU."""
    spec = run.spec
    gated: dict[str, dict[str, Any]] = {}
    for t in run.targets:
        if t.stage != "engine":
            continue
        from omsf2.export.tensorrt import EngineSpec, build_engine

        if t.source is None or t.source not in run.produced:
            raise ValueError(f"engine target {t.name} needs {t.source}, which this export did not produce")
        run.say(f"building {t.filename} (TensorRT, {t.precision})")
        te = time.perf_counter()
        engine_spec = EngineSpec(
            batch=spec.batch,
            precision=t.precision,
            plugin_library=Path(spec.plugin_library) if spec.plugin_library else None,
        )
        out = run.stage_dir / t.filename
        if spec.via is EngineVia.TORCH_TENSORRT:
            from omsf2.export.trt_dynamo import build_engine_torch_tensorrt

            run.produced[t.name] = build_engine_torch_tensorrt(Path(spec.checkpoint), engine_spec, out)
        else:
            source = run.produced[t.source]
            if t.precision == "fp16":
                # Strongly typed networks take precision from the graph: an FP16 engine needs
                # an FP16 ONNX (inputs and outputs stay float32).
                from omsf2.export.tensorrt import to_fp16_onnx

                source = to_fp16_onnx(source, run.stage_dir / FP16_ONNX)
            run.produced[t.name] = build_engine(source, engine_spec, out, onnx_report=run.report)
        run.timings[f"{t.name}_s"] = time.perf_counter() - te
        gated[t.name] = _gate_engine(run, t)
    if gated:
        _settle_engines(run, gated)


def _gate_engine(run: _Run, t: Target) -> dict[str, Any]:
    """One staged engine through the runtime on the gate images (:mod:`omsf2.export.engine_gate`)."""
    from omsf2.export.engine_gate import EngineGateSpec, gate_engine
    from omsf2.export.onnx import ort_session, run_session

    if run.gates is None or run.pre is None:
        raise ValueError("--format engine needs gate images (--eval-data or --gate-data)")
    images = run.gates.gate
    if run.engine_gate is None:
        fp32 = run_session(ort_session(run.produced["onnx"]), images.images)[0]
        bounds = GateSpec(run.spec.max_drop, run.spec.min_agreement, run.spec.min_group_agreement)
        run.engine_gate = EngineGateSpec(tuple(images.classes), run.report["task"], run.pre, run.spec.batch, images,
                                         fp32, bounds)  # fmt: skip
    run.say(f"gating {t.filename} on {len(images)} gate images on this GPU (Predictor.run_batch, tensorrt)")
    te = time.perf_counter()
    rec = gate_engine(run.produced[t.name], t.name, t.precision, run.engine_gate)
    run.timings[f"{t.name}_gate_s"] = time.perf_counter() - te
    return rec


def _settle_engines(run: _Run, gated: dict[str, dict[str, Any]]) -> None:
    from omsf2.export.engine_gate import settle

    if (msg := settle(gated, run.produced, run.stage_dir / FP16_ONNX, run.report)) is None:
        return
    if run.spec.fail_on_gate:
        raise ValueError(msg)
    run.gate_failed = (*run.gate_failed, *(n for n, r in gated.items() if not r["passed"]))
    run.report["gate_failed"] = list(run.gate_failed)
    run.say(msg)


STAGES: dict[str, Callable[[_Run], None]] = {"onnx": _stage_onnx, "int8": _stage_int8, "engine": _stage_engines}


def _check_finite_weights(ckpt: dict[str, Any], path: str) -> None:
    import torch

    bad = [k for k, v in ckpt.get("model", {}).items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]  # fmt: skip
    if bad:
        raise ValueError(
            f"checkpoint '{path}' has weights that are not finite (NaN or inf) in {len(bad)} tensor(s), e.g. "
            f"'{bad[0]}'; a diverged run cannot be exported (use an earlier checkpoint)"
        )


def _load_images(
    spec: ExportSpec, pre: Any, classes: list[str], engines: bool
) -> tuple[ImageSet | None, ImageSet | None, GateData | None]:
    """Calibration images, ``--eval-data`` and the search / gate parts (:mod:`omsf2.export.gate_data`)."""
    from omsf2.export.calibration import CalibrationSpec, check_disjoint, load_calibration, load_eval
    from omsf2.export.gate_data import gate_data, judge_only

    calib = evaluation = gate = gates = None
    if spec.int8:
        if spec.calib_data is None or spec.eval_data is None:  # ExportSpec checks this too
            raise ValueError("--int8 needs --calib-data DIR and --eval-data DIR")
        log.info("reading calibration images from %s", spec.calib_data)
        calib = load_calibration(
            CalibrationSpec(spec.calib_data, spec.calib_count, min_count=spec.min_calib), pre, classes
        )
    if spec.eval_data:
        log.info("reading eval images from %s", spec.eval_data)
        evaluation = load_eval(spec.eval_data, pre, classes)
    if spec.gate_data:
        log.info("reading gate images from %s", spec.gate_data)
        gate = load_eval(spec.gate_data, pre, classes)
    if spec.int8 and evaluation is not None:
        gates = gate_data(evaluation, gate, spec.gate_fraction)
    elif engines and (labelled := gate if gate is not None else evaluation) is not None:
        gates = judge_only(labelled, "--gate-data" if gate is not None else "--eval-data")
    for labelled, what in ((evaluation, "--eval-data"), (gate, "--gate-data")):
        if calib is not None and labelled is not None:
            check_disjoint(calib, labelled, what)
    return calib, evaluation, gates


def _preflight(spec: ExportSpec, targets: list[Target]) -> None:
    if any(t.needs_gpu for t in targets) and (reason := _engine_unavailable()):
        raise ValueError(_engine_hint(spec, targets, reason))
    if spec.int8:
        from omsf2.export.quantize import quantizer_unavailable_reason

        if reason := quantizer_unavailable_reason(spec.quantizer):
            raise ValueError(reason)


def run_export(spec: ExportSpec, on_stage: Callable[[str], None] | None = None) -> ExportResult:
    """Export a checkpoint to the targets the spec selects and write ``OUT/report.json``.

    The stages (:data:`STAGES`: ONNX, INT8, engines) run in table order for the selected rows,
    in a staging folder; OUT changes only after all of them and the report succeeded
    (:mod:`omsf2.export.outdir` has the rules for OUT).

    Raises:
        ValueError: bad input (checkpoint, non-finite weights, data, output folder, options), no
            GPU for engine targets, a parity or accuracy-gate failure; OUT is unchanged then.
    """
    from omsf2.export import outdir
    from omsf2.fileio import write_json

    targets = select_targets(spec.format, spec.int8, spec.fp16)
    _preflight(spec, targets)
    out = Path(spec.out)
    outdir.remove_stale_staging(out)
    stale = outdir.previous_files(out, [t.filename for t in TARGETS] + [FP16_ONNX, REPORT], spec.overwrite)
    stage_dir, created = outdir.make_staging(out)  # the output folder is writable before any work
    try:
        with outdir.sigterm_as_interrupt():
            run = _execute(spec, targets, stage_dir, on_stage)
            write_json(stage_dir / REPORT, run.report)
            outdir.commit(stage_dir, out, stale)
    except BaseException:
        outdir.discard(stage_dir, out, created)
        raise
    outdir.discard(stage_dir, out, created=False)
    final = {name: out / path.name for name, path in run.produced.items()}
    return ExportResult(out, final, run.report, run.gate_failed)


def _execute(spec: ExportSpec, targets: list[Target], stage_dir: Path, on_stage: Callable[[str], None] | None) -> _Run:
    """Load and check the inputs, run the stages into ``stage_dir`` and fill in the report."""
    from omsf2.fileio import sha256_file
    from omsf2.models.checkpoint import checkpoint_info, load_checkpoint
    from omsf2.runtime.trace import export_links

    t0 = time.perf_counter()
    ckpt = load_checkpoint(spec.checkpoint)
    _check_finite_weights(ckpt, spec.checkpoint)
    _, classes, task, pre = checkpoint_info(ckpt)
    facts = evidence.checkpoint_facts(ckpt)  # the checkpoint's record of its training, and the software
    del ckpt
    calib, evaluation, gates = _load_images(spec, pre, classes, any(t.needs_gpu for t in targets))
    report: dict[str, Any] = {
        "omsf2_version": __version__,
        "checkpoint": evidence.checkpoint_record(spec.checkpoint),
        "classes": classes,
        # The activation the runtime applies (softmax or a sigmoid per finding): a bundle copies it.
        "task": task.value,
        "preprocess": pre.to_dict(),
        "opset": spec.opset,
        "plugins": spec.plugins,
        "targets": [t.name for t in targets],
        **facts,
    }
    run = _Run(spec, targets, stage_dir, report, on_stage, calib, evaluation, gates, pre)
    if gates is not None:
        report["gate_data"] = gates.record
    if calib is not None:
        run.timings["load_images_s"] = time.perf_counter() - t0
    for name in dict.fromkeys(t.stage for t in targets):
        STAGES[name](run)
    if evaluation is not None:
        report["eval_data"] = {"data_dir": spec.eval_data, "n": len(evaluation), "per_class": evaluation.per_class()}
    report["artifacts"] = {name: {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
                                  "built_from": _BY_NAME[name].source or "checkpoint"}
                           for name, path in run.produced.items()}  # fmt: skip
    # Every file staged ships (the FP16 ONNX an FP16 engine was built from, engine manifests) and is
    # listed, so that the next export into OUT knows what it may remove.
    report["files"] = sorted([*(p.name for p in stage_dir.iterdir() if p.is_file()), REPORT])
    report["trace"] = export_links(report, Path(spec.out).resolve())  # the chain so far (omsf2 trace)
    run.timings["total_s"] = time.perf_counter() - t0
    report["timings"] = run.timings
    return run
