"""examples/scanner's scanner_host, built with OpenVINO and DCMTK, held to the Python Predictor.

On the 150 cxr-real val images written as DX DICOMs (8-bit, 12-bit windowed, MONOCHROME1), one
scanner_host process per backend gives the label of ``Predictor.from_bundle(backend=...)`` on every
image and probabilities within 1e-4, in FP32 (``openvino``) and INT8 (``openvino-int8``); a
multilabel bundle gets a sigmoid in both languages; a comma locale changes nothing. It refuses what
``omsf2 predict`` refuses with the same reasons, and every malformed file and bad argument is one
line and a non-zero exit, never a crash. Where OpenVINO's CMake config or DCMTK is missing the tests
skip, and fail under CI (``CI=true``), as the DICOM node's do without Orthanc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "scanner"
TOLERANCE = 1e-4


def _require(what: str) -> None:
    """Skip where something is missing; under CI fail instead, saying what to install."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(what)
    pytest.skip(what)


def _run(host: Path, *args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(host), *(str(a) for a in args)], capture_output=True, text=True, timeout=300, env=env, check=False
    )


# --------------------------------------------------------------------------- the host and the models


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scanner_host built once with CMake, OpenVINO (the installed wheel's CMake config) and DCMTK."""
    cmake = shutil.which("cmake")
    if cmake is None:
        _require("cmake is not installed")
    try:
        import openvino
    except ImportError:
        _require("OpenVINO is not installed (pip install openvino)")
    ov_dir = Path(openvino.__file__).parent / "cmake"
    if not (ov_dir / "OpenVINOConfig.cmake").is_file():
        _require(f"the openvino wheel has no CMake config in {ov_dir}")
    build = tmp_path_factory.mktemp("scanner_ov")
    for cmd in (
        [cmake, "-S", EXAMPLE, "-B", build, "-DOMSF2_WERROR=ON", f"-DOpenVINO_DIR={ov_dir}"],
        [cmake, "--build", build, "-j", "2"],
    ):
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exe = build / "scanner_host"
    built = _run(exe, "--help").stdout.splitlines()[-1]
    if "OpenVINO" not in built:
        _require(f"scanner_host was not built with OpenVINO ({built})")
    if "DCMTK" not in built:
        _require(f"scanner_host was built without DCMTK: apt-get install libdcmtk-dev ({built})")
    return exe


def _checkpoint(path: Path, task: str) -> Path:
    """An untrained omsf2_tiny at 64 px with the four phantom classes and the given task."""
    import torch

    from omsf2 import create_model
    from omsf2.config import PreprocessSpec
    from omsf2.data.synthetic import STAGES
    from omsf2.models.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model = create_model("omsf2_tiny", img_size=64, num_classes=len(STAGES)).eval()
    pre = PreprocessSpec(size=(64, 64), mean=(0.485,), std=(0.229,), pad_value=0.25)  # decimals for the locale test
    state = {"model_config": model.cfg.to_dict(), "classes": list(STAGES), "task": task}
    save_checkpoint(path, {**state, "preprocess": pre.to_dict(), "model": model.state_dict()})
    return path


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with the FP32 and the INT8 ONNX (64 phantoms calibrate; the gate is off: untrained)."""
    from omsf2.data.synthetic import write_dataset
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.runtime.bundle import BundleSpec, make_bundle

    root = tmp_path_factory.mktemp("int8")
    write_dataset(root / "data", 64, seed=5, size=64, n_val=16, n_test=16, workers=1)
    spec = ExportSpec(
        str(_checkpoint(root / "tiny.pt", "multiclass")),
        str(root / "export"),
        int8=True,
        calib_data=str(root / "data" / "train"),
        calib_count=64,
        eval_data=str(root / "data" / "test"),
        max_drop=100.0,
        min_agreement=0.0,
    )
    run_export(spec)
    return make_bundle(BundleSpec(str(root / "export"), str(root / "bundle"))).root


@pytest.fixture(scope="module")
def multilabel_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.runtime.bundle import BundleSpec, make_bundle

    root = tmp_path_factory.mktemp("multilabel")
    run_export(ExportSpec(str(_checkpoint(root / "tiny.pt", "multilabel")), str(root / "export")))
    assert json.loads((root / "export" / "report.json").read_text())["task"] == "multilabel"  # the export records it
    bundle = make_bundle(BundleSpec(str(root / "export"), str(root / "bundle")))
    assert bundle.task == "multilabel"
    return bundle.root


# --------------------------------------------------------------------------- DICOMs


def _dx(path: Path, stored: np.ndarray, bits: int, photometric: str = "MONOCHROME2", **elements: object) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.set_pixel_data(stored, photometric, bits)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def _chest_dicom(png: Path, out: Path, kind: int) -> Path:
    """A cxr-real PNG as a DX: 8-bit as is, 12-bit with rescale and window, or 12-bit MONOCHROME1."""
    from PIL import Image

    gray = np.asarray(Image.open(png).convert("L"))
    if kind == 0:
        return _dx(out, np.ascontiguousarray(gray), 8)
    stored = gray.astype(np.uint16) * 16 + 7
    window = {"RescaleSlope": "0.5", "RescaleIntercept": "-12.5", "WindowCenter": "1000.5", "WindowWidth": "2100.25"}
    if kind == 1:
        return _dx(out, stored, 12, **window)
    return _dx(out, 4095 - stored, 12, "MONOCHROME1", VOILUTFunction="LINEAR_EXACT", **window)


@pytest.fixture(scope="module")
def cxr_dicoms(tmp_path_factory: pytest.TempPathFactory, cxr_real: Path) -> list[Path]:
    """The 150 cxr-real val images as DX chest DICOMs (a third each of the three kinds of _chest_dicom)."""
    pngs = sorted((cxr_real / "val").glob("*/*.png"))
    if len(pngs) != 150:
        _require(f"cxr-real's val split at {cxr_real} does not hold 150 PNGs")
    out = tmp_path_factory.mktemp("cxr_dcm")
    return [_chest_dicom(p, out / f"{p.parent.name}_{p.stem}.dcm", i % 3) for i, p in enumerate(pngs)]


def _results(stdout: str) -> dict[str, tuple[str, dict[str, float]]]:
    """scanner_host's result blocks: file -> (stage, class -> probability)."""
    out: dict[str, tuple[str, dict[str, float]]] = {}
    source = ""
    for line in stdout.splitlines():
        if line.startswith("bundle "):
            continue
        if not line.startswith("  "):
            source = line
            out[source] = ("", {})
        elif line.startswith("  stage: "):
            out[source] = (line.split(": ", 1)[1], out[source][1])
        elif not line.startswith(("  heat map", "  input")):
            name, value = line.split()
            out[source][1][name] = float(value)
    return out


def _compare(stdout: str, bundle: Path, backend: str, files: list[Path]) -> float:
    """The largest probability difference to the Python Predictor; every label must agree."""
    from omsf2.runtime.predictor import Predictor

    got = _results(stdout)
    want = Predictor.from_bundle(bundle, backend=backend, threads=2).predict(files)
    assert sorted(got) == sorted(p.source for p in want)
    worst = 0.0
    for p in want:
        label, probs = got[p.source]
        assert label == p.label, (p.source, probs, p.probabilities)
        worst = max(worst, *(abs(probs[c] - v) for c, v in p.probabilities.items()))
    return worst


# --------------------------------------------------------------------------- acceptance 4


@pytest.mark.parametrize("backend", ["openvino", "openvino-int8"])
def test_host_gives_the_python_predictors_results_on_cxr_real(host, int8_bundle, cxr_dicoms, backend) -> None:
    proc = _run(host, "--backend", backend, "--threads", 2, int8_bundle, *cxr_dicoms)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines()[0].endswith(f"task multiclass, backend {backend}")
    assert _compare(proc.stdout, int8_bundle, backend, cxr_dicoms) <= TOLERANCE


def test_a_multilabel_bundle_gets_a_sigmoid_in_both_languages(host, multilabel_bundle, cxr_dicoms) -> None:
    files = cxr_dicoms[:12]
    proc = _run(host, "--backend", "openvino", multilabel_bundle, *files)
    assert proc.returncode == 0, proc.stderr
    assert "task multilabel, backend openvino" in proc.stdout.splitlines()[0]
    assert _compare(proc.stdout, multilabel_bundle, "openvino", files) <= TOLERANCE
    sums = [sum(probs.values()) for _, probs in _results(proc.stdout).values()]
    assert min(abs(s - 1.0) for s in sums) > 0.1  # four sigmoids near 0.5, not a softmax


def test_a_comma_locale_changes_nothing(host, int8_bundle, cxr_dicoms, comma_locale, tmp_path: Path) -> None:
    """The manifest's 0.485, the DICOMs' "0.5" / "1000.5" and the arguments' decimals read alike."""
    c_locale, comma = {**os.environ, "LC_ALL": "C"}, {**os.environ, **comma_locale}
    files = cxr_dicoms[:9]
    dicoms = [_run(host, int8_bundle, *files, env=env) for env in (c_locale, comma)]
    assert dicoms[0].returncode == 0 and dicoms[0].stdout == dicoms[1].stdout, dicoms[1].stderr
    raw = tmp_path / "img.u16"
    raw.write_bytes((np.arange(90 * 70, dtype="<u2") * 7 % 4096).tobytes())
    args = ["--raw", raw, 70, 90, 12, "--rescale", "0.5", "-12.5", "--window", "1000.5", "2100.25"]
    raws = [_run(host, int8_bundle, *args, env=env) for env in (c_locale, comma)]
    assert raws[0].returncode == 0 and raws[0].stdout == raws[1].stdout, raws[1].stderr


# --------------------------------------------------------------------------- acceptance 3


def _good(tmp: Path) -> Path:
    return _dx(tmp / "good.dcm", (np.arange(40 * 30).reshape(40, 30) * 3 % 4096).astype(np.uint16), 12)


def _with(change: Callable[..., None]) -> Callable[[Path], Path]:
    """A builder: a good DX with ``change(ds)`` applied before it is written."""

    def build(tmp: Path) -> Path:
        import pydicom

        ds = pydicom.dcmread(_good(tmp))
        change(ds)
        ds.save_as(tmp / "bad.dcm", enforce_file_format=True)
        return tmp / "bad.dcm"

    return build


def _cut(tmp: Path) -> Path:
    data = _good(tmp).read_bytes()
    (tmp / "cut.dcm").write_bytes(data[:-1000])
    return tmp / "cut.dcm"


def _text(tmp: Path) -> Path:
    (tmp / "notes.dcm").write_text("this is a text file, not a radiograph\n" * 10)
    return tmp / "notes.dcm"


def _empty(tmp: Path) -> Path:
    (tmp / "empty.dcm").write_bytes(b"")
    return tmp / "empty.dcm"


def _jpeg2000(ds) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])


def _testdata(name: str) -> Callable[[Path], Path]:
    def find(tmp: Path) -> Path:
        from pydicom.data import get_testdata_file

        path = get_testdata_file(name)
        if path is None:
            _require(f"pydicom's test file {name} is missing (pip install pydicom-data)")
        return Path(path)

    return find


MALFORMED = {
    "pixel data shorter than Rows x Columns x 2": (
        _with(lambda ds: setattr(ds, "PixelData", ds.PixelData[:1000])),
        "pixel data holds 1000 bytes; 40x30 at 16 bits needs 2400",
    ),
    "file cut inside the pixel data": (_cut, "corrupt or truncated DICOM file"),
    "missing Rows": (_with(lambda ds: delattr(ds, "Rows")), "DICOM has no valid Rows/Columns"),
    "a text file named .dcm": (_text, "not a DICOM file"),
    "a zero-length file": (_empty, "not a DICOM file"),
    "JPEG 2000, which it cannot decode": (_with(_jpeg2000), "cannot decode JPEG 2000"),
    "no pixel data": (_with(lambda ds: delattr(ds, "PixelData")), "DICOM has no pixel data"),
    "two frames": (_with(lambda ds: setattr(ds, "NumberOfFrames", 2)), "multi-frame DICOM (2 frames)"),
    "3 samples per pixel": (_with(lambda ds: setattr(ds, "SamplesPerPixel", 3)), "not applicable: 3 samples per pixel"),
    "32 bits allocated": (_with(lambda ds: setattr(ds, "BitsAllocated", 32)), "not applicable: 32 bits allocated"),
    "Rows 65535": (_with(lambda ds: setattr(ds, "Rows", 65535)), "pixel data holds 2400 bytes"),
    "an RGB ultrasound": (_testdata("US1_UNCR.dcm"), "not applicable: modality US"),
    "a CT": (_testdata("CT_small.dcm"), "not applicable: modality CT"),
    "a tibia CR": (_testdata("RG3_UNCR.dcm"), "not applicable: body part EXTREMITY (this bundle accepts CHEST)"),
    "a lateral view": (_with(lambda ds: setattr(ds, "ViewPosition", "LL")), "not applicable: view LL"),
    "no Modality": (_with(lambda ds: delattr(ds, "Modality")), "not applicable: no Modality"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_host_refuses_a_bad_dicom_in_one_line(host, tiny_bundle, tmp_path: Path, case: str) -> None:
    build, reason = MALFORMED[case]
    path = build(tmp_path)
    proc = _run(host, tiny_bundle, path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)  # never a signal (a negative code)
    assert proc.stderr.startswith(f"error: {path}: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert reason in proc.stderr and "stage:" not in proc.stdout


@pytest.mark.parametrize("name", ["US1_UNCR.dcm", "CT_small.dcm", "RG3_UNCR.dcm"])
def test_host_gives_omsf2_predicts_reason(host, tiny_bundle, tmp_path: Path, name: str) -> None:
    """The same sentence as omsf2 predict (omsf2.runtime.gating), with and without the site's settings.

    Anyway (--any-modality, body part and view allowed missing): the RGB one is refused for its colour,
    the tibia for its body part, and the CT runs.
    """
    from omsf2.runtime.gating import GatePolicy, dicom_not_applicable
    from omsf2.runtime.predictor import Predictor

    path = _testdata(name)(tmp_path)
    proc = _run(host, tiny_bundle, path)
    assert proc.stderr == f"error: {path}: {dicom_not_applicable(path)}\n"
    pred = Predictor.from_bundle(tiny_bundle, backend="ort")
    assert pred.predict_files([path])[0].error == dicom_not_applicable(path)
    settings = ("--any-modality", "--allow-missing", "body-part", "--allow-missing", "view")
    anyway = _run(host, *settings, tiny_bundle, path)
    policy = GatePolicy(allow_missing=frozenset({"body-part", "view"}), any_modality=True)
    if name != "CT_small.dcm":
        assert anyway.returncode == 1 and anyway.stderr == f"error: {path}: {dicom_not_applicable(path, policy)}\n"
        assert "RGB" in anyway.stderr or "EXTREMITY" in anyway.stderr
    else:  # signed 16-bit samples with a rescale and a window: read as pydicom reads them
        assert anyway.returncode == 0, anyway.stderr
        assert _compare(anyway.stdout, tiny_bundle, "openvino", [path]) <= TOLERANCE


def test_every_file_of_a_call_is_tried(host, tiny_bundle, tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    good = _good(tmp_path)
    rle = _with(lambda ds: ds.compress(RLELossless))(tmp_path)
    ct = _testdata("CT_small.dcm")(tmp_path)
    proc = _run(host, tiny_bundle, good, ct, rle)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and str(ct) in proc.stderr
    blocks = _results(proc.stdout)
    assert list(blocks) == [str(good), str(rle)]
    assert blocks[str(good)] == blocks[str(rle)]  # RLE decoded to the same pixels


BAD_ARGUMENTS = [
    (["--raw", "{tmp}/missing.u16", "64", "64", "12"], "cannot read raw file '{tmp}/missing.u16': No such file"),
    (["--raw", "{raw}", "-5", "64", "12"], "WIDTH must be an integer in 8..65535, got '-5'"),
    (["--raw", "{raw}", "abc", "64", "12"], "WIDTH must be an integer in 8..65535, got 'abc'"),
    (["--raw", "{raw}", "12x", "64", "12"], "WIDTH must be an integer in 8..65535, got '12x'"),
    (["--raw", "{raw}", "64", "99999999999999999999", "12"], "HEIGHT must be an integer in 8..65535"),
    (["--raw", "{raw}", "64", "64", "0"], "BITS_STORED must be an integer in 1..16, got '0'"),
    (["--raw", "{raw}", "64", "64", "17"], "BITS_STORED must be an integer in 1..16, got '17'"),
    (["--raw", "{raw}", "64", "64"], "--raw needs FILE WIDTH HEIGHT BITS_STORED"),
    (["--raw", "{raw}", "64", "64", "12", "--voi-function", "GAMMA"], "--voi-function must be LINEAR, LINEAR_EXACT"),
    (["--raw", "{raw}", "64", "64", "12", "--window", "100", "0"], "--window WIDTH must be >= 1 for LINEAR, got 0"),
    (["--raw", "{raw}", "64", "64", "12", "--window", "100", "-3"], "--window WIDTH must be >= 1 for LINEAR"),
    (
        ["--raw", "{raw}", "64", "64", "12", "--voi-function", "SIGMOID", "--window", "100", "0"],
        "--window WIDTH must be > 0",
    ),
    (["--raw", "{raw}", "64", "64", "12", "--window", "1,5", "100"], "--window CENTER must be a finite number"),
    (["--raw", "{raw}", "64", "64", "12", "--rescale", "nan", "0"], "--rescale SLOPE must be a finite number"),
    (["--raw", "{raw}", "65", "64", "12"], "'{raw}' holds 8192 bytes; 65x64 at 16 bits needs 8320"),
    (["--threads", "-1", "{dcm}"], "--threads must be an integer in 0..1024, got '-1'"),
    (["--backend", "ort", "{dcm}"], "backend 'ort' is not implemented by the C library"),
    (["--backend", "gpu", "{dcm}"], "unknown backend 'gpu'; choose one of auto, openvino, openvino-int8, tensorrt"),
    (["--window", "100", "200", "{dcm}"], "describe a --raw image"),
    (["--bogus", "{dcm}"], "unknown option '--bogus'"),
    (["--allow-missing", "laterality", "{dcm}"], "--allow-missing takes body-part or view, got 'laterality'"),
    ([], "no image given"),
    (["{dcm}", "--raw", "{raw}", "64", "64", "12"], "give DICOM files or --raw, not both"),
    (["{dcm}", "{dcm}", "--dump-input", "{tmp}/x.f32"], "--dump-input takes exactly one image"),
]


@pytest.mark.parametrize(("args", "message"), BAD_ARGUMENTS, ids=[" ".join(a) or "none" for a, _ in BAD_ARGUMENTS])
def test_host_refuses_a_bad_argument_in_one_line(host, tiny_bundle, tmp_path: Path, args, message) -> None:
    raw = tmp_path / "img.u16"
    raw.write_bytes(bytes(64 * 64 * 2))  # a valid 64x64 12-bit image: each case has one thing wrong
    names = {"tmp": str(tmp_path), "raw": str(raw), "dcm": str(_good(tmp_path))}
    proc = _run(host, tiny_bundle, *(a.format(**names) for a in args))
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message.format(**names) in proc.stderr and "stage:" not in proc.stdout


def test_help_prints_usage_and_exits_0(host) -> None:
    for flag in ("--help", "-h"):
        proc = _run(host, flag)
        assert proc.returncode == 0 and proc.stderr == ""
        assert proc.stdout.startswith("usage: scanner_host") and "exit codes:" in proc.stdout
