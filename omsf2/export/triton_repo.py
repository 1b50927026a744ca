"""A Triton Inference Server model repository from a verified bundle.

``write_triton_repo(bundle, spec)`` lays out one folder per model, each with a ``config.pbtxt``
filled from the bundle manifest (tensor names, data types, dims without the batch dimension,
``max_batch_size``, dynamic batching with preferred sizes and a queue delay, CPU or GPU instance
groups) and a numbered version folder:

- ``omsf2_onnx`` (and ``omsf2_onnx_int8`` for the U8S8 CPU flavour): ``onnxruntime_onnx`` on CPU
  with the OpenVINO execution accelerator;
- ``omsf2_trt``: the TensorRT engine as a ``tensorrt_plan`` on GPU (its plugin library, when it
  needs one, beside it for ``LD_PRELOAD``);
- ``omsf2_preprocess`` and ``omsf2_postprocess``: Python-backend models that run
  :mod:`omsf2.serve.triton_python`, i.e. ``omsf2.data``'s reader and preprocessing (the server's
  Python needs ``pip install omsf2[runtime]``);
- ``omsf2`` (and ``omsf2_cpu`` when there is an engine too): an ensemble that takes encoded file
  bytes and returns ``label``, ``probabilities`` and the model-space ``heatmap``.

The configs are written as protobuf text by hand (no tritonclient needed to write them); the
tests parse every one with Triton's own ``model_config_pb2``. The trade-off: the ONNX models'
dims are read by opening them in onnxruntime once, which costs a model load but needs nothing
beyond ``omsf2[runtime]``. Nothing half-written appears: the repository is staged beside ``out``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omsf2.runtime.bundle import Bundle

PREPROCESS = "omsf2_preprocess"
POSTPROCESS = "omsf2_postprocess"
ENSEMBLE = "omsf2"
BYTES_INPUT = "IMAGE_BYTES"  # omsf2.serve.triton_python.BYTES_INPUT (not imported: it loads omsf2.data)
_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64"}
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}


@dataclasses.dataclass(frozen=True)
class _ModelRow:
    """One row of :data:`MODELS`: which bundle artifact becomes which Triton model."""

    model: str
    artifacts: tuple[str, ...]
    platform: str
    filename: str
    gpu: bool


MODELS: tuple[_ModelRow, ...] = (
    _ModelRow("omsf2_trt", ("engine_int8", "engine_fp16", "engine_fp32"), "tensorrt_plan", "model.plan", True),
    _ModelRow("omsf2_onnx", ("onnx",), "onnxruntime_onnx", "model.onnx", False),
    _ModelRow("omsf2_onnx_int8", ("onnx_int8_cpu",), "onnxruntime_onnx", "model.onnx", False),
)


@dataclasses.dataclass(frozen=True)
class TritonRepoSpec:
    """What :func:`write_triton_repo` writes.

    Attributes:
        out: the repository folder to create; it must not exist (or be empty).
        max_batch: ``max_batch_size`` of every model [default: the bundle's, capped by an engine's profile].
        preferred_batch_sizes: the dynamic batcher's preferred sizes [default: 4, 8 and max_batch, up to max_batch].
        max_queue_delay_us: how long the dynamic batcher waits to fill a batch.
        cpu_instances: instances of each CPU model.
        gpu_instances: instances of the TensorRT model per GPU.
        openvino: enable the OpenVINO execution accelerator on the ONNX models.
    """

    out: str
    max_batch: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 2000
    cpu_instances: int = 1
    gpu_instances: int = 1
    openvino: bool = True

    def __post_init__(self) -> None:
        for name in ("cpu_instances", "gpu_instances"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.max_batch is not None and (not isinstance(self.max_batch, int) or self.max_batch < 1):
            raise ValueError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        if not isinstance(self.max_queue_delay_us, int) or self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be a non-negative integer, got {self.max_queue_delay_us!r}")
        if any(not isinstance(b, int) or b < 1 for b in self.preferred_batch_sizes):
            raise ValueError(f"preferred_batch_sizes must be positive integers, got {self.preferred_batch_sizes!r}")
        check_repo_out(self.out)


def check_repo_out(out: str | os.PathLike[str]) -> None:
    """Refuse an output path that exists and is not an empty folder, or whose parent is missing.

    Raises:
        ValueError: naming the path.
    """
    p = Path(out)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise ValueError(f"Triton repository output '{p}' already exists and is not an empty folder")
    if not p.parent.is_dir():
        raise ValueError(f"Triton repository output '{p}': parent folder '{p.parent}' does not exist")


# --------------------------------------------------------------------------- protobuf text


class _Enum(str):
    """A protobuf enum value, written without quotes."""


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, _Enum | int | float):
        return str(v)
    return json.dumps(str(v))


def to_pbtxt(msg: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of a nested dict (lists of dicts: repeated messages; lists: repeated scalars)."""
    pad = "  " * indent
    lines = []
    for key, v in msg.items():
        if isinstance(v, dict):
            lines += [f"{pad}{key} {{", to_pbtxt(v, indent + 1), f"{pad}}}"]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for x in v:
                lines += [f"{pad}{key} {{", to_pbtxt(x, indent + 1), f"{pad}}}"]
        elif isinstance(v, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(x) for x in v)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(v)}")
    return "\n".join(line for line in lines if line)


# --------------------------------------------------------------------------- tensors and configs


def _tensor(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    if dtype not in _DTYPES:
        raise ValueError(f"tensor '{name}' has dtype {dtype!r}; Triton configs here support {', '.join(_DTYPES)}")
    return {"name": name, "data_type": _Enum(_DTYPES[dtype]), "dims": dims}


def _onnx_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of an ONNX file without the batch dimension (symbolic dims become -1)."""
    from omsf2.runtime.sessions import ort_session

    sess = ort_session(path, threads=1)

    def conv(args: Any) -> list[dict[str, Any]]:
        return [
            _tensor(a.name, _ORT_DTYPES.get(a.type, a.type), [d if isinstance(d, int) else -1 for d in a.shape[1:]])
            for a in args
        ]

    return conv(sess.get_inputs()), conv(sess.get_outputs())


def _engine_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, str | None]:
    """(inputs, outputs, profile max batch, plugin library name) from an engine's JSON manifest."""
    from omsf2.runtime.engine_manifest import manifest_path, read_manifest

    m = read_manifest(manifest_path(path))
    ins = [_tensor(t.name, t.dtype, list(t.shape[1:])) for t in m.inputs]
    outs = [_tensor(t.name, t.dtype, list(t.shape[1:])) for t in m.outputs]
    profile = m.inputs[0].profile
    return ins, outs, int(profile[2][0]) if profile else 1, m.plugin_library


def _batching(max_batch: int, spec: TritonRepoSpec, preferred: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {"max_queue_delay_microseconds": spec.max_queue_delay_us}
    if preferred:
        sizes = spec.preferred_batch_sizes or (4, 8, max_batch)
        d = {"preferred_batch_size": sorted({b for b in sizes if b <= max_batch}), **d}
    return d


def _model_config(row: _ModelRow, io: tuple[list, list], max_batch: int, spec: TritonRepoSpec) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": row.model,
        "platform": row.platform,
        "max_batch_size": max_batch,
        "input": io[0],
        "output": io[1],
        "dynamic_batching": _batching(max_batch, spec),
        "instance_group": [
            {
                "count": spec.gpu_instances if row.gpu else spec.cpu_instances,
                "kind": _Enum("KIND_GPU" if row.gpu else "KIND_CPU"),
            }
        ],
        "default_model_filename": row.filename,
    }
    if not row.gpu and spec.openvino:
        cfg["optimization"] = {"execution_accelerators": {"cpu_execution_accelerator": [{"name": "openvino"}]}}
    return cfg


def _python_configs(
    bundle: Bundle, model_in: dict[str, Any], model_out: list[dict[str, Any]], max_batch: int, spec: TritonRepoSpec
) -> dict[str, dict[str, Any]]:
    def common(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "backend": "python",
            "max_batch_size": max_batch,
            "dynamic_batching": _batching(max_batch, spec, preferred=False),
            "instance_group": [{"count": spec.cpu_instances, "kind": _Enum("KIND_CPU")}],
        }

    def param(key: str, value: Any) -> dict[str, Any]:
        return {"key": key, "value": {"string_value": json.dumps(value)}}

    pre = {
        **common(PREPROCESS),
        "input": [{"name": BYTES_INPUT, "data_type": _Enum("TYPE_STRING"), "dims": [1]}],
        "output": [model_in, _tensor("original_hw", "int32", [2])],
        "parameters": [param("preprocess", bundle.preprocess.to_dict())],
    }
    by_name = {t["name"]: t for t in model_out}
    logits, heatmap = by_name["logits"], by_name["heatmap"]
    post = {
        **common(POSTPROCESS),
        # The heat map goes through postprocessing too: the runtime's output check refuses a
        # non-finite one, as omsf2 predict does, before the ensemble returns it.
        "input": [logits, heatmap],
        "output": [
            _tensor("probabilities", "float32", list(logits["dims"])),
            {"name": "label", "data_type": _Enum("TYPE_STRING"), "dims": [1]},
            _tensor("heatmap_checked", "float32", list(heatmap["dims"])),
        ],
        "parameters": [param("classes", list(bundle.classes)), {"key": "task", "value": {"string_value": bundle.task}}],
    }
    return {PREPROCESS: pre, POSTPROCESS: post}


def _ensemble_config(
    name: str, model: str, io: tuple[list, list], post: dict[str, Any], max_batch: int
) -> dict[str, Any]:
    model_in = io[0][0]["name"]
    by_name = {t["name"]: t for t in io[1]}
    if set(by_name) != {"logits", "heatmap"}:
        raise ValueError(f"model '{model}' has outputs {sorted(by_name)}; an omsf2 model has logits and heatmap")

    def step(model_name: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
        return {
            "model_name": model_name,
            "model_version": -1,
            "input_map": [{"key": k, "value": v} for k, v in inputs.items()],
            "output_map": [{"key": k, "value": v} for k, v in outputs.items()],
        }

    return {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": max_batch,
        "input": [{"name": BYTES_INPUT, "data_type": _Enum("TYPE_STRING"), "dims": [1]}],
        "output": [*post["output"][:2], by_name["heatmap"], _tensor("original_hw", "int32", [2])],
        "ensemble_scheduling": {
            "step": [
                step(PREPROCESS, {BYTES_INPUT: BYTES_INPUT}, {model_in: "model_input", "original_hw": "original_hw"}),
                step(model, {model_in: "model_input"}, {"logits": "logits", "heatmap": "model_heatmap"}),
                step(
                    POSTPROCESS,
                    {"logits": "logits", "heatmap": "model_heatmap"},
                    {"probabilities": "probabilities", "label": "label", "heatmap_checked": "heatmap"},
                ),
            ]
        },
    }


@dataclasses.dataclass(frozen=True)
class TritonRepo:
    """What :func:`write_triton_repo` wrote: the folder and its model names (ensembles last)."""

    root: Path
    models: tuple[str, ...]
    max_batch: int


def _model_file(bundle: Bundle, artifact: str, dest: Path) -> None:
    """Copy an artifact; an ONNX holding the omsf2 custom ops is written expanded (stock onnxruntime runs it)."""
    src = bundle.artifacts[artifact]
    plugins = bool((bundle.metadata.get("export") or {}).get("plugins"))
    if src.suffix == ".onnx" and plugins:
        import onnx

        from omsf2.runtime.ort_custom_ops import expand_plugins, has_plugins

        proto = onnx.load(str(src))
        if has_plugins(proto):
            onnx.save(expand_plugins(proto), str(dest))
            return
    shutil.copy2(src, dest)


def _write_model(stage: Path, cfg: dict[str, Any], files: dict[str, Any]) -> None:
    folder = stage / cfg["name"]
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(to_pbtxt(cfg) + "\n")
    for name, write in files.items():
        write(folder / "1" / name)


def write_triton_repo(bundle: Bundle, spec: TritonRepoSpec) -> TritonRepo:
    """Write the model repository described in the module docstring for a verified bundle.

    Raises:
        ValueError: the bundle has no ONNX or engine Triton can serve, an unusual tensor layout,
            or a bad output path.
    """
    check_repo_out(spec.out)
    rows = [
        (r, next(a for a in r.artifacts if a in bundle.artifacts))
        for r in MODELS
        if set(r.artifacts) & set(bundle.artifacts)
    ]
    if not rows:
        raise ValueError(
            f"bundle '{bundle.root}' has no ONNX or TensorRT engine to serve (it has {', '.join(bundle.artifacts)})"
        )
    max_batch = spec.max_batch or bundle.max_batch
    ios: dict[str, tuple[list, list]] = {}
    extra: dict[str, dict[str, Any]] = {}
    for row, art in rows:
        if row.gpu:
            ins, outs, profile_max, lib = _engine_io(bundle.artifacts[art])
            max_batch = min(max_batch, profile_max)
            if lib:
                extra[row.model] = {lib: lambda d, p=bundle.root / lib: shutil.copy2(p, d)}
            ios[row.model] = (ins, outs)
        else:
            ios[row.model] = _onnx_io(bundle.artifacts[art])
    primary = rows[0][0].model
    py = _python_configs(bundle, ios[primary][0][0], ios[primary][1], max_batch, spec)
    ensembles = {ENSEMBLE: primary}
    if rows[0][0].gpu and "omsf2_onnx" in ios:
        ensembles[f"{ENSEMBLE}_cpu"] = "omsf2_onnx"
    out = Path(spec.out)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for row, art in rows:
            files = {row.filename: lambda d, a=art: _model_file(bundle, a, d), **extra.get(row.model, {})}
            _write_model(stage, _model_config(row, ios[row.model], max_batch, spec), files)
        for name, cfg in py.items():
            source = (
                f'"""{name}: generated by omsf2; needs `pip install omsf2[runtime]` in the server\'s Python."""\n\n'
            )
            cls = "PreprocessModel" if name == PREPROCESS else "PostprocessModel"
            source += f"from omsf2.serve.triton_python import {cls} as TritonPythonModel  # noqa: F401\n"
            _write_model(stage, cfg, {"model.py": lambda d, s=source: d.write_text(s)})
        for name, model in ensembles.items():
            _write_model(stage, _ensemble_config(name, model, ios[model], py[POSTPROCESS], max_batch), {})
        if out.is_dir():
            out.rmdir()
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    models = (*(r.model for r, _ in rows), PREPROCESS, POSTPROCESS, *ensembles)
    return TritonRepo(out, models, max_batch)
