"""Fixtures of the export tests: 64-px phantoms and one INT8 export (the tiny checkpoint is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def phantoms64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 train (the calibration minimum), 16 val and 16 test phantoms at 64 px."""
    from omsf2.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("phantoms64") / "data"
    write_dataset(root, 64, seed=5, size=64, n_val=16, n_test=16, workers=1)
    return root


@pytest.fixture(scope="session")
def int8_export(tiny_ckpt: Path, phantoms64: Path, tmp_path_factory: pytest.TempPathFactory):
    """One full ``run_export(--int8)`` shared by the tests that only inspect its artifacts."""
    from omsf2.export.targets import ExportSpec, run_export

    out = tmp_path_factory.mktemp("export") / "out"
    return run_export(
        ExportSpec(
            str(tiny_ckpt),
            str(out),
            int8=True,
            calib_data=str(phantoms64 / "train"),
            calib_count=64,
            eval_data=str(phantoms64 / "test"),
            max_drop=100.0,  # an untrained model: this fixture tests plumbing, the gate has its own test
        )
    )


class FakeEngineSession:
    """Stands in for the runtime's TensorRT session: runs the ONNX an engine was "built" from in onnxruntime.

    ``corrupt``: rotate the logits by one class (every answer changes), as a broken engine would.
    Each batch size it is called with is recorded in ``state["batches"]``.
    """

    name = "tensorrt"

    def __init__(self, onnx_path: str, max_batch: int, corrupt: bool, state: dict) -> None:
        from omsf2.runtime.sessions import ort_session

        self._session = ort_session(onnx_path)
        self.max_batch = max_batch
        self.corrupt = corrupt
        self.state = state
        self.closed = False

    def run(self, batch):
        import numpy as np

        self.state["batches"].append(len(batch))
        logits, heat = self._session.run(["logits", "heatmap"], {"image": batch})
        return (np.roll(logits, 1, axis=1) if self.corrupt else logits), heat

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> dict:
    """TensorRT replaced for the export: a "build" writes the source ONNX's path as the engine, with a manifest;
    the engine gate's session runs that ONNX in onnxruntime (:class:`FakeEngineSession`).

    The returned state: ``builds`` (target file, source ONNX, EngineSpec), ``batches`` (each batch the
    gate ran), ``corrupt`` (engine file names whose session rotates its answers).
    """
    import omsf2.export.engine_gate as engine_gate
    import omsf2.export.tensorrt as trt_layer
    import omsf2.export.trt_dynamo as dynamo_layer
    from omsf2.export import targets
    from omsf2.runtime.engine_manifest import EngineManifest, TensorInfo

    state: dict = {"builds": [], "batches": [], "corrupt": set(), "sessions": []}

    def write(out_path: Path, source: Path, spec) -> Path:
        image = TensorInfo("image", "float32", (-1, 1, 64, 64), ((1, 1, 64, 64),) * 3)
        manifest = EngineManifest(
            engine_file=out_path.name, engine_sha256="0" * 64, tensorrt_version="10.3.0", gpu_name="Fake GPU",
            compute_capability=(9, 0), precision=spec.precision, inputs=(image,),
            outputs=(TensorInfo("logits", "float32", (-1, 4)),),
        )  # fmt: skip
        state["builds"].append((out_path.name, Path(source), spec))
        return trt_layer.write_engine(out_path, str(source).encode(), manifest)

    def fake_build(onnx_path: Path, spec, out_path: Path, *, onnx_report=None) -> Path:
        return write(out_path, onnx_path, spec)

    def fake_torch_trt(ckpt: Path, spec, out_path: Path) -> Path:
        return write(out_path, out_path.parent / "model.onnx", spec)  # runs as the FP32 ONNX

    def fake_open(bundle, target: str):
        path = bundle.artifacts[target]
        session = FakeEngineSession(bundle.read_artifact(target).decode(), bundle.max_batch,
                                    path.name in state["corrupt"], state)  # fmt: skip
        state["sessions"].append(session)
        return session

    monkeypatch.setattr(targets, "_engine_unavailable", lambda: None)
    monkeypatch.setattr(trt_layer, "build_engine", fake_build)
    monkeypatch.setattr(dynamo_layer, "build_engine_torch_tensorrt", fake_torch_trt)
    monkeypatch.setattr(engine_gate, "open_engine_session", fake_open)
    return state
