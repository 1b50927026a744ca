"""The C/C++ runtime: compiled here with the system g++, its preprocessing held to omsf2.data.io +
omsf2.data.preprocess within 1e-5 on generated buffers, its C ABI (v2: buffer length, row stride,
signed samples) and bundle checks exercised. The shared rules are held to Python in
test_rules_parity.py; OpenVINO inference and the scanner host in test_scanner_host.py."""

from __future__ import annotations

import ctypes
import json
import locale
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from omsf2.config import PreprocessSpec, ResizeMode
from omsf2.data.io import read_image
from omsf2.data.preprocess import preprocess, unletterbox

CPP = Path(__file__).resolve().parents[2] / "omsf2" / "runtime" / "cpp"
CXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) on this machine")


class Image(ctypes.Structure):
    _fields_ = [
        ("pixels", ctypes.c_void_p),
        ("pixels_len", ctypes.c_size_t),
        ("row_stride", ctypes.c_size_t),
        ("width", ctypes.c_int32),
        ("height", ctypes.c_int32),
        ("bits_allocated", ctypes.c_int32),
        ("bits_stored", ctypes.c_int32),
        ("pixel_signed", ctypes.c_int32),
        ("photometric", ctypes.c_int),
        ("rescale_slope", ctypes.c_double),
        ("rescale_intercept", ctypes.c_double),
        ("has_window", ctypes.c_int32),
        ("window_center", ctypes.c_double),
        ("window_width", ctypes.c_double),
        ("voi_function", ctypes.c_int),
    ]


class Spec(ctypes.Structure):
    _fields_ = [
        ("height", ctypes.c_int32),
        ("width", ctypes.c_int32),
        ("channels", ctypes.c_int32),
        ("letterbox", ctypes.c_int32),
        ("pad_value", ctypes.c_float),
        ("mean", ctypes.c_float * 3),
        ("std", ctypes.c_float * 3),
    ]


class Box(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("top", "left", "new_height", "new_width")]


@pytest.fixture(scope="module")
def lib(cpp_lib: ctypes.CDLL) -> ctypes.CDLL:
    """The C library (tests/runtime/conftest.py builds it once per session)."""
    return cpp_lib


def _spec(pre: PreprocessSpec) -> Spec:
    mean = list(pre.mean) * (3 // len(pre.mean)) if len(pre.mean) == 1 else list(pre.mean)
    std = list(pre.std) * (3 // len(pre.std)) if len(pre.std) == 1 else list(pre.std)
    return Spec(
        pre.size[0],
        pre.size[1],
        pre.channels,
        int(pre.resize is ResizeMode.LETTERBOX),
        pre.pad_value,
        (ctypes.c_float * 3)(*mean),
        (ctypes.c_float * 3)(*std),
    )


VOI = {"LINEAR": 0, "LINEAR_EXACT": 1, "SIGMOID": 2}


def _image(arr: np.ndarray, bits: int, mono1: bool, slope=1.0, intercept=0.0, window=None) -> Image:
    """An omsf2_image over ``arr`` (a 2-D view, strided or not), its length and stride from numpy."""
    c, w, fn = (*window, "LINEAR")[:3] if window else (0.0, 0.0, "LINEAR")
    nbytes = (arr.shape[0] - 1) * arr.strides[0] + arr.shape[1] * arr.itemsize if arr.size else 0
    return Image(
        arr.ctypes.data,
        nbytes,
        arr.strides[0],
        arr.shape[1],
        arr.shape[0],
        arr.dtype.itemsize * 8,
        bits,
        int(arr.dtype.kind == "i"),
        1 if mono1 else 2,
        slope,
        intercept,
        int(window is not None),
        c,
        w,
        VOI[fn],
    )


CASES = [
    # (h, w, bits stored, MONOCHROME1, rescale (slope, intercept), window (center, width[, VOI function]) or None)
    (37, 53, 12, False, (1.0, 0.0), (2048.0, 3000.0)),
    (129, 67, 16, True, (1.0, -1024.0), (20000.0, 40001.0)),
    (211, 300, 12, True, (0.5, 10.0), None),
    (64, 64, 16, False, (2.0, -1000.0), None),
    (13, 21, 8, False, (1.0, 0.0), (100.0, 80.0)),
    (9, 250, 16, True, (1.0, 0.0), (30000.5, 1.0)),
    (41, 77, 12, False, (1.0, 0.0), (2048.0, 3000.0, "LINEAR_EXACT")),
    (77, 41, 16, True, (1.0, -5.0), (30000.0, 20000.0, "SIGMOID")),
    (50, 50, 12, False, (1.0, 0.0), (2048.0, 0.5)),  # invalid LINEAR width: min-max, as Python
]
SPECS = [
    PreprocessSpec(size=(64, 64)),
    PreprocessSpec(
        size=(96, 64),
        resize=ResizeMode.STRETCH,
        channels=3,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        pad_value=0.5,
    ),
    PreprocessSpec(size=(32, 160), pad_value=0.25),
]


def _buffer(h: int, w: int, bits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 2**bits - 1
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = (0.5 + 0.45 * np.sin(xx / 5.0) * np.cos(yy / 7.0)) * top
    arr = np.clip(np.rint(smooth + rng.normal(0, top * 0.03, (h, w))), 0, top)
    return np.ascontiguousarray(arr.astype(np.uint8 if bits <= 8 else np.uint16))


def _python_reference(tmp: Path, arr, bits, mono1, rescale, window) -> np.ndarray:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"  # what the clinical gate asks for
    ds.set_pixel_data(arr, "MONOCHROME1" if mono1 else "MONOCHROME2", bits)
    ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window:
        ds.WindowCenter, ds.WindowWidth = window[:2]
        if len(window) > 2:
            ds.VOILUTFunction = window[2]
    path = tmp / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    return read_image(path)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_cpp_preprocessing_matches_python(lib, tmp_path: Path, case: int) -> None:
    h, w, bits, mono1, rescale, window = CASES[case]
    arr = _buffer(h, w, bits, case)
    ref_img = _python_reference(tmp_path, arr, bits, mono1, rescale, window)
    im = _image(arr, bits, mono1, *rescale, window=window)
    unit = np.empty((h, w), np.float32)
    assert lib.omsf2_to_unit_range(ctypes.byref(im), unit.ctypes.data_as(ctypes.c_void_p), unit.size) == 0
    np.testing.assert_allclose(unit, ref_img, atol=1e-6, rtol=0)
    for pre in SPECS:
        ref = preprocess(ref_img, pre)
        got = np.empty_like(ref)
        box = Box()
        st = lib.omsf2_preprocess(
            ctypes.byref(_spec(pre)), ctypes.byref(im), got.ctypes.data_as(ctypes.c_void_p), got.size, ctypes.byref(box)
        )
        assert st == 0, lib.omsf2_last_error()
        assert np.abs(got - ref).max() <= 1e-5, (pre, np.abs(got - ref).max())
        hm = np.random.default_rng(case).standard_normal((pre.size[0] // 8, pre.size[1] // 8)).astype(np.float32)
        back = np.empty((h, w), np.float32)
        st = lib.omsf2_unletterbox(
            ctypes.byref(_spec(pre)),
            hm.ctypes.data_as(ctypes.c_void_p),
            hm.shape[0],
            hm.shape[1],
            h,
            w,
            back.ctypes.data_as(ctypes.c_void_p),
            back.size,
        )
        assert st == 0, lib.omsf2_last_error()
        assert np.abs(back - unletterbox(hm, (h, w), pre)).max() <= 1e-5


def test_bad_arguments_are_codes_and_messages(lib) -> None:
    arr = np.zeros((4, 4), np.uint16)
    out = np.empty(64 * 64, np.float32)
    im = _image(arr, 16, False)
    st = lib.omsf2_preprocess(
        ctypes.byref(_spec(PreprocessSpec(size=(64, 64)))),
        ctypes.byref(im),
        out.ctypes.data_as(ctypes.c_void_p),
        out.size,
        None,
    )
    assert st == 1 and b"at least 8x8" in lib.omsf2_last_error()
    im = _image(np.zeros((8, 8), np.uint16), 17, False)
    st = lib.omsf2_to_unit_range(ctypes.byref(im), out.ctypes.data_as(ctypes.c_void_p), out.size)
    assert st == 1 and b"bits_stored" in lib.omsf2_last_error()
    assert lib.omsf2_to_unit_range(None, None, 0) == 1


def test_signed_and_strided_buffers_read_like_python(lib, tmp_path: Path) -> None:
    """Pixel Representation 1 (two's complement in BitsStored bits) and a row stride wider than the row."""
    signed = (_buffer(45, 38, 12, 9).astype(np.int32) - 2048).astype(np.int16)
    ref = _python_reference(tmp_path, signed, 12, False, (1.0, 0.0), (0.0, 3000.0))
    padded = np.zeros((45, 38 + 5), np.int16)
    padded[:, 2:40] = signed
    for view in (signed, padded[:, 2:40]):
        unit = np.empty((45, 38), np.float32)
        im = _image(view, 12, False, window=(0.0, 3000.0))
        assert lib.omsf2_to_unit_range(ctypes.byref(im), unit.ctypes.data_as(ctypes.c_void_p), unit.size) == 0, (
            lib.omsf2_last_error()
        )
        np.testing.assert_allclose(unit, ref, atol=1e-6, rtol=0)


def test_every_read_is_bounds_checked(lib) -> None:
    arr = _buffer(20, 16, 12, 1)
    out = np.empty(arr.size, np.float32)
    ptr = out.ctypes.data_as(ctypes.c_void_p)
    short = _image(arr, 12, False)
    short.pixels_len -= 1
    assert lib.omsf2_to_unit_range(ctypes.byref(short), ptr, out.size) == 1
    assert lib.omsf2_last_error() == b"pixel buffer holds 639 bytes; 16x20 at 16 bits needs 640"
    narrow = _image(arr, 12, False)
    narrow.row_stride = 30
    assert lib.omsf2_to_unit_range(ctypes.byref(narrow), ptr, out.size) == 1
    assert b"shorter than a row (32 bytes)" in lib.omsf2_last_error()
    wide = _image(arr, 12, False)
    wide.row_stride = 1 << 62  # the arithmetic must not wrap round to a small size
    assert lib.omsf2_to_unit_range(ctypes.byref(wide), ptr, out.size) == 1
    assert b"pixel buffer holds 640 bytes" in lib.omsf2_last_error()


def test_runtime_verifies_the_bundle_and_reads_its_spec(lib, tiny_bundle: Path) -> None:
    rt = ctypes.c_void_p()
    assert lib.omsf2_runtime_create(str(tiny_bundle).encode(), ctypes.byref(rt)) == 0, lib.omsf2_last_error()
    try:
        m = json.loads((tiny_bundle / "manifest.json").read_text())
        n = lib.omsf2_runtime_num_classes(rt)
        assert [lib.omsf2_runtime_class_name(rt, i).decode() for i in range(n)] == m["classes"]
        spec = Spec()
        assert lib.omsf2_runtime_spec(rt, ctypes.byref(spec)) == 0
        assert (spec.height, spec.width, spec.channels, spec.letterbox) == (64, 64, 1, 1)
        arr = _buffer(40, 50, 12, 0)
        im = _image(arr, 12, False)
        res = ctypes.c_void_p()
        st = lib.omsf2_runtime_run(rt, ctypes.byref(im), ctypes.byref(res))
        assert lib.omsf2_has_openvino() == 0 and lib.omsf2_has_tensorrt() == 0  # built here without either
        assert st == 4 and b"built without an inference backend" in lib.omsf2_last_error() and not res.value
    finally:
        lib.omsf2_runtime_destroy(rt)


def _create(lib, path: Path) -> tuple[int, bytes]:
    rt = ctypes.c_void_p()
    st = lib.omsf2_runtime_create(str(path).encode(), ctypes.byref(rt))
    msg = lib.omsf2_last_error()
    lib.omsf2_runtime_destroy(rt)
    return st, msg


def test_runtime_refuses_tampered_bundles(lib, tiny_bundle: Path) -> None:
    onnx = tiny_bundle / "model.onnx"
    good = onnx.read_bytes()
    onnx.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    assert _create(lib, tiny_bundle) == (
        2,
        f"bundle '{tiny_bundle}': 'model.onnx' does not match its sha256 in manifest.json (file changed)".encode(),
    )
    onnx.write_bytes(good)
    (tiny_bundle / "added.txt").write_text("x")
    st, msg = _create(lib, tiny_bundle)
    assert st == 2 and b"'added.txt' is not listed in manifest.json (file added)" in msg
    (tiny_bundle / "added.txt").unlink()
    manifest = tiny_bundle / "manifest.json"
    m = json.loads(manifest.read_text())
    for name in ("../x.onnx", "/etc/passwd"):
        manifest.write_text(json.dumps({**m, "files": {**m["files"], name: "0" * 64}}))
        st, msg = _create(lib, tiny_bundle)
        assert st == 2 and b"escapes the bundle folder" in msg
    manifest.write_text(json.dumps({**m, "format_version": 2}))
    st, msg = _create(lib, tiny_bundle)
    assert st == 2 and b"format version 2; this runtime reads up to 1" in msg
    manifest.write_text(json.dumps(m))
    assert _create(lib, tiny_bundle)[0] == 0


def _spec_of(lib, bundle: Path) -> tuple[tuple[int, ...], ...]:
    rt = ctypes.c_void_p()
    assert lib.omsf2_runtime_create(str(bundle).encode(), ctypes.byref(rt)) == 0, lib.omsf2_last_error()
    spec = Spec()
    assert lib.omsf2_runtime_spec(rt, ctypes.byref(spec)) == 0
    lib.omsf2_runtime_destroy(rt)
    return (spec.height, spec.width, spec.channels), (spec.pad_value,) * 3, tuple(spec.mean), tuple(spec.std)


def _set_preprocess(bundle: Path, **changes) -> None:
    """Change the preprocessing in the manifest and in model.onnx's omsf2.preprocess alike (they must agree)."""
    import hashlib

    import onnx

    model = onnx.load(str(bundle / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == "omsf2.preprocess":
            prop.value = json.dumps({**json.loads(prop.value), **changes})
    onnx.save(model, str(bundle / "model.onnx"))
    manifest = bundle / "manifest.json"
    m = json.loads(manifest.read_text())
    m["preprocess"].update(changes)
    m["files"]["model.onnx"] = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    manifest.write_text(json.dumps(m))


def test_a_comma_locale_in_the_host_changes_nothing(lib, tiny_bundle: Path, comma_locale, monkeypatch) -> None:
    """The host process sets de_DE.UTF-8 before creating the runtime: the manifest's numbers read the same."""
    _set_preprocess(tiny_bundle, mean=[0.485], std=[0.229], pad_value=0.25)
    before = _spec_of(lib, tiny_bundle)
    assert np.allclose(before[1:], [[0.25] * 3, [0.485] * 3, [0.229] * 3])
    monkeypatch.setenv("LOCPATH", comma_locale["LOCPATH"])
    old = locale.setlocale(locale.LC_ALL)
    try:
        locale.setlocale(locale.LC_ALL, comma_locale["LC_ALL"])
        assert locale.localeconv()["decimal_point"] == ","
        libc = ctypes.CDLL(None)
        libc.strtod.restype = ctypes.c_double
        assert libc.strtod(b"0.485", None) == 0.0  # what a locale-following parser would read
        assert _spec_of(lib, tiny_bundle) == before
        doc = b'{"a": [0.485, 1e-3]}'
        assert lib.omsf2_check_json(doc, len(doc)) == 0
    finally:
        locale.setlocale(locale.LC_ALL, old)


def test_header_is_c(tmp_path: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "use.c"
    src.write_text('#include "omsf2_runtime.h"\nint main(void) { omsf2_image im = {0}; (void)im; return 0; }\n')
    proc = subprocess.run(
        [cc, "-std=c99", "-Wall", "-Werror", "-I", str(CPP), "-fsyntax-only", str(src)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


EXAMPLE = CPP.parents[2] / "examples" / "scanner"


def _cmake_build(build: Path, *options: str) -> Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    for cmd in (
        [cmake, "-S", str(EXAMPLE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DOMSF2_WERROR=ON", *options],
        [cmake, "--build", str(build), "-j", "2"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return build / "scanner_host"


@pytest.fixture(scope="module")
def scanner_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host without an inference backend, whatever is installed (OpenVINO's is test_scanner_host.py's)."""
    return _cmake_build(tmp_path_factory.mktemp("scanner"), "-DCMAKE_DISABLE_FIND_PACKAGE_OpenVINO=ON")


def test_example_host_verifies_preprocesses_and_reports_missing_inference(scanner_host, tiny_bundle, tmp_path) -> None:
    arr = _buffer(150, 97, 12, 11)
    raw = tmp_path / "img.u16"
    raw.write_bytes(arr.astype("<u2").tobytes())
    dump = tmp_path / "input.f32"
    args = [
        str(scanner_host),
        str(tiny_bundle),
        "--raw",
        str(raw),
        "97",
        "150",
        "12",
        "--mono1",
        "--rescale",
        "1",
        "-24",
        "--window",
        "2000",
        "3000",
        "--dump-input",
        str(dump),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert "input 1x64x64" in proc.stdout
    ref = preprocess(
        _python_reference(tmp_path, arr, 12, True, (1.0, -24.0), (2000.0, 3000.0)), PreprocessSpec(size=(64, 64))
    )
    got = np.fromfile(dump, np.float32).reshape(ref.shape)
    assert np.abs(got - ref).max() <= 1e-5
    assert proc.returncode == 3 and "inference unavailable" in proc.stderr  # built without OpenVINO or TensorRT
    assert "built without an inference backend" in proc.stderr
    (tiny_bundle / "README.md").write_text("tampered")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: bundle") and "file changed" in proc.stderr
    bad = subprocess.run(
        [str(scanner_host), str(tiny_bundle), "--raw", str(raw), "97", "151", "12"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "needs" in bad.stderr


def test_example_host_holds_the_bundle_to_a_digest_and_a_signer(scanner_host, tiny_export, tmp_path) -> None:
    import hashlib

    from omsf2.runtime.bundle import BundleSpec, make_bundle
    from omsf2.runtime.trust import generate_keypair

    key, pub = generate_keypair(tmp_path / "site")
    _, other = generate_keypair(tmp_path / "other")
    bundle = make_bundle(BundleSpec(str(tiny_export), str(tmp_path / "signed"), sign=str(key)))
    digest = hashlib.sha256((bundle.root / "manifest.json").read_bytes()).hexdigest()
    raw = tmp_path / "img.u16"
    raw.write_bytes(_buffer(70, 60, 12, 3).astype("<u2").tobytes())

    def host(*trust: str) -> subprocess.CompletedProcess[str]:
        args = [str(scanner_host), str(bundle.root), "--raw", str(raw), "60", "70", "12", *trust]
        return subprocess.run(args, capture_output=True, text=True, timeout=120)

    ok = host("--expect-sha256", digest, "--trust", str(pub))
    if "built with OpenSSL" in ok.stderr:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("the C library was built without OpenSSL (apt-get install libssl-dev)")
        pytest.skip("the C library was built without OpenSSL (apt-get install libssl-dev)")
    assert ok.returncode == 3, ok.stderr  # trusted; this build has no inference backend
    assert f"bundle sha256 {digest}, signed by key {bundle.signer[:16]}" in ok.stdout
    bad = host("--expect-sha256", "0" * 64)
    assert bad.returncode == 2 and "is not the pinned expect_sha256" in bad.stderr
    wrong = host("--trust", str(other))
    assert wrong.returncode == 2 and "which is not a trusted key" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1


@pytest.mark.needs_trt
def test_cpp_tensorrt_runtime_matches_the_python_predictor(tmp_path: Path, tiny_export: Path) -> None:
    """Build the host with TensorRT, run an INT8-free FP32 engine bundle, hold it to Predictor(backend=tensorrt)."""
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.runtime.bundle import BundleSpec, make_bundle
    from omsf2.runtime.predictor import Predictor

    host = _cmake_build(tmp_path / "build")
    export = tmp_path / "export"
    from omsf2.data.synthetic import write_dataset

    write_dataset(tmp_path / "phantoms", 8, seed=1, size=64, n_val=4, n_test=8, workers=1)  # the engine gate's images
    run_export(ExportSpec(str(tiny_export.parent / "tiny.pt"), str(export), format="all", batch="1,1,4",
                          eval_data=str(tmp_path / "phantoms" / "test"),
                          max_drop=100.0, min_agreement=0.0))  # fmt: skip
    make_bundle(BundleSpec(str(export), str(tmp_path / "bundle")))
    arr = _buffer(120, 90, 12, 5)
    raw = tmp_path / "img.u16"
    raw.write_bytes(arr.astype("<u2").tobytes())
    proc = subprocess.run(
        [str(host), str(tmp_path / "bundle"), "--raw", str(raw), "90", "120", "12"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    pred = Predictor.from_bundle(tmp_path / "bundle", backend="tensorrt")
    img = _python_reference(tmp_path, arr, 12, False, (1.0, 0.0), None)
    p = pred.predict([img])[0]
    assert f"stage: {p.label}" in proc.stdout
    for name, prob in p.probabilities.items():
        line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith(name + " "))
        assert abs(float(line.split()[-1]) - prob) < 1e-3


def test_example_host_reads_dicom_with_dcmtk(scanner_host, tiny_bundle, tmp_path) -> None:
    """With DCMTK (Debian's libdcmtk-dev) the host reads the real CR and MONOCHROME1/2 files like omsf2.data.io."""
    from pydicom.data import get_testdata_file

    cr = get_testdata_file("RG1_UNCR.dcm")
    if cr is None:
        pytest.skip("pydicom-data is not installed")
    arr = _buffer(90, 70, 16, 4)
    twins = []
    for k, (mono1, window) in enumerate([(False, (32768.0, 60000.0, "LINEAR_EXACT")), (True, None)]):
        _python_reference(tmp_path, arr, 16, mono1, (2.0, -100.0), window)
        twins.append((tmp_path / "x.dcm").rename(tmp_path / f"t{k}.dcm"))
    for path in (Path(cr), *twins):
        dump = tmp_path / "in.f32"
        proc = subprocess.run(
            [str(scanner_host), str(tiny_bundle), str(path), "--dump-input", str(dump)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if "built without DCMTK" in proc.stderr:
            pytest.skip("scanner_host was built without DCMTK (apt-get install libdcmtk-dev)")
        assert proc.returncode in (0, 3), proc.stderr
        ref = preprocess(read_image(path), PreprocessSpec(size=(64, 64)))
        assert np.abs(np.fromfile(dump, np.float32).reshape(ref.shape) - ref).max() <= 1e-5, path.name
