"""INT8 gate semantics, sensitivity ranking, mixed-precision fallback (ours and NNCF's) and the u8s8 saturation fix.

The toy network is written with onnx.helper so that each property is built in, not hoped for:
one Conv (``fragile``) has a single huge weight per output channel on an input channel that is
always zero, so per-channel int8 rounds every weight that matters to 0 or one step; the other
layers are benign.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from omsf2.export.calibration import ImageSet
from omsf2.export.gate import EvalMode, GateSpec, gate_message, judge, kernel_path
from omsf2.export.nncf_quant import float_weight_nodes, gate_score, nncf_unavailable_reason
from omsf2.export.qdq_rules import INT16_MAX, saturation_problems, weight_pair_peak
from omsf2.export.quantize import (
    FLAVOURS,
    GateError,
    QuantizeSpec,
    quantize_int8,
    quantizer_unavailable_reason,
)

CLASSES = ("a", "b", "c", "d")


def _toy(fragile: bool = True, seed: int = 0) -> onnx.ModelProto:
    """4-channel images -> 1x1 stem (8 ch, the last always 0) -> 1x1 ``fragile`` -> GAP -> Gemm head.

    Image cluster k lights input channel k; stem and ``fragile`` pass it on (near identity), the
    head reads channel k as class k with a margin of about 10 logits. With ``fragile``, that
    Conv also holds a weight of 400 on the dead channel: per-channel int8 then has a step of
    400/127 and rounds every real weight (about 0.5) to 0.
    """
    rng = np.random.default_rng(seed)
    c, k = 8, len(CLASSES)
    w1 = np.zeros((c, k, 1, 1), np.float32)
    w1[:k, :, 0, 0] = np.eye(k) + rng.normal(0, 0.02, (k, k))
    w1[k : c - 1, :, 0, 0] = rng.uniform(0.1, 0.3, (c - 1 - k, k))
    b1 = np.zeros(c, np.float32)
    b1[-1] = -1.0  # channel c-1 is always 0 after the Relu
    w2 = (0.5 * np.eye(c) + rng.normal(0, 0.02, (c, c))).astype(np.float32)[..., None, None]
    w2[:, -1] = 0.0
    if fragile:
        w2[:, -1, 0, 0] = 400.0
    w3 = np.zeros((k, c), np.float32)
    w3[:, :k] = 20.0 * np.eye(k) - 5.0
    inits = [
        numpy_helper.from_array(w1, "stem.weight"),
        numpy_helper.from_array(b1, "stem.bias"),
        numpy_helper.from_array(w2, "fragile.weight"),
        numpy_helper.from_array(np.zeros(c, np.float32), "fragile.bias"),
        numpy_helper.from_array(w3, "head.weight"),
        numpy_helper.from_array(np.zeros(k, np.float32), "head.bias"),
        numpy_helper.from_array(np.array([1], np.int64), "axes1"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "stem.weight", "stem.bias"], ["s"], name="stem_conv"),
        helper.make_node("Relu", ["s"], ["sr"], name="stem_relu"),
        helper.make_node("Conv", ["sr", "fragile.weight", "fragile.bias"], ["f"], name="fragile_conv"),
        helper.make_node("Relu", ["f"], ["fr"], name="fragile_relu"),
        helper.make_node("ReduceMean", ["fr", "axes1"], ["heatmap"], name="heat", keepdims=1),
        helper.make_node("GlobalAveragePool", ["fr"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "head.weight", "head.bias"], ["logits"], name="head_gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", k, 16, 16])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k]),
            helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["N", 1, 16, 16]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _sets(model: onnx.ModelProto, n_eval: int = 200) -> tuple[ImageSet, ImageSet]:
    """Calibration and eval images of the four clusters; labels are FP32's answers."""
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def make(n: int, tag: str) -> ImageSet:
        x = 0.1 * rng.random((n, len(CLASSES), 16, 16), dtype=np.float32)
        x[np.arange(n), rng.integers(0, len(CLASSES), n)] += rng.uniform(0.8, 1.2, (n, 1, 1)).astype(np.float32)
        labels = sess.run(["logits"], {"image": x})[0].argmax(1)  # FP32 is right on every image
        return ImageSet(x, labels.astype(np.int64), tuple(f"{tag}{i}" for i in range(n)), CLASSES, tag)

    return make(96, "calib"), make(n_eval, "eval")


@pytest.fixture(scope="module")
def fragile(tmp_path_factory):
    model = _toy(fragile=True)
    calib, ev = _sets(model)
    path = tmp_path_factory.mktemp("toy") / "toy.onnx"
    onnx.save_model(model, str(path))
    return path, calib, ev


def test_fragile_layer_fails_without_mixed_precision_and_the_message_says_why(fragile, tmp_path) -> None:
    path, calib, ev = fragile
    spec = QuantizeSpec(str(path), str(tmp_path), calib, ev, "max", 1.0, flavours=("int8",), mixed_precision=False)
    with pytest.raises(GateError, match=r"INT8 accuracy gate failed .*'max'.*qdq-float.*agreement") as e:
        quantize_int8(spec)
    r = e.value.result.report["int8"]
    assert not r["passed"] and r["top1_agreement"] < 0.9 and e.value.result.failed == ("int8",)
    assert not (tmp_path / "model.int8.onnx").exists()  # a failed flavour leaves no file


def test_sensitivity_ranks_the_fragile_layer_first_and_mixed_precision_keeps_only_it(fragile, tmp_path) -> None:
    path, calib, ev = fragile
    res = quantize_int8(QuantizeSpec(str(path), str(tmp_path), calib, ev, "max", 1.0, sensitivity=True))
    ranking = res.sensitivity
    assert ranking is not None and ranking[0]["group"] == "fragile" and ranking[0]["agreement_lost"] > 0.1
    assert {r["group"] for r in ranking} == {"stem", "fragile", "head"}
    assert all(r["agreement_lost"] <= 0.02 for r in ranking[1:])
    for name in ("int8", "int8_cpu"):
        r = res.report[name]
        assert r["passed"] and r["float_groups"] == ["fragile"] and r["float_nodes"] == ["fragile_conv"]
        assert r["mixed_precision"]["full_int8"]["passed"] is False
        assert r["top1_agreement"] >= 0.98
        q = onnx.load(str(res.paths[name]))
        producers = {o: n for n in q.graph.node for o in n.output}
        conv = next(n for n in q.graph.node if n.name == "fragile_conv")
        assert conv.input[1] == "fragile.weight"  # float weight, no DequantizeLinear
        stem = next(n for n in q.graph.node if n.name == "stem_conv")
        assert producers[stem.input[1]].op_type == "DequantizeLinear"
    assert res.report["int8"]["eval_mode"] == "qdq-float"
    assert res.report["int8_cpu"]["eval_mode"] == "ort-integer"
    assert res.report["int8_cpu"]["kernel_path"]["isa"] == kernel_path()["isa"]
    assert res.report["int8_cpu"]["kernels_vs_qdq_float_agreement"] == 1.0  # 7-bit weights: exact kernels


def test_benign_network_passes_without_float_groups(tmp_path) -> None:
    model = _toy(fragile=False)
    calib, ev = _sets(model)
    path = tmp_path / "benign.onnx"
    onnx.save_model(model, str(path))
    res = quantize_int8(QuantizeSpec(str(path), str(tmp_path), calib, ev, "max", 1.0))
    for r in res.report.values():
        assert r["passed"] and r["float_groups"] == [] and "mixed_precision" not in r
        lo, hi = r["top1_agreement_ci95"]
        assert lo <= r["top1_agreement"] <= hi and lo < 1.0
        d_lo, d_hi = r["accuracy_drop_ci95"]
        assert d_lo <= r["accuracy_drop"] <= d_hi


def _vpmaddubsw_dot(x_u8: np.ndarray, w_s8: np.ndarray) -> int:
    """What AVX2's vpmaddubsw + vpmaddwd compute for one dot product: int16-saturated pair sums."""
    prods = x_u8.astype(np.int32) * w_s8.astype(np.int32)
    pairs = np.clip(prods[0::2] + prods[1::2], -(INT16_MAX + 1), INT16_MAX)
    return int(pairs.sum())


def test_cpu_flavour_cannot_saturate_u8s8_kernels_without_vnni(tmp_path) -> None:
    """A layer whose full-range int8 weights overflow vpmaddubsw's int16 pairs is quantized to 7 bits instead."""
    from omsf2.export import quantize as qz

    model = _toy(fragile=False)
    calib, ev = _sets(model)
    benign = tmp_path / "benign.onnx"
    onnx.save_model(model, str(benign))
    eight_bit = qz.dataclasses.replace(FLAVOURS["int8_cpu"], reduce_range=False)
    results = {}
    for label, flavour in (("8bit", eight_bit), ("7bit", FLAVOURS["int8_cpu"])):
        out = tmp_path / label
        out.mkdir()
        qz.FLAVOURS["int8_cpu_probe"] = flavour
        try:
            spec = QuantizeSpec(str(benign), str(out), calib, ev, "max", 100.0, min_agreement=0.0)
            spec = qz.dataclasses.replace(spec, flavours=("int8_cpu_probe",))
            res = quantize_int8(spec)
        finally:
            del qz.FLAVOURS["int8_cpu_probe"]
        results[label] = onnx.load(str(res.paths["int8_cpu_probe"]))
    assert saturation_problems(results["8bit"]), "full-range weights must be flagged"
    assert saturation_problems(results["7bit"]) == []
    for label, q in results.items():
        inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
        w = next(v for v in inits.values() if v.dtype == np.int8 and v.ndim == 4 and v.shape[0] == v.shape[1] == 8)
        saturated = False
        for row in w.reshape(w.shape[0], -1):
            # Input-channel order is the kernel's packing choice; put the largest weights side by side.
            for r, x in ((np.sort(row)[::-1], row >= 0), (np.sort(row), row < 0)):
                x_u8 = np.where(np.sort(x)[::-1], 255, 0).astype(np.uint8)  # 255 on the same-sign weights
                saturated |= _vpmaddubsw_dot(x_u8, r) != int(x_u8.astype(np.int64) @ r.astype(np.int64))
        if label == "8bit":
            assert weight_pair_peak(w) > 128 and saturated  # the saturation really happens
        else:
            assert weight_pair_peak(w) <= 128 and not saturated  # and the shipped flavour avoids it


def test_judge_gates_agreement_and_reports_intervals() -> None:
    labels = np.zeros(100, np.int64)
    fp32 = np.tile([[2.0, 0.0]], (100, 1))
    q = fp32.copy()
    q[:3] = [[0.0, 2.0]]  # 3 flips, all from right to wrong: drop 3 points, agreement 97 %
    r = judge(labels, fp32, q, GateSpec(max_drop=5.0, min_agreement=0.98))
    assert not r["passed"] and r["failed_because"] == ["top-1 agreement 97.0% < --min-agreement 98%"]
    assert r["flipped"] == 3 and r["accuracy_drop"] == pytest.approx(3.0)
    assert r["top1_agreement_ci95"][0] < 0.97 < r["top1_agreement_ci95"][1] < 1.0
    assert r["accuracy_drop_ci95"][0] >= 0.0 and r["accuracy_drop_ci95"][1] > 3.0
    assert judge(labels, fp32, q, GateSpec(max_drop=5.0, min_agreement=0.97))["passed"]
    with pytest.raises(ValueError, match="non-finite"):
        judge(labels, fp32, q * np.nan, GateSpec())
    for bad in ({"max_drop": -1.0}, {"min_agreement": 1.5}, {"max_drop": float("nan")}):
        with pytest.raises(ValueError, match="--m"):
            GateSpec(**bad)


def test_kernel_path_names_the_isa_and_whether_u8s8_saturates() -> None:
    assert kernel_path(frozenset({"avx2", "avx512bw", "avx512_vnni"}))["u8s8_int16_saturation"] is False
    p = kernel_path(frozenset({"avx2", "fma"}))
    assert p["isa"] == "avx2" and p["u8s8_int16_saturation"] is True
    assert kernel_path(frozenset({"avx2", "avx_vnni"}))["isa"] == "avx-vnni"
    assert EvalMode("qdq-float") is EvalMode.QDQ_FLOAT


def test_failed_gate_message_names_the_closest_trial_and_the_size_of_one_image() -> None:
    tried = [
        {"float_groups": 1, "passed": False, "top1_agreement": 0.98, "accuracy_drop": 2.0},
        {"float_groups": 4, "passed": False, "top1_agreement": 0.9933, "accuracy_drop": 0.6667},
        {"float_groups": 2, "passed": False, "top1_agreement": 0.9867, "accuracy_drop": 0.6667},
    ]
    rec = {
        "file": "model.int8.onnx", "method": "percentile", "calib_count": 512, "eval_mode": "qdq-float",
        "failed_because": ["accuracy drop 1.33 points > --max-drop 0.5"], "int8_accuracy": 0.7333,
        "fp32_accuracy": 0.7467, "eval_count": 150, "accuracy_drop_ci95": [0.0, 3.33], "top1_agreement": 0.9867,
        "mixed_precision": {"tried": tried, "max_float_groups": 14},
    }  # fmt: skip
    msg = gate_message(rec, mixed_precision=True)
    assert "up to 14 of the most sensitive node groups" in msg
    assert "closest: 4 group(s), drop 0.67 points, agreement 99.3%" in msg  # ties go to the higher agreement
    assert "one gate image is 0.67 points" in msg and "\n" not in msg
    assert "did not pass the search part" in msg
    found = {**rec, "mixed_precision": {**rec["mixed_precision"], "float_groups": ["a", "b"]},
             "search": {"n": 75, "accuracy_drop": 0.0, "top1_agreement": 1.0},
             "caveats": ["too few images"]}  # fmt: skip
    msg = gate_message(found, mixed_precision=True)
    assert "2 group(s) kept in float passed the search part (75 images: drop 0.00 points, agreement 100.0%)" in msg
    assert "but not the gate part" in msg and msg.endswith("; caution: too few images")
    plain = {k: v for k, v in rec.items() if k != "mixed_precision"}
    plain |= {"figures_on": "gate part", "search": {"n": 75, "accuracy_drop": 0.0, "top1_agreement": 1.0,
                                                    "passed": True}}  # fmt: skip
    msg = gate_message(plain, mixed_precision=True)
    assert "full INT8 passed the search part (75 images: drop 0.00 points, agreement 100.0%), so no group was " in msg


def test_gate_score_is_accuracy_while_agreement_holds_and_fails_any_drop_when_not() -> None:
    labels = np.array([0, 1, 1, 0] * 25)
    ref = labels.copy()
    ref[:10] = 1 - ref[:10]  # FP32 is wrong on 10 images: accuracy 0.9
    assert gate_score(labels, ref, ref, 0.98) == pytest.approx(0.9)
    pred = ref.copy()
    pred[:2] = labels[:2]  # two flips, both to the right answer: better accuracy, agreement 0.98
    assert gate_score(labels, ref, pred, 0.98) == pytest.approx(0.92)
    pred[:3] = labels[:3]  # a third flip: agreement 0.97 < 0.98; NNCF's drop now exceeds the whole scale
    assert gate_score(labels, ref, pred, 0.98) == pytest.approx(0.93 - 2.01)
    assert 0.9 - gate_score(labels, ref, pred, 0.98) > 1.0


@pytest.mark.slow
def test_nncf_reverts_the_fragile_layer_and_passes_the_gate(tmp_path) -> None:
    pytest.importorskip("nncf")
    model = _toy(fragile=True)
    calib, ev = _sets(model)
    path = tmp_path / "toy.onnx"
    onnx.save_model(model, str(path))
    spec = QuantizeSpec(str(path), str(tmp_path), calib, ev, max_drop=1.0, quantizer="nncf", flavours=("int8_cpu",))
    res = quantize_int8(spec)
    r = res.report["int8_cpu"]
    assert list(res.paths) == ["int8_cpu"] and r["passed"] and r["top1_agreement"] >= 0.98
    assert r["method"].startswith("nncf") and r["eval_mode"] == "ort-integer"
    assert r["float_nodes"] == ["fragile_conv"] and r["float_groups"] == ["fragile"]  # at most 1 of 3 float
    q = onnx.load(str(res.paths["int8_cpu"]))
    assert float_weight_nodes(q) == r["float_nodes"]
    assert saturation_problems(q) == []  # OverflowFix.ENABLE: 7-bit weights, like reduce_range


def test_nncf_needs_the_cpu_flavour(tmp_path) -> None:
    model = _toy(fragile=False)
    calib, ev = _sets(model, n_eval=20)
    with pytest.raises(ValueError, match="CPU flavour"):
        QuantizeSpec("m.onnx", str(tmp_path), calib, ev, quantizer="nncf", flavours=("int8",))


def test_missing_nncf_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf now raises ImportError
    reason = nncf_unavailable_reason()
    assert reason is not None and "pip install 'omsf2[nncf]'" in reason and "\n" not in reason
    assert quantizer_unavailable_reason(QuantizeSpec.__dataclass_fields__["quantizer"].default) is None
