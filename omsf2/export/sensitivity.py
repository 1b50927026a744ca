"""Which parts of a network INT8 hurts, and the fewest to keep in float so that the gate passes.

A *node group* is one quantizable unit of the graph: a Conv or Gemm with its weight and input
Q/DQ, or a residual Add with the Q/DQ on its inputs. Its *sensitivity* is what quantizing only
that group costs: the top-1 agreement with FP32 it loses, and, to order groups that flip no
answer on a few dozen images, the mean KL divergence of its softmax from FP32's.

Sensitivity is measured on calibration images, not on the gate's: agreement with FP32 needs no
labels, so the ranking never sees the images that judge the result. The ranking is measured on
the S8S8 graph in ``qdq-float`` mode (the quantization's own arithmetic) and reused for every
flavour; the search (:func:`fewest_float_groups`) then keeps the top-ranked groups in float,
doubling their number until the flavour's own gate passes and bisecting back to the fewest.
The trade-off: one gate evaluation per trial (a handful), and groups are ranked one at a time,
so two groups that are harmless alone but harmful together are not found as a pair.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from omsf2.metrics import softmax

SENSITIVITY_IMAGES = 64


@dataclasses.dataclass(frozen=True)
class NodeGroup:
    """One quantizable unit: a name for people (module path where known), its kind and ONNX node names."""

    name: str
    kind: str
    nodes: tuple[str, ...]


def node_groups(model: Any, skip: Sequence[str] = ()) -> list[NodeGroup]:
    """The quantizable groups of an FP32 graph, in graph order.

    Args:
        model: the FP32 ``ModelProto``.
        skip: node names that are never quantized (non-residual Adds, user-kept layers).
    """
    skipped = set(skip)
    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def module(conv: Any) -> str:
        w = conv.input[1] if len(conv.input) > 1 else ""
        return w.removesuffix(".weight") if w in inits and not w.startswith(("val_", "onnx::")) else conv.name

    groups = []
    for n in model.graph.node:
        if n.name in skipped:
            continue
        if n.op_type in ("Conv", "Gemm"):
            groups.append(NodeGroup(module(n), n.op_type, (n.name,)))
        elif n.op_type == "Add":
            # A residual Add is named after the block of the Conv that feeds it: backbone.layer2.1.add
            convs = [producers[i] for i in n.input if i in producers and producers[i].op_type == "Conv"]
            name = f"{module(convs[0]).rsplit('.', 1)[0]}.add" if convs and "." in module(convs[0]) else n.name
            groups.append(NodeGroup(name, "Add", (n.name,)))
    return groups


def sample(images: np.ndarray, count: int = SENSITIVITY_IMAGES) -> np.ndarray:
    """At most ``count`` images, evenly spaced (the calibration set is already stratified and sorted)."""
    if len(images) <= count:
        return images
    return images[np.linspace(0, len(images) - 1, count).round().astype(int)]


def mean_kl(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean KL(softmax(ref) || softmax(logits)) over rows, in nats."""
    p = softmax(ref_logits)
    q = softmax(logits)
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))


def rank_groups(
    groups: Sequence[NodeGroup], logits_with_only: Callable[[NodeGroup], np.ndarray], fp32_logits: np.ndarray
) -> list[dict[str, Any]]:
    """Measure each group alone and rank them, most sensitive first.

    Args:
        groups: the node groups.
        logits_with_only: logits of the graph in which only this group is quantized.
        fp32_logits: FP32 logits on the same images.

    Returns:
        One row per group: ``rank`` (1 = most sensitive), ``group``, ``kind``, ``nodes``,
        ``agreement_lost`` (fraction of images whose top-1 changed) and ``kl`` (nats).
    """
    rows: list[dict[str, Any]] = []
    ref = fp32_logits.argmax(1)
    for g in groups:
        logits = logits_with_only(g)
        rows.append(
            {
                "group": g.name,
                "kind": g.kind,
                "nodes": list(g.nodes),
                "agreement_lost": float((logits.argmax(1) != ref).mean()),
                "kl": mean_kl(fp32_logits, logits),
            }
        )
    rows.sort(key=lambda r: (-float(r["agreement_lost"]), -float(r["kl"])))
    return [{"rank": i + 1, **r} for i, r in enumerate(rows)]


def fewest_float_groups(
    n_groups: int, trial: Callable[[int], dict[str, Any]], max_groups: int
) -> tuple[int, dict[str, Any] | None, list[dict[str, Any]]]:
    """Smallest k (1..max_groups) whose trial passes, keeping the top-k ranked groups in float.

    Doubles k until a trial passes (or ``max_groups`` fails), then bisects between the last
    failing and the first passing k. Assumes a longer prefix of the ranking does not hurt, which
    holds for the agreement with FP32 in all but pathological cases; the passing trial is
    always one that was actually measured.

    Args:
        n_groups: groups in the ranking.
        trial: gate record (with ``passed``) for the top-k groups kept in float.
        max_groups: the most groups the search may keep in float.

    Returns:
        ``(k, record, tried)``; ``k`` is 0 and ``record`` None when no k up to the cap passed.
        ``tried`` lists ``{"float_groups": k, "passed", "top1_agreement", "accuracy_drop"}``.
    """
    cap = max(0, min(n_groups, max_groups))
    tried: list[dict[str, Any]] = []
    records: dict[int, dict[str, Any]] = {}

    def run(k: int) -> bool:
        rec = trial(k)
        records[k] = rec
        tried.append(
            {
                "float_groups": k,
                "passed": rec["passed"],
                "top1_agreement": rec["top1_agreement"],
                "accuracy_drop": rec["accuracy_drop"],
            }
        )
        return bool(rec["passed"])

    bad, k = 0, 1
    while k <= cap and not run(k):
        bad = k
        k = cap if k < cap < 2 * k else 2 * k
    if k > cap:
        return 0, None, tried
    good = k
    while good - bad > 1:
        mid = (bad + good) // 2
        if run(mid):
            good = mid
        else:
            bad = mid
    return good, records[good], tried
