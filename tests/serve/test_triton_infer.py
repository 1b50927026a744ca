"""The serving callable and spec without a server (fast; the real server is in test_triton_serve.py)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from omsf2.cli.app import app
from omsf2.runtime import Predictor
from omsf2.serve.triton import TritonServeSpec, _with_libpython, make_infer_fn


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Callable[..., Path]) -> Path:
    return tiny_bundle("infer", seed=1)


def test_infer_fn_splits_batches_and_answers_each_request_as_the_predictor(bundle, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for i, (h, w) in enumerate([(50, 70), (64, 64), (90, 45), (33, 80), (71, 71)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8)).save(p)
        files.append(p)
    predictor = Predictor.from_bundle(bundle, backend="ort", threads=1)
    predictor.max_batch = 2  # five rows in three session calls
    infer = make_infer_fn(predictor)
    requests = [
        {"IMAGE_BYTES": np.array([[files[0].read_bytes()], [files[1].read_bytes()]], dtype=np.object_)},
        {"IMAGE_BYTES": np.array([[files[2].read_bytes()]], dtype=np.object_)},
        {"IMAGE_BYTES": np.array([[f.read_bytes()] for f in files[3:]], dtype=np.object_)},
    ]
    out = infer(requests)
    assert [len(o["label"]) for o in out] == [2, 1, 2]
    want = predictor.predict(files)
    labels = [b.decode() for o in out for b in o["label"].reshape(-1)]
    assert labels == [w.label for w in want]
    probs = np.concatenate([o["probabilities"] for o in out])
    np.testing.assert_allclose(probs, [list(w.probabilities.values()) for w in want], atol=1e-6)
    assert np.concatenate([o["original_hw"] for o in out]).tolist() == [
        [50, 70],
        [64, 64],
        [90, 45],
        [33, 80],
        [71, 71],
    ]
    assert all(o["heatmap"].shape[1:] == (1, 16, 16) for o in out)


def test_infer_fn_reads_a_real_cr_dicom_from_bytes(bundle) -> None:
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("RG1_UNCR.dcm"))
    predictor = Predictor.from_bundle(bundle, backend="ort", threads=1)
    (out,) = make_infer_fn(predictor)([{"IMAGE_BYTES": np.array([[path.read_bytes()]], dtype=np.object_)}])
    (want,) = predictor.predict([path])
    assert out["label"][0][0].decode() == want.label
    np.testing.assert_allclose(out["probabilities"][0], list(want.probabilities.values()), atol=1e-6)
    assert out["original_hw"][0].tolist() == list(want.heatmap.shape)


def test_infer_fn_refuses_non_finite_outputs_as_predict_does(nan_bundle: Path, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)).save(image)
    predictor = Predictor.from_bundle(nan_bundle, backend="ort", threads=1)
    with pytest.raises(FloatingPointError, match="non-finite logits or heat map"):
        predictor.predict([image])
    infer = make_infer_fn(predictor)
    with pytest.raises(FloatingPointError, match="non-finite logits or heat map"):
        infer([{"IMAGE_BYTES": np.array([[image.read_bytes()]], dtype=np.object_)}])
    res = CliRunner().invoke(app, ["predict", str(image), "--model", str(nan_bundle), "--backend", "ort"])
    assert res.exit_code == 1 and "non-finite logits or heat map" in res.output


def test_infer_fn_names_an_unreadable_file(bundle) -> None:
    infer = make_infer_fn(Predictor.from_bundle(bundle, backend="ort", threads=1))
    with pytest.raises(ValueError, match="cannot read"):
        infer([{"IMAGE_BYTES": np.array([[b"GIF89a garbage"]], dtype=np.object_)}])


def test_spec_rejects_bad_ports_and_names() -> None:
    with pytest.raises(ValueError, match="http_port must be a port number"):
        TritonServeSpec("b", http_port=0)
    with pytest.raises(ValueError, match="ports must differ"):
        TritonServeSpec("b", http_port=9000, grpc_port=9000)
    with pytest.raises(ValueError, match="model_name"):
        TritonServeSpec("b", model_name="../x")
    with pytest.raises(ValueError, match="max_batch"):
        TritonServeSpec("b", max_batch=0)


def test_libpython_goes_first_once() -> None:
    import sysconfig

    libdir = sysconfig.get_config_var("LIBDIR")
    assert _with_libpython(f"/a:{libdir}:/b").split(":") == [libdir, "/a", "/b"]
    assert _with_libpython(None) == libdir


def test_cli_errors_are_one_line(bundle, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["serve", "triton", "--model", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "is not a folder" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["serve", "triton", "--model", str(bundle), "--http-port", "9001", "--grpc-port", "9001"])
    assert res.exit_code == 1 and "ports must differ" in res.output
    if importlib.util.find_spec("pytriton") is None:
        res = runner.invoke(app, ["serve", "triton", "--model", str(bundle)])
        assert res.exit_code == 1
        assert "needs pytriton, which is not installed (pip install 'omsf2[triton-serve]')" in res.output


def test_serve_triton_refuses_a_bundle_the_trust_policy_refuses(bundle, tmp_path: Path) -> None:
    """--trust and --expect-sha256 are checked before PyTriton is imported or a port bound."""
    from omsf2.runtime.trust import generate_keypair

    _, pub = generate_keypair(tmp_path / "site")
    runner = CliRunner()
    for args, message in [
        (["--trust", str(pub)], "is not signed (no manifest.sig) and --trust requires a signature"),
        (["--expect-sha256", "f" * 64], "is not the pinned --expect-sha256"),
    ]:
        res = runner.invoke(app, ["serve", "triton", "--model", str(bundle), *args])
        assert res.exit_code == 1 and message in res.output and len(res.output.strip().splitlines()) == 1
