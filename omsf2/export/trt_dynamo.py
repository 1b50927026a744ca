"""Engines built by Torch-TensorRT's dynamo path (``omsf2 export --via torch-tensorrt``), with a manifest.

The ONNX parser path (:func:`omsf2.export.tensorrt.build_engine`) is the default; this one traces the
checkpoint with ``torch.export`` and lets Torch-TensorRT compile it. fp32 and fp16 only.

Tests: ``test_tensorrt_fake.py`` (the refusals), ``test_tensorrt_gpu.py`` (``needs_trt``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omsf2.export.tensorrt import EngineSpec, engine_fields, write_engine
from omsf2.fileio import sha256_file
from omsf2.runtime.engine_manifest import EngineManifest, TensorInfo
from omsf2.runtime.tensorrt_engine import TensorRTError, import_trt, make_logger, np_dtype, require_gpu

__all__ = ["build_engine_torch_tensorrt"]


def build_engine_torch_tensorrt(ckpt_path: Path, spec: EngineSpec, out_path: Path) -> Path:
    """Build the engine with Torch-TensorRT's dynamo path instead of the ONNX parser (``--via torch-tensorrt``).

    ``torch.export`` traces the checkpoint's model with the reference kernels and
    ``torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine`` compiles it to one
    serialized engine with explicit typing. fp32 and fp16 only (fp16 = the model cast to half,
    with half I/O); int8 comes from the Q/DQ ONNX through :func:`build_engine`.

    Raises:
        ValueError: unsupported options (int8, DLA, plugin library) or a bad checkpoint.
        TensorRTError: Torch-TensorRT (needs torch 2.14 and TensorRT 11.1) or a GPU is missing.
    """
    ckpt_path, out_path = Path(ckpt_path), Path(out_path)
    if spec.precision == "int8":
        raise ValueError("int8 engines come from the Q/DQ ONNX (build_engine), not from Torch-TensorRT")
    if spec.dla_core is not None or spec.plugin_library is not None:
        raise ValueError("--via torch-tensorrt supports neither dla_core nor plugin_library; use build_engine")
    try:
        import torch_tensorrt
    except Exception as e:
        raise TensorRTError(
            f"Torch-TensorRT is not installed ({type(e).__name__}); it needs torch 2.14 and TensorRT 11.1 libraries"
        ) from e
    import torch

    from omsf2.kernels import use_backend
    from omsf2.models.checkpoint import checkpoint_info, load_checkpoint, model_from_checkpoint

    trt = import_trt()
    gpu = require_gpu()
    ckpt = load_checkpoint(ckpt_path)
    cfg, _, _, prep = checkpoint_info(ckpt)
    h, w = spec.image_size or prep.size
    dtype = torch.float16 if spec.precision == "fp16" else torch.float32
    model = model_from_checkpoint(ckpt).to("cuda", dtype)
    shapes = [(b, cfg.in_chans, h, w) for b in spec.batch]
    example = torch.randn(shapes[1], device="cuda", dtype=dtype)
    batch_dim = torch.export.Dim("batch", min=spec.batch[0], max=spec.batch[2])
    with use_backend("ref"), torch.no_grad():
        exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch_dim},))
    kwargs: dict[str, Any] = {
        "use_explicit_typing": True,
        "workspace_size": spec.workspace_mib << 20,
        "version_compatible": spec.version_compat,
        "hardware_compatible": spec.hardware_compat,
    }
    if spec.builder_optimization_level is not None:
        kwargs["optimization_level"] = spec.builder_optimization_level
    if spec.timing_cache is not None:
        kwargs["timing_cache_path"] = str(spec.timing_cache)
    inp = torch_tensorrt.Input(min_shape=shapes[0], opt_shape=shapes[1], max_shape=shapes[2], dtype=dtype)
    t0 = time.perf_counter()
    data = bytes(
        torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine(exported, arg_inputs=[inp], **kwargs)
    )
    build_s = time.perf_counter() - t0
    ins, outs = _plan_io(trt, data)
    manifest = EngineManifest(
        **engine_fields(trt, gpu, out_path, data, spec.precision),
        inputs=tuple(ins),
        outputs=tuple(outs),
        metadata={"omsf2.checkpoint_sha256": sha256_file(ckpt_path)},
        build={
            **spec.options(),
            "via": "torch-tensorrt",
            "torch_tensorrt": str(torch_tensorrt.__version__),
            "strongly_typed": True,
            "build_seconds": round(build_s, 2),
        },
    )
    return write_engine(out_path, data, manifest)


def _plan_io(trt: Any, data: bytes) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """(inputs, outputs) read back from a serialized plan: Torch-TensorRT names its tensors itself."""
    engine = trt.Runtime(make_logger(trt)).deserialize_cuda_engine(data)
    if engine is None:
        raise TensorRTError("Torch-TensorRT produced a plan this TensorRT cannot deserialize")
    ins, outs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dt = np_dtype(trt, engine.get_tensor_dtype(name)).name
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            prof = tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))
            ins.append(TensorInfo(name, dt, shape, prof))  # type: ignore[arg-type]
        else:
            outs.append(TensorInfo(name, dt, shape))
    return ins, outs
