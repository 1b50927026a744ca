"""The Predictor: same numbers as onnxruntime on the same preprocessing, heat maps on the original image,
thread safety, batching, DICOM handling, and refusals."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omsf2.data.io import read_image
from omsf2.data.preprocess import preprocess_batch
from omsf2.runtime.bundle import BundleError, load_bundle
from omsf2.runtime.predictor import Predictor
from omsf2.runtime.sessions import ort_session, run_session


@pytest.fixture(scope="module")
def predictor(tiny_bundle_master: Path) -> Predictor:
    return Predictor.from_bundle(tiny_bundle_master, backend="ort", threads=1)


def test_predict_matches_onnxruntime_on_the_training_preprocessing(predictor: Predictor, images, tiny_export) -> None:
    preds = predictor.predict(images)
    bundle = load_bundle(predictor.bundle.root)
    x = preprocess_batch([read_image(p) for p in images], bundle.preprocess)
    logits, _ = run_session(ort_session(tiny_export / "model.onnx", threads=1), x)
    e = np.exp(logits - logits.max(1, keepdims=True))
    probs = e / e.sum(1, keepdims=True)
    assert [p.label for p in preds] == [bundle.classes[i] for i in logits.argmax(1)]
    for p, row, path in zip(preds, probs, images, strict=True):
        assert p.source == str(path)
        assert list(p.probabilities) == list(bundle.classes)
        np.testing.assert_allclose(list(p.probabilities.values()), row, atol=1e-6)
        assert abs(sum(p.probabilities.values()) - 1) < 1e-6
        assert p.heatmap.dtype == np.float32 and p.heatmap.shape == read_image(path).shape
        assert np.isfinite(p.heatmap).all()
        assert set(p.timing) == {"read", "preprocess", "infer"} and all(t >= 0 for t in p.timing.values())


def test_heatmap_undoes_the_letterbox(predictor: Predictor, tmp_path: Path) -> None:
    # A wide image letterboxes with padding rows; the map returned must cover only the image.
    img = np.zeros((20, 80), np.float32)
    img[:, 60:] = 1.0
    p = predictor.predict([img])[0]
    assert p.heatmap.shape == (20, 80) and p.source == "array[0]"
    from omsf2.data.preprocess import unletterbox

    session = ort_session(predictor.bundle.artifacts["onnx"], threads=1)
    _, heat = run_session(session, preprocess_batch([img], predictor.spec))
    np.testing.assert_allclose(p.heatmap, unletterbox(heat[0].reshape(heat.shape[-2:]), (20, 80), predictor.spec))


def test_batching_and_threads_give_the_serial_results(tiny_bundle_master: Path, images) -> None:
    pred = Predictor.from_bundle(tiny_bundle_master, backend="ort", threads=1)

    def probs(paths):
        return np.array([list(p.probabilities.values()) for p in pred.predict(paths)])

    serial = probs(images)
    pred.max_batch = 2  # 5 images -> batches of 2, 2, 1
    np.testing.assert_allclose(probs(images), serial, atol=1e-6)
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = probs(images[k % 2 :] + images[: k % 2])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, got in results.items():
        np.testing.assert_allclose(got, np.roll(serial, -(k % 2), axis=0), atol=1e-6)
    assert len(results) == 6


def test_non_finite_logits_are_an_error(predictor: Predictor, images) -> None:
    class NaNSession:
        name = "nan"
        max_batch = 4

        def run(self, batch):
            return np.full((len(batch), 4), np.nan, np.float32), np.zeros((len(batch), 2, 2), np.float32)

    broken = Predictor(predictor.bundle, NaNSession())
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        broken.predict(images[:1])


class FixedSession:
    """A session returning given outputs (shape and activation checks without a model)."""

    name, max_batch = "fixed", 3

    def __init__(self, logits, heat) -> None:
        self.logits, self.heat, self.calls = logits, heat, []

    def run(self, batch):
        self.calls.append(len(batch))
        n = len(batch)
        return self.logits[:n], self.heat[:n]


def test_run_batch_chunks_checks_and_activates_by_task(predictor: Predictor) -> None:
    import dataclasses

    from omsf2.runtime.rules import activate

    rng = np.random.default_rng(0)
    k, (h, w) = len(predictor.classes), predictor.spec.size
    x = rng.standard_normal((7, 1, h, w)).astype(np.float32)
    logits = rng.standard_normal((3, k)).astype(np.float32) * 3
    s = FixedSession(logits, np.ones((3, 1, 4, 4), np.float32))
    probs, heat = Predictor(predictor.bundle, s).run_batch(x)
    assert s.calls == [3, 3, 1] and probs.shape == (7, k) and heat.shape == (7, 4, 4)
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(probs[:3], e / e.sum(1, keepdims=True), rtol=1e-12)
    multilabel = Predictor(dataclasses.replace(predictor.bundle, task="multilabel"), FixedSession(logits, heat))
    sig, _ = multilabel.run_batch(x[:3])
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-12)
    np.testing.assert_allclose(sig, activate("multilabel", logits))
    assert not np.allclose(sig.sum(1), 1)  # independent findings, not a distribution
    with pytest.raises(ValueError, match=r"expected a batch of shape \(N, 1, 64, 64\)"):
        Predictor(predictor.bundle, s).run_batch(x[:, :, :32])
    wrong_k = FixedSession(np.zeros((3, k + 1), np.float32), np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="logits of shape"):
        Predictor(predictor.bundle, wrong_k).run_batch(x[:2])
    no_batch_heat = FixedSession(logits, np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="heat map of shape"):
        Predictor(predictor.bundle, no_batch_heat).run_batch(x[:2])
    inf_heat = FixedSession(logits, np.full((3, 4, 4), np.inf, np.float32))
    with pytest.raises(FloatingPointError, match="non-finite logits or heat map"):
        Predictor(predictor.bundle, inf_heat).run_batch(x[:1])


def test_the_session_runs_the_bytes_that_were_verified(tiny_bundle: Path, images) -> None:
    bundle = load_bundle(tiny_bundle)
    data = bundle.read_artifact("onnx")
    assert data == (tiny_bundle / "model.onnx").read_bytes()
    (tiny_bundle / "model.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # swapped after verification
    with pytest.raises(BundleError, match="changed after the bundle was verified"):
        bundle.read_artifact("onnx")
    from omsf2.runtime.predictor import open_session

    with pytest.raises(BundleError, match="changed after the bundle was verified"):
        open_session(bundle, "ort")
    with pytest.raises(BundleError, match="has no engine_int8 artifact"):
        bundle.read_artifact("engine_int8")


def test_an_artifact_can_be_chosen_among_those_the_backend_runs(tiny_bundle_master: Path) -> None:
    assert Predictor.from_bundle(tiny_bundle_master, backend="ort", artifact="onnx").backend == "ort"
    with pytest.raises(ValueError, match=r"backend ort does not run 'onnx_int8' \(it runs onnx\)"):
        Predictor.from_bundle(tiny_bundle_master, backend="ort", artifact="onnx_int8")
    with pytest.raises(ValueError, match=r"ort-int8: the bundle has no onnx_int8 \(it has onnx\)"):
        Predictor.from_bundle(tiny_bundle_master, backend="ort-int8", artifact="onnx_int8")


def test_unknown_or_missing_backend_is_one_line(tiny_bundle_master: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'bogus'; choose one of auto, ort, ort-int8"):
        Predictor.from_bundle(tiny_bundle_master, backend="bogus")
    with pytest.raises(ValueError, match=r"ort-int8: the bundle has no onnx_int8_cpu or onnx_int8 \(it has onnx\)"):
        Predictor.from_bundle(tiny_bundle_master, backend="ort-int8")
    with pytest.raises(ValueError, match="tensorrt: "):
        Predictor.from_bundle(tiny_bundle_master, backend="tensorrt")


def test_auto_falls_back_to_onnxruntime_without_a_gpu(tiny_bundle_master: Path) -> None:
    assert Predictor.from_bundle(tiny_bundle_master).backend == "ort"


def test_tampered_bundle_is_refused_before_a_session_opens(tiny_bundle: Path) -> None:
    (tiny_bundle / "README.md").write_text("changed")
    with pytest.raises(BundleError, match="file changed"):
        Predictor.from_bundle(tiny_bundle)


def test_bad_files_are_reported_and_the_rest_predicted(predictor: Predictor, images, tmp_path, write_dicom) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    ct = write_dicom(tmp_path / "ct.dcm", np.full((32, 32), 100, np.uint16), modality="CT")
    res = predictor.predict_files([images[0], bad, tmp_path / "missing.png", ct, images[1]])
    assert [r.error is None for r in res] == [True, False, False, False, True]
    assert "not a valid PNG/JPEG" in (res[1].error or "")
    assert res[3].error == "not applicable: modality CT (this bundle accepts CR, DR, DX)"
    assert predictor.predict_files([ct], any_modality=True)[0].prediction is not None


def _dicom_twins(write_dicom, tmp_path: Path, v: np.ndarray) -> tuple[Path, Path]:
    """A 16-bit MONOCHROME2 DICOM with rescale + window that displays exactly v/255, and its MONOCHROME1 twin."""
    slope, intercept = 2.0, -1000.0
    # display = (x - c) / w + 0.5 (LINEAR_EXACT) with x = 514 v - 1000 gives v / 255
    win = {"WindowCenter": 65535 + intercept, "WindowWidth": 131070, "VOILUTFunction": "LINEAR_EXACT"}
    m2 = write_dicom(
        tmp_path / "m2.dcm",
        (v.astype(np.uint16) * 257),
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        **win,
    )
    m1 = write_dicom(
        tmp_path / "m1.dcm",
        ((255 - v).astype(np.uint16) * 257),
        photometric="MONOCHROME1",
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        **win,
    )
    return m2, m1


def test_dicom_from_png_and_its_monochrome1_twin_predict_like_the_png(predictor: Predictor, tmp_path, write_dicom):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:90, 0:70]
    v = np.clip(np.rint(120 + 80 * np.sin(xx / 7) * np.cos(yy / 9) + 10 * rng.standard_normal((90, 70))), 0, 255)
    png = tmp_path / "x.png"
    Image.fromarray(v.astype(np.uint8)).save(png)
    m2, m1 = _dicom_twins(write_dicom, tmp_path, v)
    np.testing.assert_allclose(read_image(m2), read_image(png), atol=1e-6)
    np.testing.assert_allclose(read_image(m1), read_image(png), atol=1e-6)
    p_png, p_m2, p_m1 = predictor.predict([png, m2, m1])
    assert p_png.label == p_m2.label == p_m1.label
    for p in (p_m2, p_m1):
        assert p.probabilities == pytest.approx(p_png.probabilities, abs=1e-5)
        np.testing.assert_allclose(p.heatmap, p_png.heatmap, atol=1e-4)


def test_real_cr_dicom_predicts_like_its_png(predictor: Predictor, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    img = read_image(path)
    png = tmp_path / "cr.png"
    Image.fromarray(np.rint(img * 65535).astype(np.uint16)).save(png)
    p_dcm, p_png = predictor.predict([path, png])
    assert p_dcm.label == p_png.label
    assert p_dcm.probabilities == pytest.approx(p_png.probabilities, abs=1e-4)
    assert p_dcm.heatmap.shape == img.shape
