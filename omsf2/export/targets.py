"""The export targets as a table, and :func:`run_export`, which the ``omsf2 export`` command calls.

Each :class:`Target` says what file it writes, whether it needs a GPU (TensorRT), its precision
and which other target it is built from. The command's flags only pick rows (format, ``--int8``,
``--fp16``); the rows' dependencies pull in what they need (an INT8 engine needs the S8S8 Q/DQ
ONNX, which needs the FP32 ONNX). Adding a target is adding a row, not another boolean.

Nothing half-written ever appears in ``OUT``: every artifact is produced in a staging folder
beside it and moved in (``os.replace``, atomic per file) only after the whole export, gate
included, succeeded; ``report.json`` is written last. Targets that need a GPU are checked before
any work, so ``--format engine`` on a machine without TensorRT fails at once, saying which ONNX
files are ready and how to build the engine on the target.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omsf2._version import __version__
from omsf2.config import parse_enum
from omsf2.export.calibration import DEFAULT_CALIB_COUNT, MIN_CALIB_IMAGES
from omsf2.export.onnx import DEFAULT_OPSET
from omsf2.export.quantize import CalibMethod, Quantizer

log = logging.getLogger(__name__)

REPORT = "report.json"


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
    """

    name: str
    kind: str
    filename: str
    precision: str
    needs_gpu: bool
    source: str | None
    flavour: str | None
    description: str


TARGETS: tuple[Target, ...] = (
    Target("onnx", "onnx", "model.onnx", "fp32", False, None, None, "FP32 ONNX, dynamic batch, metadata"),
    Target("onnx_int8", "onnx", "model.int8.onnx", "int8", False, "onnx", "int8", "S8S8 Q/DQ: the TensorRT contract"),
    Target("onnx_int8_cpu", "onnx", "model.int8-cpu.onnx", "int8", False, "onnx", "int8_cpu", "U8S8 Q/DQ, CPU"),
    Target("engine_fp32", "engine", "model.fp32.engine", "fp32", True, "onnx", None, "TensorRT FP32 engine"),
    Target("engine_fp16", "engine", "model.fp16.engine", "fp16", True, "onnx", None, "TensorRT FP16 engine"),
    Target("engine_int8", "engine", "model.int8.engine", "int8", True, "onnx_int8", None, "strongly typed INT8"),
)
_BY_NAME = {t.name: t for t in TARGETS}


def select_targets(fmt: ExportFormat, int8: bool, fp16: bool) -> list[Target]:
    """Rows the flags pick, plus the rows they are built from, in table order.

    Raises:
        ValueError: ``--fp16`` without an engine format.
    """
    fmt = parse_enum(ExportFormat, fmt, "format")
    if fp16 and fmt is ExportFormat.ONNX:
        raise ValueError("--fp16 selects an FP16 TensorRT engine (built from model.onnx); add --format engine or all")
    picked: set[str] = set()
    if fmt in (ExportFormat.ONNX, ExportFormat.ALL):
        picked.add("onnx")
        if int8:
            picked |= {"onnx_int8", "onnx_int8_cpu"}
    if fmt in (ExportFormat.ENGINE, ExportFormat.ALL):
        if int8:
            picked.add("engine_int8")
        if fp16:
            picked.add("engine_fp16")
        if not (int8 or fp16):
            picked.add("engine_fp32")
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
    """Everything ``omsf2 export`` was asked for (see ``omsf2 export --help``)."""

    checkpoint: str
    out: str
    format: ExportFormat = ExportFormat.ONNX
    int8: bool = False
    fp16: bool = False
    calib_data: str | None = None
    calib_method: CalibMethod = CalibMethod.PERCENTILE
    calib_count: int = DEFAULT_CALIB_COUNT
    eval_data: str | None = None
    max_drop: float = 1.0
    batch: tuple[int, int, int] = (1, 8, 32)
    opset: int = DEFAULT_OPSET
    plugins: bool = False
    quantizer: Quantizer = Quantizer.ORT
    min_calib: int = MIN_CALIB_IMAGES
    via: EngineVia = EngineVia.ONNX
    plugin_library: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", parse_enum(ExportFormat, self.format, "format"))
        object.__setattr__(self, "calib_method", parse_enum(CalibMethod, self.calib_method, "calibration method"))
        object.__setattr__(self, "quantizer", parse_enum(Quantizer, self.quantizer, "quantizer"))
        object.__setattr__(self, "batch", parse_batch(self.batch))
        object.__setattr__(self, "via", parse_enum(EngineVia, self.via, "--via"))
        engines = self.format is not ExportFormat.ONNX
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


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`run_export` wrote: artifact paths by target name, and the report."""

    out: Path
    artifacts: dict[str, Path]
    report: dict[str, Any]


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


def _staging(out: Path) -> tuple[Path, bool]:
    """A staging folder beside the artifacts, and whether ``out`` was created here."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".omsf2-export-", dir=out))
    except OSError as e:
        raise ValueError(f"cannot write to output folder '{out}': {e.strerror or e}") from e
    return stage, created


def run_export(spec: ExportSpec, on_stage: Callable[[str], None] | None = None) -> ExportResult:
    """Export a checkpoint to the targets the spec selects and write ``OUT/report.json``.

    Raises:
        ValueError: bad input (checkpoint, data, output folder, options), no GPU for engine
            targets, a parity or accuracy-gate failure; nothing is left in OUT then.
    """
    from omsf2.export.onnx import OnnxExportSpec, export_onnx
    from omsf2.fileio import sha256_file, write_json
    from omsf2.models.checkpoint import checkpoint_info, load_checkpoint

    def stage(msg: str) -> None:
        log.info(msg)
        if on_stage:
            on_stage(msg)

    targets = select_targets(spec.format, spec.int8, spec.fp16)
    if any(t.needs_gpu for t in targets) and (reason := _engine_unavailable()):
        raise ValueError(_engine_hint(spec, targets, reason))
    if spec.quantizer is Quantizer.MODELOPT:
        from omsf2.export.quantize import modelopt_unavailable_reason

        if reason := modelopt_unavailable_reason():
            raise ValueError(reason)
    t0 = time.perf_counter()
    ckpt = load_checkpoint(spec.checkpoint)
    _, classes, _, pre = checkpoint_info(ckpt)
    del ckpt
    out = Path(spec.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output '{out}' exists and is not a folder")
    calib = evaluation = None
    timings: dict[str, float] = {}
    if spec.int8:
        from omsf2.export.calibration import CalibrationSpec, check_disjoint, load_calibration, load_eval

        if spec.calib_data is None or spec.eval_data is None:  # ExportSpec checks this too
            raise ValueError("--int8 needs --calib-data DIR and --eval-data DIR")
        log.info("reading calibration images from %s", spec.calib_data)
        calib = load_calibration(
            CalibrationSpec(spec.calib_data, spec.calib_count, min_count=spec.min_calib), pre, classes
        )
        log.info("reading eval images from %s", spec.eval_data)
        evaluation = load_eval(spec.eval_data, pre, classes)
        check_disjoint(calib, evaluation)
        timings["load_images_s"] = time.perf_counter() - t0
    elif spec.eval_data:
        from omsf2.export.calibration import load_eval

        evaluation = load_eval(spec.eval_data, pre, classes)
    stage_dir, created = _staging(out)
    report: dict[str, Any] = {
        "omsf2_version": __version__,
        "checkpoint": {"path": str(spec.checkpoint), "sha256": sha256_file(spec.checkpoint)},
        "classes": classes,
        "preprocess": pre.to_dict(),
        "opset": spec.opset,
        "plugins": spec.plugins,
        "targets": [t.name for t in targets],
    }
    produced: dict[str, Path] = {}
    try:
        parity_images = evaluation.images if evaluation is not None else (calib.images if calib else None)
        stage(
            f"exporting {Path(spec.checkpoint).name} to ONNX (opset {spec.opset}{', plugins' if spec.plugins else ''})"
        )
        res = export_onnx(
            OnnxExportSpec(
                spec.checkpoint, str(stage_dir / "model.onnx"), spec.opset, spec.plugins, parity_inputs=parity_images
            )
        )
        produced["onnx"] = res.path
        report["onnx_parity"] = {**res.parity, "data_dir": spec.eval_data or spec.calib_data}
        report["onnx_nodes"] = res.nodes
        timings.update({f"onnx_{k}": v for k, v in res.timings.items()})
        if spec.int8:
            from omsf2.export.quantize import QuantizeSpec, quantize_int8

            if calib is None or evaluation is None:
                raise ValueError("--int8 needs calibration and evaluation images")
            flavours = tuple(t.flavour for t in targets if t.flavour)
            stage(f"INT8: calibrating on {len(calib)} images ({spec.calib_method.value}), gating on {len(evaluation)}")
            q = quantize_int8(
                QuantizeSpec(
                    str(res.path),
                    str(stage_dir),
                    calib,
                    evaluation,
                    spec.calib_method,
                    spec.max_drop,
                    spec.quantizer,
                    flavours,
                )
            )
            for t in targets:
                if t.flavour in q.paths:
                    produced[t.name] = q.paths[t.flavour]
            report.update(q.report)
            report["calibration"] = {
                "data_dir": spec.calib_data,
                "count": len(calib),
                "per_class": calib.per_class(),
                "method": spec.calib_method.value,
            }
            timings.update({f"int8_{k}": v for k, v in q.timings.items()})
        if evaluation is not None:
            report["eval_data"] = {
                "data_dir": spec.eval_data,
                "n": len(evaluation),
                "per_class": evaluation.per_class(),
            }
        for t in targets:
            if t.kind != "engine":
                continue
            from omsf2.export.tensorrt import EngineSpec, build_engine

            if t.source is None:
                raise ValueError(f"engine target {t.name} names no ONNX to build from")
            stage(f"building {t.filename} (TensorRT, {t.precision})")
            te = time.perf_counter()
            engine_spec = EngineSpec(
                batch=spec.batch,
                precision=t.precision,
                plugin_library=Path(spec.plugin_library) if spec.plugin_library else None,
            )
            if spec.via is EngineVia.TORCH_TENSORRT:
                from omsf2.export.tensorrt import build_engine_torch_tensorrt

                produced[t.name] = build_engine_torch_tensorrt(
                    Path(spec.checkpoint), engine_spec, stage_dir / t.filename
                )
            else:
                source = produced[t.source]
                if t.precision == "fp16":
                    # Strongly typed networks take precision from the graph: an FP16 engine needs
                    # an FP16 ONNX (inputs and outputs stay float32).
                    from omsf2.export.tensorrt import to_fp16_onnx

                    source = to_fp16_onnx(source, stage_dir / "model.fp16.onnx")
                produced[t.name] = build_engine(source, engine_spec, stage_dir / t.filename, onnx_report=report)
            timings[f"{t.name}_s"] = time.perf_counter() - te
        final: dict[str, Path] = {}
        for name, path in produced.items():
            final[name] = out / path.name
        report["artifacts"] = {
            name: {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
            for name, path in produced.items()
        }
        timings["total_s"] = time.perf_counter() - t0
        report["timings"] = timings
        for path in stage_dir.iterdir():  # engines' manifests travel with them
            if path.is_file():
                os.replace(path, out / path.name)
        write_json(out / REPORT, report)
    except BaseException:
        shutil.rmtree(stage_dir, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty: never delete what someone else put there
        raise
    shutil.rmtree(stage_dir, ignore_errors=True)
    return ExportResult(out, final, report)
