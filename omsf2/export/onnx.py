"""Checkpoint -> ONNX: trace, simplify, check, stamp metadata, and hold the graph to PyTorch.

The graph is traced by torch's dynamo exporter (``torch.onnx.export(dynamo=True)``, which needs
``onnxscript``), on CPU, in eval mode, with the reference kernels forced
(``omsf2.kernels.use_backend("ref")``) or, with ``plugins``, the fused ops as ``omsf2`` custom
ops (:mod:`omsf2.export.custom_ops`). The batch axis is dynamic; H and W are fixed by the
checkpoint's preprocessing, which every consumer applies anyway.

Why dynamo and opset 19 by default: the TorchScript exporter is deprecated; the dynamo exporter
cannot emit opset 17 but 19 is the floor for Q/DQ here anyway (ARCHITECTURE.md), and the lowest
opset that works is the one the widest range of TensorRT parsers (JetPack 6's 10.3 included)
accepts. Measured on omsf2_tiny (cxr-real checkpoint, 2-core CPU): dynamo 4.5-6.5 s, 186 nodes;
the TorchScript exporter 0.3 s but 398 nodes before simplification.

Simplifier, measured on the same graphs: on the dynamo export (already optimised by onnxscript,
BatchNorm folded) onnxsim 0.09 s and onnxslim 0.15 s both leave 186 nodes and bit-identical
outputs, both keep the dynamic batch; on the TorchScript export onnxsim 0.05 s -> 202 nodes,
onnxslim 0.39 s -> 196 nodes, both exact. onnxslim is kept: it never produced a larger graph, it
does not run the model through onnxruntime to fold constants (so it also passes the ``omsf2``
custom-op graph, which onnxruntime cannot load), and it needs no compiled wheel per platform.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omsf2._version import __version__
from omsf2.fileio import sha256_file
from omsf2.runtime.sessions import INPUT_NAME, OUTPUT_NAMES, ort_session, run_session

log = logging.getLogger(__name__)

DEFAULT_OPSET = 19
OPSETS = range(19, 24)  # what the dynamo exporter writes and the TensorRT 10.x/11.x parsers read
MAX_BATCH = 4096
META_CLASSES = "omsf2.classes"
META_TASK = "omsf2.task"
META_PREPROCESS = "omsf2.preprocess"
META_CHECKPOINT = "omsf2.checkpoint_sha256"
META_VERSION = "omsf2.version"


@dataclasses.dataclass(frozen=True)
class OnnxExportSpec:
    """What :func:`export_onnx` writes.

    Attributes:
        checkpoint: an omsf2 checkpoint (``best.pt``).
        out: the ``.onnx`` file to write (atomically).
        opset: ONNX opset, 19-23.
        plugins: emit the fused neck ops as ``omsf2`` custom ops instead of their decomposition.
        parity_inputs: preprocessed images (N, C, H, W) to hold the graph to PyTorch with;
            None: 8 random inputs (a structural check only, recorded as such).
        atol: largest allowed |logits_onnx - logits_torch|.
    """

    checkpoint: str
    out: str
    opset: int = DEFAULT_OPSET
    plugins: bool = False
    parity_inputs: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    atol: float = 1e-3

    def __post_init__(self) -> None:
        if int(self.opset) != self.opset or self.opset not in OPSETS:
            raise ValueError(f"opset must be one of {OPSETS.start}-{OPSETS.stop - 1}, got {self.opset!r}")
        if not self.atol > 0:
            raise ValueError(f"parity tolerance must be positive, got {self.atol!r}")


@dataclasses.dataclass(frozen=True)
class OnnxExportResult:
    """What :func:`export_onnx` wrote and measured."""

    path: Path
    sha256: str
    classes: list[str]
    preprocess: dict[str, Any]
    parity: dict[str, Any]
    nodes: int
    timings: dict[str, float]


def parity(ref: np.ndarray, got: np.ndarray, atol: float) -> dict[str, Any]:
    """Max |logits| error and top-1 agreement; a flip is tolerated only where torch's top-2 margin < 2 * atol."""
    err = np.abs(ref.astype(np.float64) - got)
    agree = ref.argmax(1) == got.argmax(1)
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    near_tie = (top2[:, 1] - top2[:, 0]) < 2 * atol
    return {
        "n": len(ref),
        "max_abs_err": float(err.max()) if err.size else 0.0,
        "top1_agreement": float(agree.mean()) if len(ref) else 1.0,
        "unexplained_flips": int((~agree & ~near_tie).sum()),
        "atol": atol,
    }


def _torch_outputs(model: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    import torch

    from omsf2.kernels import use_backend

    out = []
    with torch.no_grad(), use_backend("ref"):
        for i in range(0, len(images), batch):
            out.append(model(torch.from_numpy(images[i : i + batch]))[0].numpy())
    return np.concatenate(out)


def _simplify(proto: Any) -> Any:
    import onnxslim

    return onnxslim.slim(proto)


def export_onnx(spec: OnnxExportSpec) -> OnnxExportResult:
    """Export a checkpoint to ONNX, simplify, check, add metadata and verify parity with PyTorch.

    Metadata props: ``omsf2.classes`` (JSON list), ``omsf2.task`` (``multiclass`` or ``multilabel``:
    the activation the runtime applies), ``omsf2.preprocess`` (JSON
    ``PreprocessSpec.to_dict()``: ``size`` [H, W], ``mean`` and ``std`` applied as
    ``(x - mean) / std`` to the [0, 1] image after the ``resize`` (letterbox with ``pad_value`` or
    stretch) to ``size``, and ``channels``), ``omsf2.checkpoint_sha256`` and ``omsf2.version``.

    Raises:
        ValueError: unreadable checkpoint, parity outside the tolerance, a graph that fails the
            checker, or plugins requested but the model's ops were not captured.
    """
    import onnx
    import torch

    from omsf2.export import custom_ops as plugins
    from omsf2.fileio import atomic_path
    from omsf2.kernels import use_backend
    from omsf2.models.checkpoint import checkpoint_info, load_checkpoint, model_from_checkpoint

    t0 = time.perf_counter()
    ckpt = load_checkpoint(spec.checkpoint)
    _, classes, task, pre = checkpoint_info(ckpt)
    model = model_from_checkpoint(ckpt).to("cpu").eval()
    h, w = pre.size
    example = torch.zeros(2, pre.channels, h, w)
    kwargs: dict[str, Any] = {
        "dynamo": True,
        "opset_version": spec.opset,
        "input_names": [INPUT_NAME],
        "output_names": list(OUTPUT_NAMES),
        "dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},),
        "verbose": False,
    }
    patch = plugins.plugin_ops() if spec.plugins else use_backend("ref")
    if spec.plugins:
        kwargs["custom_translation_table"] = plugins.translation_table()
    with torch.no_grad(), patch, _quiet_exporter():
        program = torch.onnx.export(model, (example,), None, **kwargs)
    if program is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    t1 = time.perf_counter()
    n_before = len(proto.graph.node)
    proto = _simplify(proto)
    t2 = time.perf_counter()
    if spec.plugins and not plugins.has_plugins(proto):
        raise RuntimeError(
            "--plugins: the exported graph holds no omsf2 custom ops; the model no longer calls "
            "omsf2.kernels.multiscale_pool/scale_fuse (export/custom_ops.py needs its hook updated)"
        )
    _stamp_and_check(proto, classes, task.value, pre.to_dict(), sha256_file(spec.checkpoint))
    t3 = time.perf_counter()

    images = spec.parity_inputs
    data = "images"
    if images is None:
        images = np.random.default_rng(0).standard_normal((8, pre.channels, h, w)).astype(np.float32)
        data = "random"
    par = _parity_outputs(model, proto, images, data, spec.atol)
    t4 = time.perf_counter()
    if par["max_abs_err"] > spec.atol or par["unexplained_flips"]:
        raise ValueError(
            f"ONNX parity failed: max |logits error| {par['max_abs_err']:.3g} (tolerance {spec.atol:g}), "
            f"top-1 agreement {par['top1_agreement']:.2%} on {par['n']} {data} inputs"
        )
    with atomic_path(spec.out) as tmp:
        onnx.save_model(proto, str(tmp))
    log.info("wrote %s (%d nodes, %d before simplification)", spec.out, len(proto.graph.node), n_before)
    return OnnxExportResult(
        Path(spec.out),
        sha256_file(spec.out),
        classes,
        pre.to_dict(),
        par,
        len(proto.graph.node),
        {"export_s": t1 - t0, "simplify_s": t2 - t1, "check_s": t3 - t2, "parity_s": t4 - t3},
    )


def _stamp_and_check(
    proto: Any, classes: list[str], task: str, preprocess: dict[str, Any], checkpoint_sha: str
) -> None:
    """Write the omsf2 metadata props, then check the I/O names and run ``onnx.checker`` (full)."""
    import onnx

    meta = {
        META_CLASSES: json.dumps(classes),
        META_TASK: task,
        META_PREPROCESS: json.dumps(preprocess),
        META_CHECKPOINT: checkpoint_sha,
        META_VERSION: __version__,
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name = "omsf2"
    proto.producer_version = __version__
    _check_io(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ValueError(f"exported ONNX fails onnx.checker: {' '.join(str(e).split())[:300]}") from e


def _parity_outputs(model: Any, proto: Any, images: np.ndarray, data: str, atol: float) -> dict[str, Any]:
    """Hold the graph's logits to PyTorch's; non-finite logits on either side are an error."""
    ref = _torch_outputs(model, images)
    if not np.all(np.isfinite(ref)):
        raise ValueError(
            f"the checkpoint's logits are not finite (NaN or inf) on {data} inputs although its weights are; "
            "the model overflows float32 on this data and cannot be exported"
        )
    got, _ = run_session(ort_session(proto), images)
    if not np.all(np.isfinite(got)):
        raise ValueError(f"the exported ONNX produces non-finite logits (NaN or inf) on {data} inputs")
    return {**parity(ref, got, atol), "data": data}


def _check_io(proto: Any) -> None:
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    if names_in != [INPUT_NAME] or names_out != list(OUTPUT_NAMES):
        raise RuntimeError(f"exported graph has inputs {names_in} and outputs {names_out}")
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim0.dim_param:
        raise RuntimeError("exported graph lost its dynamic batch axis")


class _quiet_exporter:
    """Silence the exporter's progress prints and warnings (they go to the log at debug level)."""

    def __enter__(self) -> None:
        import contextlib
        import io
        import warnings

        self._stack = contextlib.ExitStack()
        self._buf = io.StringIO()
        self._stack.enter_context(contextlib.redirect_stdout(self._buf))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "torch.fx"):
            lg = logging.getLogger(name)
            self._stack.callback(lg.setLevel, lg.level)
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        log.debug("exporter output: %s", self._buf.getvalue()[-2000:])


def images_hash(paths: Sequence[str]) -> str:
    """sha256 over a list of file paths and their contents' sha256 (identifies a calibration set)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()
