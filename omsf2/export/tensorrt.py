"""Strongly typed TensorRT engines from the (Q/DQ, FP16 or FP32) ONNX, with a manifest beside each.

Builds: :func:`build_engine` (TensorRT's ONNX parser), :func:`omsf2.export.trt_dynamo.build_engine_torch_tensorrt`
(Torch-TensorRT's dynamo path). :func:`load_engine` / :func:`run_engine` live in
:mod:`omsf2.runtime.tensorrt_engine` (re-exported).

Precision comes from the graph, never from builder flags: the network is created strongly typed,
so an ``int8`` engine is built from the Q/DQ ONNX (``model.int8.onnx``: explicit quantization),
``fp16`` from an ONNX whose weights and compute are float16 (:func:`to_fp16_onnx`; NVIDIA's
recommended converter is ModelOpt AutoCast) and ``fp32`` from the plain export. ``EngineSpec.precision``
states what the caller expects and is checked against the graph, so a precision can never be
silently downgraded or upgraded. TensorRT 10.1 deprecated the INT8 calibrators and 11.0 removed
them together with ``BuilderFlag.FP16/INT8/...``; none of those are used here.

TensorRT 10.x vs 11.x (branches on ``tensorrt.__version__``; sources: NVIDIA "Migrating from
TensorRT 10.x to 11.x", Python API reference, TensorRT samples):

* network creation: 10.x needs ``1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (weak typing
  is the 10.x default); 11.x is always strongly typed and accepts the flag as a no-op, so it is
  passed when the enum still has it. ``EXPLICIT_BATCH`` is never passed (deprecated in 10.0, where
  implicit batch was removed).
* DLA: NVIDIA's 11.3 docs say 10.7 was the last release with DLA and 11.0-11.3 have none; 11.4.0
  has none for JetPack either; 11.4.1 brings it back for Jetson AGX Orin (JetPack 7.2.2+). JetPack 6
  ships 10.3. A DLA spec on a TensorRT without DLA is refused rather than silently built for the GPU.
  DLA has no dynamic shapes ("min, max, and opt values must be equal"), so DLA specs need a fixed batch.
* Everything else used here (memory pools, timing cache, hardware/version compatibility,
  ``build_serialized_network``, ``set_tensor_address`` / ``execute_async_v3``) is the same API in
  both; 11.x-removed APIs (precision flags, calibrators, ``platform_has_fast_*``,
  ``device_memory_size``) are not used.

Tests: ``test_tensorrt_fake.py`` (omsf2's logic, fake ``tensorrt``), ``test_tensorrt_gpu.py`` (``needs_trt``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omsf2._version import __version__
from omsf2.fileio import atomic_path, sha256_file
from omsf2.runtime.engine_manifest import AMPERE, EngineManifest, TensorInfo, manifest_path, parse_trt_version
from omsf2.runtime.tensorrt_engine import (
    LoadedEngine,
    TensorRTError,
    import_trt,
    load_engine,
    make_logger,
    np_dtype,
    require_gpu,
    run_engine,
    tensorrt_unavailable_reason,
)

__all__ = [
    "PRECISIONS",
    "EngineSpec",
    "LoadedEngine",
    "TensorRTError",
    "build_engine",
    "load_engine",
    "run_engine",
    "tensorrt_unavailable_reason",
    "to_fp16_onnx",
]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
INPUT_NAME = "image"


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class EngineSpec:
    """How to build one engine.

    Attributes:
        batch: (min, opt, max) batch of the optimisation profile; 1 <= min <= opt <= max.
        precision: ``fp32``, ``fp16`` or ``int8``; must match the ONNX's types (int8 = Q/DQ graph).
        workspace_mib: workspace memory-pool limit.
        timing_cache: file to load tactic timings from (if present) and save them to.
        plugin_library: ``libomsf2_plugins.so``; required when the ONNX holds ``omsf2`` custom ops.
        dla_core: build for this DLA core (Jetson Orin; fixed batch; see :func:`dla_supported`); None = GPU.
        gpu_fallback: with ``dla_core``, let layers DLA cannot run fall back to the GPU.
        hardware_compat: ``HardwareCompatibilityLevel.AMPERE_PLUS`` (any GPU of compute capability >= 8.0).
        version_compat: ``BuilderFlag.VERSION_COMPATIBLE`` (loads on the same or a newer TensorRT).
        exclude_lean_runtime: with ``version_compat``, leave the lean runtime out of the plan (the
            target must then provide it); smaller plans, but the plan alone no longer loads.
        builder_optimization_level: 0..5 (TensorRT's default is 3); None = default.
        image_size: (H, W) when the ONNX's spatial dims are dynamic; None = from the ONNX or its
            ``omsf2.preprocess`` metadata.
        input_name: the network input (``image``, NCHW).
    """

    batch: tuple[int, int, int] = (1, 4, 16)
    precision: str = "fp32"
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    plugin_library: Path | None = None
    dla_core: int | None = None
    gpu_fallback: bool = True
    hardware_compat: bool = False
    version_compat: bool = False
    exclude_lean_runtime: bool = False
    builder_optimization_level: int | None = None
    image_size: tuple[int, int] | None = None
    input_name: str = INPUT_NAME

    def __post_init__(self) -> None:
        b = tuple(self.batch)
        if len(b) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in b):
            raise ValueError(f"batch must be three integers (min, opt, max), got {self.batch!r}")
        if not 1 <= b[0] <= b[1] <= b[2]:
            raise ValueError(f"batch must satisfy 1 <= min <= opt <= max, got {b}")
        object.__setattr__(self, "batch", b)
        if self.precision not in PRECISIONS:
            raise ValueError(f"invalid precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if not isinstance(self.workspace_mib, int) or self.workspace_mib < 1:
            raise ValueError(f"workspace_mib must be a positive integer, got {self.workspace_mib!r}")
        for name in ("timing_cache", "plugin_library"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, Path(v))
        if self.dla_core is not None and (not isinstance(self.dla_core, int) or self.dla_core < 0):
            raise ValueError(f"dla_core must be None or a non-negative integer, got {self.dla_core!r}")
        if self.dla_core is not None and self.precision == "fp32":
            raise ValueError("DLA runs fp16 and int8 layers only; choose precision 'fp16' or 'int8' with dla_core")
        if self.dla_core is not None and not b[0] == b[1] == b[2]:
            raise ValueError(f"DLA has no dynamic shapes: give a fixed batch (n, n, n) with dla_core, got {b}")
        if self.dla_core is not None and self.hardware_compat:
            raise ValueError("hardware_compat is not supported for DLA (JetPack) engines; drop one of them")
        if self.exclude_lean_runtime and not self.version_compat:
            raise ValueError("exclude_lean_runtime only applies with version_compat=True")
        lvl = self.builder_optimization_level
        if lvl is not None and (not isinstance(lvl, int) or not 0 <= lvl <= 5):
            raise ValueError(f"builder_optimization_level must be None or 0..5, got {lvl!r}")
        if self.image_size is not None:
            hw = tuple(self.image_size)
            if len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
                raise ValueError(f"image_size must be (H, W) positive integers, got {self.image_size!r}")
            object.__setattr__(self, "image_size", hw)
        if not self.input_name:
            raise ValueError("input_name must not be empty")

    def options(self) -> dict[str, Any]:
        """The build options as JSON types, for the manifest."""
        d = dataclasses.asdict(self)
        d["batch"] = list(self.batch)
        d["timing_cache"] = None if self.timing_cache is None else self.timing_cache.name
        d["plugin_library"] = None if self.plugin_library is None else self.plugin_library.name
        d["image_size"] = None if self.image_size is None else list(self.image_size)
        return d


# --------------------------------------------------------------------------- ONNX facts


@dataclass(frozen=True)
class OnnxFacts:
    """What the build needs to know about an ONNX before TensorRT sees it."""

    inputs: tuple[str, ...]
    image_dims: tuple[int | None, ...]  # (N, C, H, W) of the image input; None where dynamic
    has_qdq: bool
    has_fp16: bool
    qdq_problems: tuple[str, ...]
    custom_ops: frozenset[str]
    metadata: dict[str, str]


def inspect_onnx(path: Path, input_name: str = INPUT_NAME) -> OnnxFacts:
    """Read the graph's input, Q/DQ and float16 content, custom ops and ``omsf2.*`` metadata.

    Raises:
        ValueError: unreadable ONNX, or no 4-D input named ``input_name``.
    """
    import onnx

    from omsf2.export import parser_support

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ValueError(f"cannot read ONNX '{path}': {type(e).__name__}: {str(e).splitlines()[0][:160]}") from e
    inits = {i.name for i in model.graph.initializer}
    inputs = tuple(i.name for i in model.graph.input if i.name not in inits)
    match = [i for i in model.graph.input if i.name == input_name]
    if not match:
        raise ValueError(f"ONNX '{path}' has no input {input_name!r} (inputs: {', '.join(inputs) or 'none'})")
    dims = match[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError(f"ONNX '{path}' input {input_name!r} has rank {len(dims)}; expected 4 (N, C, H, W)")
    image_dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    nodes = list(parser_support.iter_nodes(model))
    qdq_nodes = [n for n in nodes if n.op_type in parser_support.QDQ_OPS and n.domain in ("", "ai.onnx")]
    fp16 = onnx.TensorProto.FLOAT16
    has_fp16 = any(t.data_type == fp16 for t in model.graph.initializer) or any(
        v.type.tensor_type.elem_type == fp16 for v in (*model.graph.input, *model.graph.output, *model.graph.value_info)
    )
    problems = parser_support.qdq_problems(model)
    return OnnxFacts(
        inputs=inputs,
        image_dims=image_dims,
        has_qdq=bool(qdq_nodes),
        has_fp16=has_fp16,
        qdq_problems=tuple(problems),
        custom_ops=frozenset(n.op_type for n in nodes if n.domain == parser_support.OMSF2_DOMAIN),
        metadata={p.key: p.value for p in model.metadata_props if p.key.startswith("omsf2.")},
    )


def check_onnx_for_spec(path: Path, spec: EngineSpec, facts: OnnxFacts) -> tuple[int, int, int]:
    """Refuse a graph whose types disagree with ``spec.precision``; return the fixed (C, H, W).

    Raises:
        ValueError: precision mismatch, non-TensorRT Q/DQ, custom ops without a plugin library,
            or spatial dims that are neither in the ONNX nor given.
    """
    if spec.precision == "int8":
        if not facts.has_qdq:
            raise ValueError(
                f"precision 'int8' needs the Q/DQ ONNX (model.int8.onnx); '{path.name}' has no QuantizeLinear/"
                "DequantizeLinear nodes (strongly typed engines take their precision from the graph)"
            )
        if facts.qdq_problems:
            raise ValueError(
                f"'{path.name}' is not TensorRT's Q/DQ contract (symmetric int8): {facts.qdq_problems[0]}"
                " (model.int8-cpu.onnx is the onnxruntime flavour; build from model.int8.onnx)"
            )
    elif facts.has_qdq:
        raise ValueError(
            f"'{path.name}' holds Q/DQ nodes, so its engine is int8; ask for precision 'int8' (not {spec.precision!r})"
        )
    if spec.precision == "fp16" and not facts.has_fp16:
        raise ValueError(
            f"precision 'fp16' needs an fp16 ONNX; '{path.name}' is float32 (convert it with to_fp16_onnx or "
            "ModelOpt AutoCast; TensorRT 11 has no FP16 builder flag)"
        )
    if spec.precision == "fp32" and facts.has_fp16:
        raise ValueError(f"'{path.name}' holds float16 tensors; ask for precision 'fp16' (not 'fp32')")
    if facts.custom_ops and spec.plugin_library is None:
        raise ValueError(
            f"'{path.name}' holds omsf2 custom ops ({', '.join(sorted(facts.custom_ops))}); "
            "set plugin_library to libomsf2_plugins.so or export with --no-plugins"
        )
    if spec.plugin_library is not None and not spec.plugin_library.is_file():
        raise ValueError(f"plugin library '{spec.plugin_library}' does not exist")
    _, c, h, w = facts.image_dims
    if c is None:
        raise ValueError(f"'{path.name}' has a dynamic channel dimension; export with a fixed C")
    if h is None or w is None:
        size: Any = spec.image_size
        if size is None and "omsf2.preprocess" in facts.metadata:
            size = json.loads(facts.metadata["omsf2.preprocess"]).get("size")
        if not size:
            raise ValueError(f"'{path.name}' has dynamic H and W; set EngineSpec.image_size=(H, W)")
        h, w = int(size[0]), int(size[1])
    return c, h, w


def to_fp16_onnx(src: Path, dst: Path, *, keep_io_types: bool = True) -> Path:
    """Write an fp16 copy of an FP32 ONNX (the way to get fp16 engines from strongly typed networks).

    Uses ModelOpt AutoCast (NVIDIA's recommended converter for TensorRT 11) when installed, else
    onnxruntime's ``transformers.float16`` converter. With ``keep_io_types`` the engine still takes
    and returns float32 (casts at the edges), so callers need not change.

    Raises:
        ValueError: no converter available, or ``src`` unreadable.
    """
    import onnx

    from omsf2.fileio import atomic_path

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ValueError(f"ONNX '{src}' does not exist")
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision

        model = convert_to_mixed_precision(onnx_path=str(src), low_precision_type="fp16", keep_io_types=keep_io_types)
    except ImportError:
        try:
            from onnxruntime.transformers.float16 import convert_float_to_float16
        except ImportError as e:
            raise ValueError("no fp16 converter: install nvidia-modelopt[onnx] or onnxruntime") from e
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=keep_io_types)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return dst


# --------------------------------------------------------------------------- TensorRT plumbing


def _network_flags(trt: Any, major: int) -> int:
    flag_enum = trt.NetworkDefinitionCreationFlag
    if major >= 11:
        # 11.x: strong typing is unconditional; STRONGLY_TYPED is accepted and ignored where it still exists.
        return 1 << int(flag_enum.STRONGLY_TYPED) if hasattr(flag_enum, "STRONGLY_TYPED") else 0
    if not hasattr(flag_enum, "STRONGLY_TYPED"):
        raise TensorRTError(f"TensorRT {trt.__version__} cannot build strongly typed networks; use 10.x or 11.x")
    return 1 << int(flag_enum.STRONGLY_TYPED)


def _parse_errors(parser: Any) -> str:
    errs = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
    if not errs:
        return "no error reported"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return errs[0][:400] + more


def dla_supported(version: str) -> bool:
    """Whether a TensorRT release builds for DLA (10.x up to 10.7, and 11.4.1+), per NVIDIA's DLA docs."""
    v = parse_trt_version(version)
    return (8, 0, 0) <= v < (10, 8, 0) or v >= (11, 4, 1)


def _configure(
    trt: Any, major: int, builder: Any, config: Any, spec: EngineSpec, gpu: tuple[str, tuple[int, int]]
) -> None:
    """Memory pool, optimisation level, compatibility and DLA; deliberately no precision flags."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mib << 20)
    if spec.builder_optimization_level is not None:
        config.builder_optimization_level = spec.builder_optimization_level
    if spec.hardware_compat:
        if tuple(gpu[1]) < AMPERE:
            raise ValueError(
                f"hardware_compat needs an Ampere or newer GPU to build on; this is {gpu[0]} "
                f"(sm_{gpu[1][0]}{gpu[1][1]})"
            )
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if spec.version_compat:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if spec.exclude_lean_runtime:
            config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
        if spec.plugin_library is not None:
            # A version-compatible plan must carry its plugin library (serialized into the plan).
            config.plugins_to_serialize = [str(spec.plugin_library)]
    if spec.dla_core is not None:
        if not dla_supported(trt.__version__):
            raise ValueError(
                f"TensorRT {trt.__version__} has no DLA support (DLA needs TensorRT 10.x up to 10.7, as in "
                "JetPack 6, or 11.4.1+ on JetPack 7.2.2+)"
            )
        if spec.dla_core >= builder.num_DLA_cores:
            raise ValueError(
                f"dla_core {spec.dla_core} does not exist: this device has {builder.num_DLA_cores} DLA core(s)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = spec.dla_core
        if spec.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _load_timing_cache(config: Any, path: Path | None) -> None:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        # A cache from another TensorRT/GPU is useless, not fatal: start from an empty one.
        log.warning("timing cache '%s' does not match this TensorRT/GPU; starting a fresh one", path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _save_timing_cache(config: Any, path: Path | None) -> None:
    if path is None:
        return
    data = bytes(memoryview(config.get_timing_cache().serialize()))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def engine_fields(trt: Any, gpu: tuple[str, Any], out_path: Path, data: bytes, precision: str) -> dict[str, Any]:
    """The manifest fields every engine has, however it was built: file, hash, TensorRT, GPU, precision."""
    return {
        "engine_file": out_path.name,
        "engine_sha256": hashlib.sha256(data).hexdigest(),
        "tensorrt_version": trt.__version__,
        "gpu_name": gpu[0],
        "compute_capability": (int(gpu[1][0]), int(gpu[1][1])),
        "precision": precision,
        "omsf2_version": __version__,
    }


def write_engine(out_path: Path, data: bytes, manifest: EngineManifest) -> Path:
    """Engine and manifest land together or not at all (both atomic; manifest replaced first)."""
    with atomic_path(out_path) as tmp_engine, atomic_path(manifest_path(out_path)) as tmp_manifest:
        tmp_engine.write_bytes(data)
        tmp_manifest.write_text(json.dumps(manifest.to_dict(), indent=2, allow_nan=False) + "\n")
    return out_path


def _report_fields(report: dict[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """(calibration sha256, accuracy numbers) from the export's report.json dict."""
    if not report:
        return None, {}
    int8 = report.get("int8") or {}
    calib = report.get("calibration_sha256") or int8.get("calibration_sha256") or int8.get("calib_sha256")
    acc: dict[str, Any] = {}
    for section in ("onnx_parity", "int8"):
        if isinstance(report.get(section), dict):
            acc[section] = {k: v for k, v in report[section].items() if isinstance(v, (int, float, str, bool))}
    return calib, acc


# --------------------------------------------------------------------------- build


def build_engine(
    onnx_path: Path, spec: EngineSpec, out_path: Path, *, onnx_report: dict[str, Any] | None = None
) -> Path:
    """Parse ``onnx_path`` into a strongly typed network, build, and write the engine and its manifest.

    Args:
        onnx_path: FP32, FP16 (:func:`to_fp16_onnx`) or Q/DQ INT8 ONNX with an ``image`` input.
        spec: build options; ``spec.precision`` must match the graph's types.
        out_path: engine file; the manifest goes to ``<out_path>.json``.
        onnx_report: the export's ``report.json`` dict; its ``calibration_sha256`` (top level or in
            ``int8``) and its ``onnx_parity`` / ``int8`` numbers are copied into the manifest.

    Returns:
        ``out_path``.

    Raises:
        ValueError: bad input (missing file, precision/graph mismatch, parse errors, impossible DLA
            or compatibility options).
        TensorRTError: no TensorRT / GPU here, or TensorRT could not build the network.
    """
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not isinstance(spec, EngineSpec):
        raise TypeError(f"spec must be an EngineSpec, got {type(spec).__name__}")
    if not onnx_path.is_file():
        raise ValueError(f"ONNX '{onnx_path}' does not exist")
    facts = inspect_onnx(onnx_path, spec.input_name)
    chw = check_onnx_for_spec(onnx_path, spec, facts)

    trt = import_trt()
    major, _, _ = parse_trt_version(trt.__version__)
    if major < 10:
        raise TensorRTError(f"omsf2 builds with TensorRT 10.x or 11.x; found {trt.__version__}")
    gpu = require_gpu()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = _parse_network(trt, major, builder, logger, onnx_path, spec)
    tensor, net_shape, profile_shapes = _input_profile(network, onnx_path, spec, chw)
    config = builder.create_builder_config()
    if any(d < 0 for d in net_shape):
        profile = builder.create_optimization_profile()
        profile.set_shape(spec.input_name, min=profile_shapes[0], opt=profile_shapes[1], max=profile_shapes[2])
        config.add_optimization_profile(profile)
    _configure(trt, major, builder, config, spec, gpu)
    _load_timing_cache(config, spec.timing_cache)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        why = logger.errors[-1][:400] if logger.errors else "no error reported"
        raise TensorRTError(
            f"TensorRT {trt.__version__} could not build '{onnx_path.name}' "
            f"(precision {spec.precision}, batch {spec.batch}): {why}"
        )
    build_s = time.perf_counter() - t0
    _save_timing_cache(config, spec.timing_cache)
    data = bytes(memoryview(serialized))

    outputs = []
    for i in range(network.num_outputs):
        t = network.get_output(i)
        outputs.append(TensorInfo(t.name, np_dtype(trt, t.dtype).name, tuple(int(d) for d in t.shape)))
    calib, accuracy = _report_fields(onnx_report)
    manifest = EngineManifest(
        **engine_fields(trt, gpu, out_path, data, spec.precision),
        inputs=(TensorInfo(spec.input_name, np_dtype(trt, tensor.dtype).name, net_shape, profile_shapes),),
        outputs=tuple(outputs),
        onnx_sha256=sha256_file(onnx_path),
        calibration_sha256=calib,
        accuracy=accuracy,
        plugin_library=None if spec.plugin_library is None else spec.plugin_library.name,
        plugin_library_sha256=None if spec.plugin_library is None else sha256_file(spec.plugin_library),
        metadata=facts.metadata,
        build={**spec.options(), "via": "onnx-parser", "strongly_typed": True, "build_seconds": round(build_s, 2)},
    )
    log.info("built %s in %.1f s (%s, batch %s)", out_path, build_s, spec.precision, spec.batch)
    return write_engine(out_path, data, manifest)


def _parse_network(trt: Any, major: int, builder: Any, logger: Any, onnx_path: Path, spec: EngineSpec) -> Any:
    """A strongly typed network parsed from ``onnx_path``, with the plugin library loaded first."""
    plugins = builder.get_plugin_registry()
    if spec.plugin_library is not None and plugins.load_library(str(spec.plugin_library)) is None:
        raise ValueError(f"TensorRT could not load plugin library '{spec.plugin_library}'")
    network = builder.create_network(_network_flags(trt, major))
    parser = trt.OnnxParser(network, logger)
    if spec.dla_core is not None and hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "ADJUST_FOR_DLA"):
        parser.set_flag(trt.OnnxParserFlag.ADJUST_FOR_DLA)  # reshapes layers into forms DLA can run
    if not parser.parse_from_file(str(onnx_path)):
        raise ValueError(f"TensorRT {trt.__version__} cannot parse '{onnx_path.name}': {_parse_errors(parser)}")
    return network


def _input_profile(
    network: Any, onnx_path: Path, spec: EngineSpec, chw: tuple[int, int, int]
) -> tuple[Any, tuple[int, ...], tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(input tensor, its network shape, the min/opt/max profile shapes) for ``spec.batch``."""
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    if spec.input_name not in inputs:
        raise ValueError(f"network has no input {spec.input_name!r} (inputs: {', '.join(inputs)})")
    tensor = inputs[spec.input_name]
    net_shape = tuple(int(d) for d in tensor.shape)
    if net_shape[0] >= 0 and spec.batch != (net_shape[0],) * 3:
        raise ValueError(
            f"'{onnx_path.name}' has a static batch of {net_shape[0]}; batch {spec.batch} needs a dynamic one"
        )
    lo, opt, hi = ((b, *chw) for b in spec.batch)
    return tensor, net_shape, (lo, opt, hi)
