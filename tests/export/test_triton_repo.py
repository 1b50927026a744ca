"""The Triton model repository: every config.pbtxt parsed with Triton's own schema (tritonclient's
model_config_pb2), tensors checked against the real ONNX model, and the Python-backend steps of the
ensemble run here (with a stand-in for triton_python_backend_utils) to give the Predictor's answers."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("tritonclient.grpc")
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from omsf2.cli.app import app
from omsf2.export.triton_repo import TritonRepoSpec, to_pbtxt, write_triton_repo
from omsf2.runtime.bundle import BundleSpec, load_bundle, make_bundle
from omsf2.runtime.engine_manifest import EngineManifest, TensorInfo, write_manifest


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    """Triton's schema: an unknown field, a wrong type or a bad enum value raises ParseError."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def bundle(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory):
    from omsf2.export.targets import ExportSpec, run_export

    root = tmp_path_factory.mktemp("triton_bundle")
    run_export(ExportSpec(str(tiny_ckpt), str(root / "export")))
    make_bundle(BundleSpec(str(root / "export"), str(root / "bundle"), name="tiny", max_batch=16))
    return load_bundle(root / "bundle")


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("triton_png")
    out = []
    for i, (h, w) in enumerate([(70, 50), (64, 64), (45, 90)]):
        p = root / f"x{i}.png"
        Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8)).save(p)
        out.append(p)
    return out


def test_every_config_parses_with_tritons_schema_and_matches_the_onnx(bundle, tmp_path: Path) -> None:
    repo = write_triton_repo(bundle, TritonRepoSpec(str(tmp_path / "repo")))
    assert repo.models == ("omsf2_onnx", "omsf2_preprocess", "omsf2_postprocess", "omsf2")
    assert sorted(p.name for p in repo.root.iterdir()) == sorted(repo.models)
    cfgs = {m: parse_config(repo.root / m / "config.pbtxt") for m in repo.models}
    for name, cfg in cfgs.items():
        assert cfg.name == name and cfg.max_batch_size == 16 and (repo.root / name / "1").is_dir()
    onnx_cfg = cfgs["omsf2_onnx"]
    assert onnx_cfg.platform == "onnxruntime_onnx"
    assert (repo.root / "omsf2_onnx" / "1" / onnx_cfg.default_model_filename).is_file()
    assert [g.kind for g in onnx_cfg.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    accel = onnx_cfg.optimization.execution_accelerators.cpu_execution_accelerator
    assert [a.name for a in accel] == ["openvino"]
    assert list(onnx_cfg.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert onnx_cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    # the dims are the model's: run it and compare
    import onnxruntime as ort

    sess = ort.InferenceSession(str(repo.root / "omsf2_onnx" / "1" / "model.onnx"))
    (inp,) = onnx_cfg.input
    assert inp.name == "image" and inp.data_type == model_config_pb2.TYPE_FP32
    outs = sess.run(None, {"image": np.zeros((3, *inp.dims), np.float32)})
    for spec, arr in zip(onnx_cfg.output, outs, strict=True):
        assert list(spec.dims) == list(arr.shape[1:])
    assert list(inp.dims) == [bundle.preprocess.channels, *bundle.preprocess.size]
    # the ensemble wires existing tensors of existing models
    ens = cfgs["omsf2"]
    assert ens.platform == "ensemble" and [i.name for i in ens.input] == ["IMAGE_BYTES"]
    for step in ens.ensemble_scheduling.step:
        target = cfgs[step.model_name]
        assert set(step.input_map) <= {t.name for t in target.input}
        assert set(step.output_map) <= {t.name for t in target.output}
    assert {o.name for o in ens.output} == {"label", "probabilities", "heatmap", "original_hw"}


def test_a_typo_in_a_config_fails_the_schema(bundle, tmp_path: Path) -> None:
    repo = write_triton_repo(bundle, TritonRepoSpec(str(tmp_path / "repo")))
    path = repo.root / "omsf2_onnx" / "config.pbtxt"
    path.write_text(path.read_text().replace("max_queue_delay_microseconds", "max_queue_delay_us"))
    with pytest.raises(text_format.ParseError):
        parse_config(path)
    path.write_text(to_pbtxt({"name": "m", "instance_group": [{"kind": "KIND_CPU"}]}))  # quoted enum
    with pytest.raises(text_format.ParseError):
        parse_config(path)


def _fake_pb_utils() -> types.ModuleType:
    mod = types.ModuleType("triton_python_backend_utils")

    @dataclasses.dataclass
    class Tensor:
        name: str
        data: np.ndarray

        def as_numpy(self) -> np.ndarray:
            return self.data

    @dataclasses.dataclass
    class InferenceResponse:
        output_tensors: list
        error: object = None

    mod.Tensor = Tensor
    mod.InferenceResponse = InferenceResponse
    mod.TritonError = str
    mod.get_input_tensor_by_name = lambda req, name: next(t for t in req if t.name == name)
    return mod


def test_python_backend_steps_give_the_predictors_answers(bundle, pngs, tmp_path: Path, monkeypatch) -> None:
    import onnxruntime as ort

    from omsf2.runtime import Predictor
    from omsf2.serve.triton_python import PostprocessModel, PreprocessModel

    pb = _fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    repo = write_triton_repo(bundle, TritonRepoSpec(str(tmp_path / "repo")))

    def args(name: str) -> dict:
        cfg = json_format.MessageToDict(
            parse_config(repo.root / name / "config.pbtxt"), preserving_proto_field_name=True
        )
        return {"model_config": json.dumps(cfg)}

    pre, post = PreprocessModel(), PostprocessModel()
    pre.initialize(args("omsf2_preprocess"))
    post.initialize(args("omsf2_postprocess"))
    blobs = np.asarray([[p.read_bytes()] for p in pngs], dtype=np.object_)
    bad = np.asarray([[b"not an image"]], dtype=np.object_)
    r_ok, r_bad = pre.execute([[pb.Tensor("IMAGE_BYTES", blobs)], [pb.Tensor("IMAGE_BYTES", bad)]])
    assert r_bad.error and not r_bad.output_tensors
    x = next(t.data for t in r_ok.output_tensors if t.name == "image")
    hw = next(t.data for t in r_ok.output_tensors if t.name == "original_hw")
    assert hw.tolist() == [[70, 50], [64, 64], [45, 90]]
    logits, heat = ort.InferenceSession(str(repo.root / "omsf2_onnx" / "1" / "model.onnx")).run(None, {"image": x})
    (resp,) = post.execute([[pb.Tensor("logits", logits), pb.Tensor("heatmap", heat)]])
    probs = next(t.data for t in resp.output_tensors if t.name == "probabilities")
    labels = next(t.data for t in resp.output_tensors if t.name == "label")
    want = Predictor.from_bundle(bundle.root, backend="ort", threads=1).predict(pngs)
    assert [lb[0].decode() for lb in labels] == [w.label for w in want]
    np.testing.assert_allclose(probs, [[w.probabilities[c] for c in bundle.classes] for w in want], atol=1e-5)
    np.testing.assert_array_equal(next(t.data for t in resp.output_tensors if t.name == "heatmap_checked"), heat)
    # The runtime's output check: a non-finite logit or heat map fails its own request, as predict refuses it.
    bad_logits, bad_heat = logits.copy(), heat.copy()
    bad_logits[0, 1], bad_heat[1, 0, 0, 0] = np.nan, np.inf
    r_nan, r_inf, r_ok = post.execute(
        [
            [pb.Tensor("logits", bad_logits), pb.Tensor("heatmap", heat)],
            [pb.Tensor("logits", logits), pb.Tensor("heatmap", bad_heat)],
            [pb.Tensor("logits", logits), pb.Tensor("heatmap", heat)],
        ]
    )
    for r in (r_nan, r_inf):
        assert not r.output_tensors and "non-finite logits or heat map" in r.error
    assert r_ok.error is None


def test_engine_becomes_a_tensorrt_plan_on_gpu_with_its_plugin(bundle, tmp_path: Path) -> None:
    root = tmp_path / "b"
    root.mkdir()
    engine = root / "model.int8.engine"
    engine.write_bytes(b"not a real engine")
    (root / "libomsf2_plugins.so").write_bytes(b"\x7fELF")
    shape = (-1, bundle.preprocess.channels, *bundle.preprocess.size)
    manifest = EngineManifest(
        engine_file=engine.name,
        engine_sha256="0" * 64,
        tensorrt_version="10.8.0",
        gpu_name="NVIDIA H100",
        compute_capability=(9, 0),
        precision="int8",
        inputs=(TensorInfo("image", "float32", shape, ((1, *shape[1:]), (8, *shape[1:]), (8, *shape[1:]))),),
        outputs=(TensorInfo("logits", "float32", (-1, 4)), TensorInfo("heatmap", "float32", (-1, 1, 16, 16))),
        plugin_library="libomsf2_plugins.so",
    )
    write_manifest(root / "model.int8.engine.json", manifest)
    (root / "model.onnx").write_bytes(bundle.artifacts["onnx"].read_bytes())
    fake = dataclasses.replace(bundle, root=root, artifacts={"onnx": root / "model.onnx", "engine_int8": engine})
    repo = write_triton_repo(fake, TritonRepoSpec(str(tmp_path / "repo"), gpu_instances=2))
    assert repo.models == ("omsf2_trt", "omsf2_onnx", "omsf2_preprocess", "omsf2_postprocess", "omsf2", "omsf2_cpu")
    assert repo.max_batch == 8  # the engine profile's max caps every model
    trt = parse_config(repo.root / "omsf2_trt" / "config.pbtxt")
    assert trt.platform == "tensorrt_plan" and trt.max_batch_size == 8
    assert [(g.kind, g.count) for g in trt.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 2)]
    assert not trt.optimization.execution_accelerators.cpu_execution_accelerator
    assert list(trt.input[0].dims) == [1, 64, 64] and list(trt.output[1].dims) == [1, 16, 16]
    assert (repo.root / "omsf2_trt" / "1" / "model.plan").read_bytes() == b"not a real engine"
    assert (repo.root / "omsf2_trt" / "1" / "libomsf2_plugins.so").is_file()
    assert [s.model_name for s in parse_config(repo.root / "omsf2" / "config.pbtxt").ensemble_scheduling.step][1] == (
        "omsf2_trt"
    )
    cpu = parse_config(repo.root / "omsf2_cpu" / "config.pbtxt")
    assert cpu.ensemble_scheduling.step[1].model_name == "omsf2_onnx"
    for m in repo.models:
        parse_config(repo.root / m / "config.pbtxt")


def test_spec_and_output_path_errors(bundle, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="already exists and is not an empty folder"):
        TritonRepoSpec(str(tmp_path / "full"))
    with pytest.raises(ValueError, match="parent folder"):
        TritonRepoSpec(str(tmp_path / "no" / "repo"))
    with pytest.raises(ValueError, match="cpu_instances must be a positive integer"):
        TritonRepoSpec(str(tmp_path / "r"), cpu_instances=0)
    none = dataclasses.replace(bundle, artifacts={"onnx_int8": bundle.artifacts["onnx"]})
    with pytest.raises(ValueError, match="no ONNX or TensorRT engine to serve"):
        write_triton_repo(none, TritonRepoSpec(str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()


ID = ("--name", "omsf2-tiny", "--version", "1.0.0")


def test_cli_bundle_triton(bundle, tmp_path: Path) -> None:
    export = Path(bundle.metadata["export"]["checkpoint"]["path"]).parent / "export"
    export = next(p for p in (bundle.root.parent / "export", export) if (p / "report.json").is_file())
    runner = CliRunner()
    res = runner.invoke(app, ["bundle", str(export), "--out", str(tmp_path / "b"), "--triton", str(tmp_path / "t")])
    assert res.exit_code == 1 and "--name and --version are required" in res.output
    res = runner.invoke(
        app, ["bundle", str(export), "--out", str(tmp_path / "b"), *ID, "--triton", str(tmp_path / "t")]
    )
    assert res.exit_code == 0, res.output
    assert "wrote Triton model repository" in res.output
    parse_config(tmp_path / "t" / "omsf2" / "config.pbtxt")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    res = runner.invoke(
        app, ["bundle", str(export), "--out", str(tmp_path / "b2"), *ID, "--triton", str(tmp_path / "busy")]
    )
    assert res.exit_code == 1 and "already exists" in res.output
    assert not (tmp_path / "b2").exists()  # refused before the bundle was written
