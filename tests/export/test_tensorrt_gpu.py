"""Real TensorRT engines (``needs_trt``: skipped where TensorRT or a CUDA GPU is missing).

Engines are built from the graphs an ``--int8`` export ships: ``model.onnx`` and ``model.int8.onnx``
(symmetric S8S8, per-channel weights, float biases: TensorRT's contract), then held to onnxruntime
on the same model. A random tiny model on random inputs has small logit margins,
so top-1 is compared the way the ONNX parity check does: a disagreement fails only where
onnxruntime's top-1/top-2 margin exceeds twice the measured logits error (an "unexplained flip").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.needs_trt

H = W = 64


@pytest.fixture(scope="module")
def graphs(tiny_ckpt, int8_export) -> dict[str, Path]:
    """The shipped artifacts of one ``--int8`` export: engines are held to what users export, not a test-made graph."""
    d = Path(int8_export.out)
    return {"ckpt": tiny_ckpt, "fp32": d / "model.onnx", "int8": d / "model.int8.onnx", "dir": d}


def _inputs(n: int = 8) -> np.ndarray:
    return np.random.default_rng(1).random((n, 1, H, W), dtype=np.float32)


def _ort(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"image": x}), strict=True))


def _compare(ref: np.ndarray, got: np.ndarray, rel_tol: float) -> None:
    err = float(np.abs(ref - got).max())
    span = float(ref.max() - ref.min()) or 1.0
    assert err <= rel_tol * span + 1e-4, f"max |logits error| {err:.3g} > {rel_tol:g} x logit span {span:.3g}"
    top = np.sort(ref, axis=1)
    margin = top[:, -1] - top[:, -2]
    flips = (ref.argmax(1) != got.argmax(1)) & (margin > 2 * err)
    assert not flips.any(), f"{int(flips.sum())} unexplained top-1 flips"


@pytest.mark.parametrize(("kind", "rel_tol"), [("fp32", 0.01), ("int8", 0.1)])
def test_engine_matches_onnxruntime_on_the_same_graph(graphs, tmp_path, kind, rel_tol) -> None:
    from omsf2.export.tensorrt import EngineSpec, build_engine, load_engine, run_engine

    engine = build_engine(graphs[kind], EngineSpec(batch=(1, 4, 8), precision=kind), tmp_path / f"m.{kind}.engine")
    loaded = load_engine(engine)
    assert loaded.manifest.precision == kind
    x = _inputs(8)
    ref = _ort(graphs[kind], x)
    for n in (1, 5, 8):  # min, an odd size inside the profile, max
        got = run_engine(loaded, x[:n])
        assert set(got) == {"logits", "heatmap"}
        _compare(ref["logits"][:n], got["logits"], rel_tol)
        assert got["heatmap"].shape == ref["heatmap"][:n].shape


def test_fp16_engine_from_converted_onnx(graphs, tmp_path) -> None:
    from omsf2.export.tensorrt import EngineSpec, build_engine, load_engine, run_engine, to_fp16_onnx

    fp16 = to_fp16_onnx(graphs["fp32"], tmp_path / "model.fp16.onnx")
    loaded = load_engine(build_engine(fp16, EngineSpec(batch=(1, 4, 8), precision="fp16"), tmp_path / "m.engine"))
    x = _inputs(4)
    _compare(_ort(graphs["fp32"], x)["logits"], run_engine(loaded, x)["logits"], 0.05)


def test_manifest_loads_and_a_mismatch_is_refused(graphs, tmp_path) -> None:
    from omsf2.export.tensorrt import EngineSpec, build_engine, load_engine
    from omsf2.runtime.engine_manifest import manifest_path, read_manifest, write_manifest

    cache = tmp_path / "timing.cache"
    engine = build_engine(graphs["int8"], EngineSpec(precision="int8", timing_cache=cache), tmp_path / "m.engine",
                          onnx_report={"int8": {"accuracy_drop": 0.3}})  # fmt: skip
    assert cache.stat().st_size > 0
    m = read_manifest(manifest_path(engine))
    assert m.accuracy == {"int8": {"accuracy_drop": 0.3}} and m.inputs[0].name == "image"
    load_engine(engine)
    write_manifest(manifest_path(engine), dataclasses.replace(m, gpu_name="Some Other GPU"))
    with pytest.raises(ValueError, match=r"on Some Other GPU .* GPU model differs"):
        load_engine(engine)
    write_manifest(manifest_path(engine), dataclasses.replace(m, tensorrt_version="9.0.0"))
    with pytest.raises(ValueError, match="TensorRT version differs"):
        load_engine(engine)


def test_torch_tensorrt_path(graphs, tmp_path) -> None:
    pytest.importorskip("torch_tensorrt")
    from omsf2.export.tensorrt import EngineSpec, load_engine, run_engine
    from omsf2.export.trt_dynamo import build_engine_torch_tensorrt

    engine = build_engine_torch_tensorrt(
        graphs["ckpt"], EngineSpec(batch=(1, 2, 4), image_size=(H, W)), tmp_path / "t.engine"
    )
    loaded = load_engine(engine)
    x = _inputs(4)
    got = run_engine(loaded, x)
    logits = next(v for v in got.values() if v.shape == (4, 4))
    _compare(_ort(graphs["fp32"], x)["logits"], logits, 0.01)


def test_export_gates_every_engine_on_this_gpu_through_the_runtime(tiny_ckpt, phantoms64, tmp_path) -> None:
    """The engine gate's real path: each engine run by Predictor.run_batch on a tensorrt session, gate in manifest."""
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.runtime.engine_manifest import manifest_path, read_manifest
    from omsf2.runtime.tensorrt_engine import gpu_info

    res = run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "out"), format="engine", int8=True, fp16=True,
                                calib_data=str(phantoms64 / "train"), calib_count=64,
                                eval_data=str(phantoms64 / "test"), batch="1,4,8", max_drop=100.0,
                                min_agreement=0.0))  # fmt: skip
    gpu = gpu_info()
    assert gpu is not None
    for name in ("engine_int8", "engine_fp16"):
        rec = res.report["engine_gate"][name]
        assert rec["passed"] and rec["gpu_name"] == gpu[0] and rec["eval_count"] == 8
        assert "Predictor.run_batch" in rec["ran_on"]
        gate = read_manifest(manifest_path(res.artifacts[name])).gate
        assert gate["passed"] and [r["n"] for r in gate["groups"]["class"]] == [2, 2, 2, 2]
    fp32 = run_export(ExportSpec(str(tiny_ckpt), str(tmp_path / "fp32"), format="engine", batch="1,4,8",
                                 eval_data=str(phantoms64 / "test"), min_agreement=0.9))  # fmt: skip
    rec = fp32.report["engine_gate"]["engine_fp32"]
    assert rec["passed"] and rec["top1_agreement"] >= 0.9, rec["failed_because"]
