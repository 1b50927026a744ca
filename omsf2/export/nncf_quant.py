"""``--quantizer nncf``: NNCF's post-training quantization with accuracy control, for the CPU flavour.

NNCF (``nncf.quantize_with_accuracy_control``) calibrates its own ranges, applies fast bias
correction, and then reverts the quantized operations that cost most accuracy to float, one at a
time, until the drop is within bounds. It is the library counterpart of omsf2's own
mixed-precision search (:mod:`omsf2.export.sensitivity`), and this module lets the two be
compared on the same checkpoint, images and gate.

Only the CPU flavour (``model.int8-cpu.onnx``, U8S8) is written this way. NNCF's ONNX backend
makes an activation quantizer unsigned whenever its calibrated input is non-negative (every ReLU
output), and its hardware configurations do not let signedness be forced for activations, so it
cannot write the TensorRT contract (signed int8 activations with zero point 0). The CPU flavour
uses NNCF's ``mixed`` preset (asymmetric uint8 activations, symmetric per-channel int8 weights)
with ``OverflowFix.ENABLE``: every Conv/MatMul weight uses half the int8 range, the same 7-bit
guarantee as onnxruntime's ``reduce_range`` (no int16 saturation in u8s8 kernels without VNNI),
which omsf2's Q/DQ lint checks afterwards.

NNCF controls one metric. Omsf2's gate holds two (accuracy drop and top-1 agreement with FP32),
so the metric handed to NNCF encodes both (:func:`gate_score`): accuracy, minus a penalty larger
than the whole scale when agreement falls short, so that NNCF keeps reverting until both hold.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from omsf2.export.calibration import ImageSet
from omsf2.export.gate import EvalMode, GateSpec

__all__ = ["float_weight_nodes", "gate_score", "nncf_unavailable_reason", "quantize_nncf"]

log = logging.getLogger(__name__)

# One item of NNCF's validation dataset: (image batch of one, index into the eval set).
_Item = tuple[np.ndarray, int]


def nncf_unavailable_reason() -> str | None:
    """None when NNCF can be imported, else why not (one line)."""
    try:
        import nncf  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising anything
        return (
            f"NNCF is not importable here ({type(e).__name__}): pip install 'omsf2[nncf]' (nncf 3.4), "
            "or use --quantizer ort"
        )
    return None


def gate_score(labels: np.ndarray, fp32_pred: np.ndarray, pred: np.ndarray, min_agreement: float) -> float:
    """The single metric NNCF maximises: accuracy, minus 2 + shortfall when agreement is too low.

    For the FP32 model (agreement 1) it is its accuracy, so NNCF's "drop" is the accuracy drop
    whenever agreement holds. When it does not, the drop is at least ``1 + min_agreement``
    (flipped answers can raise accuracy by at most ``1 - agreement``), beyond any ``max_drop``.

    Args:
        labels: (N,) true classes.
        fp32_pred: (N,) FP32 top-1 classes.
        pred: (N,) the quantized model's top-1 classes.
        min_agreement: least top-1 agreement, in [0, 1].

    Returns:
        The score; higher is better.
    """
    accuracy = float((pred == labels).mean())
    shortfall = min_agreement - float((pred == fp32_pred).mean())
    return accuracy - (2.0 + shortfall if shortfall > 0 else 0.0)


def float_weight_nodes(model: Any) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes whose weight does not come from a DequantizeLinear."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul") and producers.get(n.input[1]) != "DequantizeLinear"
    ]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF logs each step at INFO and draws progress bars on stdout."""
    import nncf

    buf = io.StringIO()
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    finally:
        nncf.set_log_level(logging.INFO)
        log.debug("NNCF output: %s", buf.getvalue()[-2000:])


class _Validator:
    """NNCF's ``validation_fn``: the gate's score of a model on (a subset of) the eval images.

    NNCF calls it with the same ModelProto many times (once per image while ranking), so the
    onnxruntime session of the last model is kept.
    """

    def __init__(self, evaluation: ImageSet, fp32_logits: np.ndarray, gate: GateSpec, mode: EvalMode) -> None:
        self.labels = evaluation.labels
        self.fp32_pred = fp32_logits.argmax(1)
        self.gate = gate
        self.mode = mode
        self._model: Any = None
        self._session: Any = None

    def __call__(self, model: Any, items: Iterable[_Item]) -> tuple[float, list[float]]:
        from omsf2.export.gate import session
        from omsf2.runtime.sessions import run_session

        if model is not self._model:
            self._model, self._session = model, session(model, self.mode)
        batch = list(items)
        index = np.array([i for _, i in batch])
        pred = run_session(self._session, np.concatenate([x for x, _ in batch]))[0].argmax(1)
        labels, ref = self.labels[index], self.fp32_pred[index]
        # NNCF scores single images with this same function while ranking: keep the two consistent.
        per_image = [gate_score(labels[j : j + 1], ref[j : j + 1], pred[j : j + 1], self.gate.min_agreement)
                     for j in range(len(pred))]  # fmt: skip
        return gate_score(labels, ref, pred, self.gate.min_agreement), per_image


def quantize_nncf(
    fp32: Any,
    calib: np.ndarray,
    evaluation: ImageSet,
    fp32_logits: np.ndarray,
    gate: GateSpec,
    exclude: list[str],
    mode: EvalMode,
    max_reverted: int,
) -> Any:
    """The CPU flavour by NNCF with accuracy control, held to the gate's score on ``evaluation``.

    Args:
        fp32: the runnable FP32 ModelProto (no custom ops).
        calib: (N, C, H, W) calibration images, preprocessed.
        evaluation: labelled eval images (NNCF's validation set, the gate's too).
        fp32_logits: (M, K) FP32 logits on ``evaluation.images``.
        gate: the gate's thresholds (``max_drop`` in accuracy points).
        exclude: node names never quantized (NNCF's ignored scope).
        mode: how the candidates run while NNCF validates them (the flavour's gate mode).
        max_reverted: most operations NNCF may revert to float. Unbounded, it reverts every layer
            when the gate cannot be met and returns a float model that passes trivially.

    Returns:
        The quantized ModelProto; :func:`float_weight_nodes` names the layers it left in float
        (those its placement skips and those its accuracy control reverted).
    """
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    name = fp32.graph.input[0].name

    def feed(x: np.ndarray | _Item) -> dict[str, np.ndarray]:
        return {name: x[0] if isinstance(x, tuple) else x}

    calibration = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))], feed)
    validation = nncf.Dataset([(evaluation.images[i : i + 1], i) for i in range(len(evaluation))], feed)
    with _quiet():
        return nncf.quantize_with_accuracy_control(
            fp32,
            calibration,
            validation,
            _Validator(evaluation, fp32_logits, gate, mode),
            max_drop=gate.max_drop / 100,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(calib),
            ignored_scope=nncf.IgnoredScope(names=list(exclude), validate=False),
            advanced_quantization_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=max_reverted),
        )
