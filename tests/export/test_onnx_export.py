"""ONNX export: checker, metadata, dynamic batch, parity; the omsf2 custom ops and their onnxruntime implementation."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from omsf2.export.custom_ops import expand_plugins, has_plugins
from omsf2.export.onnx import OnnxExportSpec, export_onnx, ort_session, run_session
from omsf2.models.checkpoint import load_checkpoint, model_from_checkpoint


def test_onnx_artifact_checker_metadata_and_dynamic_batch(int8_export, tiny_ckpt) -> None:
    path = int8_export.artifacts["onnx"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 19
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits", "heatmap"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["omsf2.classes"]) == ["normal", "stage_I", "stage_II", "stage_III"]
    assert meta["omsf2.task"] == "multiclass" and int8_export.report["task"] == "multiclass"
    pre = json.loads(meta["omsf2.preprocess"])
    assert pre["size"] == [64, 64] and pre["mean"] == [0.5] and pre["std"] == [0.25]
    assert len(meta["omsf2.checkpoint_sha256"]) == 64 and meta["omsf2.version"]
    torch_model = model_from_checkpoint(load_checkpoint(tiny_ckpt))
    sess = ort_session(path)
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 1, 64, 64)).astype(np.float32)
        logits, heat = run_session(sess, x)
        with torch.no_grad():
            ref = torch_model(torch.from_numpy(x))[0].numpy()
        assert logits.shape == (n, 4) and heat.shape[0] == n
        np.testing.assert_allclose(logits, ref, atol=1e-4)
    parity = int8_export.report["onnx_parity"]
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_err"] < 1e-3 and parity["data"] == "images"


def test_plugins_emit_omsf2_custom_ops_with_parity(tiny_ckpt, tmp_path) -> None:
    res = export_onnx(OnnxExportSpec(str(tiny_ckpt), str(tmp_path / "p.onnx"), plugins=True))
    model = onnx.load(str(res.path))
    assert has_plugins(model)
    assert {(o.domain, o.version) for o in model.opset_import} >= {("omsf2", 1)}
    custom = [n for n in model.graph.node if n.domain == "omsf2"]
    pools = [n for n in custom if n.op_type == "MultiscalePool"]
    fuses = [n for n in custom if n.op_type == "ScaleFuse"]
    assert len(pools) == 1 and len(fuses) == 3
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pools[0].attribute}
    assert attrs == {"windows": [5, 9, 13], "mode": 0, "plugin_namespace": b"omsf2", "plugin_version": b"1"}
    assert all(len(n.input) == 4 for n in fuses)
    assert res.parity["top1_agreement"] == 1.0 and res.parity["max_abs_err"] < 1e-3
    # The onnxruntime implementation (expansion) matches the plain export exactly in structure of outputs.
    plain = export_onnx(OnnxExportSpec(str(tiny_ckpt), str(tmp_path / "plain.onnx")))
    x = np.random.default_rng(0).standard_normal((2, 1, 64, 64)).astype(np.float32)
    a, ha = run_session(ort_session(res.path), x)
    b, hb = run_session(ort_session(plain.path), x)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(ha, hb, atol=1e-5)
    assert not has_plugins(expand_plugins(model))


def test_expand_plugins_matches_the_reference_ops_on_odd_sizes() -> None:
    from onnx import TensorProto, helper

    from omsf2.export.custom_ops import translation_table
    from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref

    translation_table()  # registers the schemas
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("MultiscalePool", ["x"], ["p"], domain="omsf2", windows=[3, 5], mode=1),
            helper.make_node("ScaleFuse", ["l", "a", "lu", "au"], ["s"], domain="omsf2"),
        ],
        "g",
        [helper.make_tensor_value_info(n, f, None) for n in ("x", "l", "a", "lu", "au")],
        [helper.make_tensor_value_info(n, f, None) for n in ("p", "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("omsf2", 1)])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    l, a = rng.standard_normal((2, 4, 11, 13)).astype(np.float32), rng.random((2, 1, 11, 13)).astype(np.float32)  # noqa: E741
    lu, au = rng.standard_normal((2, 4, 6, 7)).astype(np.float32), rng.random((2, 1, 6, 7)).astype(np.float32)
    import onnxruntime as ort

    sess = ort.InferenceSession(expand_plugins(model).SerializeToString(), providers=["CPUExecutionProvider"])
    p, s = sess.run(None, {"x": x, "l": l, "a": a, "lu": lu, "au": au})
    t = torch.from_numpy
    np.testing.assert_allclose(p, multiscale_pool_ref(t(x), (3, 5), "avg").numpy(), atol=1e-5)
    np.testing.assert_allclose(s, scale_fuse_ref(t(l), t(a), t(lu), t(au)).numpy(), atol=1e-5)


def test_bad_opset_is_a_value_error(tiny_ckpt, tmp_path) -> None:
    with pytest.raises(ValueError, match="opset must be one of 19-23"):
        OnnxExportSpec(str(tiny_ckpt), str(tmp_path / "x.onnx"), opset=17)


def test_overflowing_logits_are_an_error_not_a_silent_export(tiny_ckpt, tmp_path) -> None:
    from omsf2.models.checkpoint import save_checkpoint

    ckpt = load_checkpoint(tiny_ckpt)
    name = next(k for k, v in ckpt["model"].items() if k.endswith("weight") and v.ndim == 4)
    ckpt["model"][name] = torch.full_like(ckpt["model"][name], 3e38)  # finite, but the activations overflow
    big = tmp_path / "big.pt"
    save_checkpoint(big, ckpt)
    with pytest.raises(ValueError, match="logits are not finite"):
        export_onnx(OnnxExportSpec(str(big), str(tmp_path / "m.onnx")))
    assert not (tmp_path / "m.onnx").exists()


def test_calibration_set_hash_reaches_report_through_run_export(int8_export, phantoms64) -> None:
    from omsf2.config import PreprocessSpec
    from omsf2.export.calibration import CalibrationSpec, load_calibration
    from omsf2.export.onnx import images_hash

    rep = int8_export.report
    classes = ("normal", "stage_I", "stage_II", "stage_III")
    calib = load_calibration(CalibrationSpec(str(phantoms64 / "train"), 64), PreprocessSpec(size=(64, 64)), classes)
    expected = images_hash(calib.paths)
    assert rep["calibration"]["sha256"] == expected and rep["calibration_sha256"] == expected
    other = images_hash(calib.paths[1:])
    assert other != expected  # one image fewer is another calibration set
