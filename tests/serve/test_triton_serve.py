"""``omsf2 serve triton`` for real: PyTriton's tritonserver on free 127.0.0.1 ports, called with
tritonclient over HTTP and gRPC, checked against the Predictor; 8 concurrent clients; a clean stop.

PyTriton pins numpy < 2 and the rest of [dev] does not, so the server runs in its own venv with
``omsf2[triton-serve]`` (editable: the code under test is this checkout), made once and kept in
``$OMSF2_TEST_CACHE`` (default ~/.cache/omsf2), keyed by pyproject.toml, this checkout and Python.
The tests and clients run here, in the dev venv (tritonclient works with numpy 2)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tritonclient.grpc")
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from omsf2.runtime import Predictor

REPO = Path(__file__).resolve().parents[2]
TOKEN = "omsf2-test-token"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Callable[..., Path]) -> Path:
    """An ONNX bundle of an untrained omsf2_tiny at 64 px with the phantom classes."""
    return tiny_bundle("serve", max_batch=16)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight PNG/JPEG radiograph-like images of different sizes and bit depths."""
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("serve_images")
    out = []
    for i, (h, w) in enumerate([(97, 61), (64, 64), (50, 123), (131, 77), (40, 40), (88, 88), (120, 70), (66, 99)]):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.clip(0.5 + 0.4 * np.sin(xx / (3 + i)) * np.cos(yy / 5) + 0.05 * rng.standard_normal((h, w)), 0, 1)
        if i % 3 == 2:
            p = root / f"img{i}.jpg"
            Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(p, quality=95)
        elif i % 3 == 1:
            p = root / f"img{i}.png"
            Image.fromarray(np.rint(img * 65535).astype(np.uint16)).save(p)
        else:
            p = root / f"img{i}.png"
            Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(p)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def expected(bundle: Path, images: list[Path]) -> dict[str, tuple[str, np.ndarray]]:
    """What ``omsf2 predict`` gives: the Predictor on onnxruntime, in this process."""
    preds = Predictor.from_bundle(bundle, backend="ort", threads=1).predict(images)
    classes = list(preds[0].probabilities)
    return {
        str(p): (r.label, np.array([r.probabilities[c] for c in classes])) for p, r in zip(images, preds, strict=True)
    }


@pytest.fixture(scope="module")
def server(pytriton_bin: Path, bundle: Path, kit, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    s = kit.start_triton(pytriton_bin, bundle, log, "--max-queue-delay-us", "20000")
    yield s
    if s.proc.poll() is None:
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait(30)


def _infer(mod, url: str, paths: list[Path]):
    data = np.array([[p.read_bytes()] for p in paths], dtype=np.object_)
    inp = mod.InferInput("IMAGE_BYTES", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    # Closed here, on the thread that made it: left to the garbage collector, an HTTP client's
    # __del__ may run on another thread, where gevent has no hub (an unraisable-exception warning).
    client = mod.InferenceServerClient(url)
    try:
        res = client.infer("omsf2", [inp])
    finally:
        client.close()
    labels = [b.decode() for b in res.as_numpy("label").reshape(-1)]
    return labels, res.as_numpy("probabilities"), res.as_numpy("heatmap"), res.as_numpy("original_hw")


def _check(labels, probs, paths, expected) -> None:
    for label, prob, p in zip(labels, probs, paths, strict=True):
        want_label, want_prob = expected[str(p)]
        assert label == want_label, p
        np.testing.assert_allclose(prob, want_prob, atol=1e-5)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_http_and_grpc_give_the_predictors_labels_and_probabilities(server, images, expected, protocol) -> None:
    mod, url = (httpclient, server.http) if protocol == "http" else (grpcclient, server.grpc)
    for p in images:  # one file per request
        labels, probs, heat, hw = _infer(mod, url, [p])
        _check(labels, probs, [p], expected)
        assert heat.shape == (1, 1, 16, 16) and np.isfinite(heat).all()
        assert hw.tolist() == [list(Image.open(p).size[::-1])]
    labels, probs, _, hw = _infer(mod, url, images)  # all files in one request
    _check(labels, probs, images, expected)
    assert len(hw) == len(images)
    from pydicom.data import get_testdata_file

    dcm = Path(get_testdata_file("RG1_UNCR.dcm"))  # a real 7 MB CR, sent as bytes
    (want,) = Predictor.from_bundle(server.bundle, backend="ort", threads=1).predict([dcm])
    labels, probs, _, hw = _infer(mod, url, [dcm])
    assert labels == [want.label] and hw.tolist() == [list(want.heatmap.shape)]
    np.testing.assert_allclose(probs[0], list(want.probabilities.values()), atol=1e-5)


def test_an_unreadable_file_is_an_error_the_client_sees(server) -> None:
    client = httpclient.InferenceServerClient(server.http)
    inp = httpclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"this is not an image"]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="cannot read"):
        client.infer("omsf2", [inp])
    assert client.is_model_ready("omsf2")  # and the model keeps serving


def test_eight_concurrent_clients_get_correct_answers_and_are_batched(server, images, expected) -> None:
    headers = {"triton-access-token": TOKEN}
    stats_client = httpclient.InferenceServerClient(server.http)
    before = stats_client.get_inference_statistics("omsf2", headers=headers)["model_stats"][0]
    errors: list[str] = []
    done = []

    def client(k: int) -> None:
        mod, url = (httpclient, server.http) if k % 2 else (grpcclient, server.grpc)
        try:
            for i in range(25):
                p = images[(k + i) % len(images)]
                labels, probs, _, _ = _infer(mod, url, [p])
                _check(labels, probs, [p], expected)
                done.append(1)
        except Exception as e:  # collected: an assert in a thread would be lost
            errors.append(f"client {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]
    assert len(done) == 200
    after = stats_client.get_inference_statistics("omsf2", headers=headers)["model_stats"][0]
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == 200
    assert executions < inferences  # requests were grouped into batches
    sizes = {int(b["batch_size"]) for b in after["batch_stats"]}
    assert max(sizes) > 1, sizes


def test_stats_need_the_token(server) -> None:
    with pytest.raises(InferenceServerException, match=r"restricted|403|access"):
        httpclient.InferenceServerClient(server.http).get_inference_statistics("omsf2")


def test_sigterm_stops_the_server_and_every_child(server) -> None:
    """Runs last in this module: the server fixture is stopped here."""
    children = subprocess.run(["pgrep", "-g", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 2  # omsf2 and tritonserver (and the Python-backend stub)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(90) == 0, server.log.read_text()[-2000:]
    deadline = time.monotonic() + 30
    while server.group_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not server.group_alive(), subprocess.run(
        ["ps", "-g", str(server.proc.pid)], capture_output=True, text=True
    ).stdout
    assert "stopped" in server.log.read_text()


def test_a_model_that_emits_nan_is_refused_as_predict_refuses_it(
    pytriton_bin: Path, nan_bundle: Path, images, kit, tmp_path: Path
) -> None:
    """The served model goes through the runtime's output check: NaN logits fail the request, never a NaN answer."""
    with pytest.raises(FloatingPointError, match="non-finite logits or heat map"):
        Predictor.from_bundle(nan_bundle, backend="ort", threads=1).predict(images[:1])
    s = kit.start_triton(pytriton_bin, nan_bundle, tmp_path / "nan.log", "--backend", "ort")
    try:
        for mod, url in ((httpclient, s.http), (grpcclient, s.grpc)):
            with pytest.raises(InferenceServerException, match="non-finite logits or heat map"):
                _infer(mod, url, images[:2])
        assert httpclient.InferenceServerClient(s.http).is_model_ready("omsf2")  # and it keeps serving
    finally:
        os.killpg(s.proc.pid, signal.SIGTERM)
        s.proc.wait(90)


def test_port_in_use_and_bad_bundle_are_one_line_errors(pytriton_bin: Path, bundle: Path, kit, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    omsf2 = str(pytriton_bin / "omsf2")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        http, metrics = kit.free_ports(2)
        run = subprocess.run(
            [omsf2, "serve", "triton", "--model", str(bundle), "--http-port", str(http), "--grpc-port", str(port),
             "--metrics-port", str(metrics)],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
    assert run.returncode == 1 and f"cannot serve grpc on 127.0.0.1:{port}" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run([omsf2, "serve", "triton", "--model", str(tmp_path / "nope")], capture_output=True, text=True,
                         timeout=120, env=env)  # fmt: skip
    assert run.returncode == 1 and run.stderr.startswith("error: bundle") and "Traceback" not in run.stderr


@pytest.mark.needs_trt
def test_repository_on_a_gpu_triton_server(images) -> None:
    """NVIDIA's Triton container serving ``omsf2 bundle BUNDLE --triton REPO`` (README's docker command):
    set OMSF2_TRITON_URL (HTTP host:port) and OMSF2_TRITON_BUNDLE (the bundle REPO was written from)."""
    url, bundle = os.environ.get("OMSF2_TRITON_URL"), os.environ.get("OMSF2_TRITON_BUNDLE")
    if not (url and bundle):
        pytest.skip("set OMSF2_TRITON_URL=host:port and OMSF2_TRITON_BUNDLE=path of the served bundle")
    preds = Predictor.from_bundle(bundle, backend="auto").predict(images)  # TensorRT, as the ensemble runs
    labels, probs, heat, hw = _infer(httpclient, url, images)
    assert labels == [p.label for p in preds]
    classes = list(preds[0].probabilities)
    np.testing.assert_allclose(probs, [[p.probabilities[c] for c in classes] for p in preds], atol=1e-4)
    assert heat.shape[0] == len(images) and hw.tolist() == [list(Image.open(p).size[::-1]) for p in images]


def test_repository_python_models_run_in_a_real_tritonserver(
    pytriton_bin: Path, bundle: Path, images, expected, kit, tmp_path
):
    """The generated omsf2_preprocess / omsf2_postprocess load and run in the tritonserver PyTriton ships
    (it has no onnxruntime backend, so the ONNX step between them runs here, as the ensemble would)."""
    import onnxruntime as ort

    from omsf2.export.triton_repo import TritonRepoSpec, write_triton_repo
    from omsf2.runtime.bundle import load_bundle

    repo = write_triton_repo(load_bundle(bundle), TritonRepoSpec(str(tmp_path / "repo")))
    where = subprocess.run(
        [str(pytriton_bin / "python"), "-c",
         "import pathlib, sys, sysconfig, pytriton; from pytriton.utils.distribution import get_libs_path; "
         "print(pathlib.Path(pytriton.__file__).parent / 'tritonserver'); print(get_libs_path()); "
         "print(sysconfig.get_config_var('LIBDIR')); print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split("\n")  # fmt: skip
    dist, libs, libdir, pyver = where[:4]
    server_dir = tmp_path / "tritonserver"
    shutil.copytree(dist, server_dir, ignore=shutil.ignore_patterns("python_backend_stubs"))
    stub = Path(dist) / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    shutil.copy(stub, server_dir / "backends" / "python" / "triton_python_backend_stub")
    http, grpc = kit.free_ports(2)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(OMP_NUM_THREADS="1", PATH=f"{pytriton_bin}:{env['PATH']}", LD_LIBRARY_PATH=f"{libdir}:{libs}")
    log = tmp_path / "tritonserver.log"
    cmd = [str(server_dir / "bin" / "tritonserver"), f"--model-repository={repo.root}",
           "--model-control-mode=explicit", "--load-model=omsf2_preprocess", "--load-model=omsf2_postprocess",
           f"--backend-directory={server_dir / 'backends'}", "--http-address=127.0.0.1", f"--http-port={http}",
           "--grpc-address=127.0.0.1", f"--grpc-port={grpc}", "--allow-metrics=false"]  # fmt: skip
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        deadline = time.monotonic() + 180
        while not _ready(client, ("omsf2_preprocess", "omsf2_postprocess")):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        data = np.array([[p.read_bytes()] for p in images], dtype=np.object_)
        inp = httpclient.InferInput("IMAGE_BYTES", list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        pre = client.infer("omsf2_preprocess", [inp])
        assert pre.as_numpy("original_hw").tolist() == [list(Image.open(p).size[::-1]) for p in images]
        logits, heat = ort.InferenceSession(str(repo.root / "omsf2_onnx" / "1" / "model.onnx")).run(
            None, {"image": pre.as_numpy("image")}
        )
        lg = httpclient.InferInput("logits", list(logits.shape), "FP32")
        lg.set_data_from_numpy(logits)
        hm = httpclient.InferInput("heatmap", list(heat.shape), "FP32")
        hm.set_data_from_numpy(heat)
        post = client.infer("omsf2_postprocess", [lg, hm])
        labels = [b.decode() for b in post.as_numpy("label").reshape(-1)]
        _check(labels, post.as_numpy("probabilities"), images, expected)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def _ready(client, models) -> bool:
    try:
        return all(client.is_model_ready(m) for m in models)
    except Exception:
        return False
