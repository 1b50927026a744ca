"""One INT8 flavour: write it, choose its float groups on the search part, judge it once on the gate part.

The two kinds of evaluation are kept apart here, and each is logged with the ids of the images it
ran on (:meth:`Work.evaluations`, and ``DEBUG`` lines of this module's logger):

- ``search``: full INT8 and each mixed-precision trial are held to the bounds on the search part
  (``QuantizeSpec.evaluation``); the search keeps the fewest, most sensitive groups in float
  until a trial passes there (:func:`omsf2.export.sensitivity.fewest_float_groups`); NNCF's
  accuracy control validates on the same part. Sensitivity ranks groups on calibration images.
- ``gate``: the configuration the search settled on is run once on the gate part
  (``QuantizeSpec.gate_set``), and that record (:func:`omsf2.export.gate.gate_record`: bounds,
  intervals, subgroups, caveats) is the flavour's verdict and the figures ``report.json`` leads
  with; the search part's figures sit beside it under ``search``.

A search that tried configurations and found none passing fails the flavour whatever the gate
part says: a second chance on the gate part would make it a search set too. Without a search
(``--no-mixed-precision``, or full INT8 passed the search part) the gate part alone decides.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omsf2.export import gate as gate_mod
from omsf2.export.gate import EvalMode
from omsf2.export.qdq_placement import Placement
from omsf2.export.qdq_write import (
    FLAVOURS,
    MAX_FLOAT_FRACTION,
    Flavour,
    Quantizer,
    flavour_problems,
    max_float_layers,
    quantize_modelopt,
    quantize_ort,
    quiet_ort,
)

if TYPE_CHECKING:
    from omsf2.export.quantize import QuantizeSpec

log = logging.getLogger(__name__)


def metrics(labels: np.ndarray, logits: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class recall and the confusion matrix of ``logits`` on ``labels``."""
    from omsf2.metrics import classification_metrics

    m = classification_metrics(labels, logits, list(classes))
    return {k: m[k] for k in ("accuracy", "macro_f1", "per_class_recall", "confusion")}


@dataclasses.dataclass
class Work:
    """One quantization session: the FP32 graph on disk, its calibration cache, FP32's logits on both parts.

    Attributes:
        spec: what :func:`omsf2.export.quantize.quantize_int8` was asked.
        fp32_path: the graph quantized (custom ops kept; tensor names match the expanded one).
        cache: onnxruntime's calibration cache.
        method: onnxruntime ``CalibrationMethod`` of the cache.
        exclude: nodes never quantized (non-residual Adds and ``keep_float`` layers).
        fp32_search: FP32 logits on the search part.
        fp32_gate: FP32 logits on the gate part.
        work: scratch folder.
        where: where the Q/DQ pairs go (onnxruntime's quantizer).
        trials: graphs written so far.
        evaluations: each evaluation on labelled images: flavour, what, part, image ids.
    """

    spec: QuantizeSpec
    fp32_path: str
    cache: str
    method: Any
    exclude: list[str]
    fp32_search: np.ndarray
    fp32_gate: np.ndarray
    work: str
    where: Placement
    trials: int = 0
    evaluations: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def record(self, flavour: str, what: str, part: str, paths: Sequence[str]) -> None:
        """Log one evaluation with the ids of its images (the proof that the gate part chose nothing)."""
        entry = {"flavour": flavour, "what": what, "part": part, "images": list(paths)}
        self.evaluations.append(entry)
        log.debug("evaluation %s", json.dumps(entry))

    def write(self, fl: Flavour, out: str, extra_exclude: Sequence[str] = (), only: list[str] | None = None) -> Any:
        """Write ``fl`` (all but ``extra_exclude`` quantized, or ``only`` those nodes) to ``out``; the ModelProto."""
        import onnx

        self.trials += 1
        s = self.spec
        if s.quantizer is Quantizer.MODELOPT:
            quantize_modelopt(self.fp32_path, s.calib.images, s.method, self.exclude, out)
        elif s.quantizer is Quantizer.NNCF:
            from omsf2.export.nncf_quant import quantize_nncf

            fp32 = onnx.load(self.fp32_path)
            self.record(fl.name, "nncf accuracy control", "search", s.evaluation.paths)
            q = quantize_nncf(fp32, s.calib.images, s.evaluation, self.fp32_search, s.gate, self.exclude,
                              fl.gate_mode, max_float_layers(fp32, self.exclude))  # fmt: skip
            onnx.save_model(q, out)
        else:
            with quiet_ort():
                exclude = [*self.exclude, *extra_exclude]
                quantize_ort(self.fp32_path, fl, self.where, exclude, self.cache, self.method, out, only)
        return onnx.load(out)

    def logits(self, model: Any, mode: EvalMode, images: np.ndarray) -> np.ndarray:
        """Logits of ``model`` run the way ``mode`` says."""
        from omsf2.export.onnx import run_session

        return run_session(gate_mod.session(model, mode), images)[0]

    def search(self, fl: Flavour, model: Any, what: str) -> dict[str, Any]:
        """The bounds on the search part (a trial's verdict)."""
        ev = self.spec.evaluation
        self.record(fl.name, what, "search", ev.paths)
        logits = self.logits(model, fl.gate_mode, ev.images)
        rec = gate_mod.judge(ev.labels, self.fp32_search, logits, self.spec.gate)
        m = metrics(ev.labels, logits, ev.classes)
        return {**rec, "int8_accuracy": m["accuracy"]}

    def judge_gate(self, fl: Flavour, model: Any) -> dict[str, Any]:
        """The flavour's verdict: bounds, intervals, subgroups and caveats on the gate part."""
        gs = self.spec.gate_images
        t = time.perf_counter()
        self.record(fl.name, "gate", "gate", gs.paths)
        logits = self.logits(model, fl.gate_mode, gs.images)
        rec = gate_mod.gate_record(gs, self.fp32_gate, logits, self.spec.gate)
        m = metrics(gs.labels, logits, gs.classes)
        integer = fl.gate_mode is EvalMode.ORT_INTEGER
        rec.update(
            int8_accuracy=m["accuracy"],
            int8_macro_f1=m["macro_f1"],
            int8_per_class_recall=m["per_class_recall"],
            int8_confusion=m["confusion"],
            eval_mode=fl.gate_mode.value,
            kernel_path=gate_mod.kernel_path() if integer else "qdq-float (no integer kernels)",
            eval_s=time.perf_counter() - t,
        )
        return rec


def rank(w: Work, model: Any) -> list[dict[str, Any]]:
    """Every node group ranked by what quantizing it alone costs, on calibration images."""
    from omsf2.export.sensitivity import node_groups, rank_groups, sample

    images = sample(w.spec.calib.images)
    w.record("int8", "sensitivity ranking", "calibration", [f"calibration[{len(images)} sampled]"])
    ref = w.logits(model, EvalMode.QDQ_FLOAT, images)
    fl = FLAVOURS["int8"]
    out = os.path.join(w.work, "only.onnx")

    def only(g: Any) -> np.ndarray:
        return w.logits(w.write(fl, out, only=list(g.nodes)), fl.gate_mode, images)

    return rank_groups(node_groups(model, w.exclude), only, ref)


def _brief(rec: dict[str, Any], n: int) -> dict[str, Any]:
    keys = ("int8_accuracy", "accuracy_drop", "top1_agreement", "passed", "failed_because")
    return {"n": n, **{k: rec[k] for k in keys if k in rec}}


def _mixed(w: Work, fl: Flavour, full: dict[str, Any], ranking: list[dict[str, Any]]) -> tuple[
    dict[str, Any], dict[str, Any], list[str]
]:  # fmt: skip
    """The fewest float groups that pass on the search part.

    Returns:
        (the mixed-precision record, the chosen configuration's search record, its float nodes).
    """
    from omsf2.export.sensitivity import fewest_float_groups

    trial_path = os.path.join(w.work, f"trial-{fl.filename}")

    def trial(k: int) -> dict[str, Any]:
        nodes = [n for r in ranking[:k] for n in r["nodes"]]
        return w.search(fl, w.write(fl, trial_path, nodes), f"{k} group(s) in float")

    cap = max(1, math.ceil(MAX_FLOAT_FRACTION * len(ranking)))
    k, best, tried = fewest_float_groups(len(ranking), trial, cap)
    count = len(w.spec.evaluation)
    mixed: dict[str, Any] = {"tried": tried, "max_float_groups": cap, "full_int8": _brief(full, count), "on": "search"}
    if best is None:
        return mixed, full, []
    mixed["float_groups"] = [r["group"] for r in ranking[:k]]
    return mixed, best, [n for r in ranking[:k] for n in r["nodes"]]


def quantize_flavour(w: Work, fl: Flavour, ranked: Callable[[], list[dict[str, Any]]]) -> tuple[dict[str, Any], Path]:
    """Quantize and lint one flavour, choose its float groups on the search part, judge it on the gate part."""
    out = os.path.join(w.spec.out_dir, fl.filename)
    t = time.perf_counter()
    q = w.write(fl, out)
    nncf = w.spec.quantizer is Quantizer.NNCF
    float_nodes: list[str] = []
    if nncf:
        from omsf2.export.nncf_quant import float_weight_nodes

        # Left float: NNCF's placement skips some (the SE block's), its accuracy control reverts others.
        float_nodes = [n for n in float_weight_nodes(q) if n not in w.exclude]
    chosen = w.search(fl, q, "nncf result" if nncf else "full INT8")
    mixed = None
    if not chosen["passed"] and w.spec.mixed_precision and w.spec.quantizer is Quantizer.ORT:
        mixed, chosen, float_nodes = _mixed(w, fl, chosen, ranked())
        if float_nodes:
            q = w.write(fl, out, float_nodes)
    quantize_s = time.perf_counter() - t
    rec = w.judge_gate(fl, q)
    rec["quantize_s"] = quantize_s
    rec["search"] = _brief(chosen, len(w.spec.evaluation))
    if (mixed is not None or nncf) and not chosen["passed"]:
        rec["passed"] = False
        why = "; ".join(chosen["failed_because"])
        rec["failed_because"] = [*rec["failed_because"], f"search part: no configuration passed ({why})"]
    if mixed is not None:
        rec["mixed_precision"] = mixed
    problems = flavour_problems(q, fl, [*w.exclude, *float_nodes], w.spec.quantizer is Quantizer.ORT)
    if problems:
        raise ValueError(f"{fl.filename} fails the Q/DQ lint: {problems[0]} ({len(problems)} problem(s))")
    rec["float_groups"] = (mixed or {}).get("float_groups", [])
    if nncf:  # NNCF reverts single Conv/Gemm nodes: name them as omsf2's groups
        import onnx

        from omsf2.export.sensitivity import node_groups

        named = {n: g.name for g in node_groups(onnx.load(w.fp32_path)) for n in g.nodes}
        rec["float_groups"] = [named.get(n, n) for n in float_nodes]
    rec["float_nodes"] = float_nodes
    rec["qdq_nodes"] = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in q.graph.node)
    if fl.gate_mode is EvalMode.ORT_INTEGER:
        # How far this CPU's integer kernels are from the graph's own arithmetic: with 7-bit weights
        # they should agree on (nearly) every image, which is what makes the gate portable.
        images = w.spec.gate_images.images
        kernels = w.logits(q, EvalMode.ORT_INTEGER, images)
        semantics = w.logits(q, EvalMode.QDQ_FLOAT, images)
        rec["kernels_vs_qdq_float_agreement"] = float((kernels.argmax(1) == semantics.argmax(1)).mean())
    return rec, Path(out)
