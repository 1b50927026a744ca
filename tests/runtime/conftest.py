"""Fixtures of the runtime tests: one tiny FP32 export and its bundle, made once per session."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``omsf2 export`` (ONNX only) of an untrained omsf2_tiny at 64 px with the phantom classes."""
    import torch

    from omsf2 import create_model
    from omsf2.config import PreprocessSpec
    from omsf2.data.synthetic import STAGES
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("omsf2_tiny", img_size=64, num_classes=len(STAGES)).eval()
    root = tmp_path_factory.mktemp("runtime")
    save_checkpoint(
        root / "tiny.pt",
        {
            "model_config": model.cfg.to_dict(),
            "classes": list(STAGES),
            "task": "multiclass",
            "preprocess": PreprocessSpec(size=(64, 64)).to_dict(),
            "model": model.state_dict(),
        },
    )
    run_export(ExportSpec(str(root / "tiny.pt"), str(root / "export")))
    return root / "export"


@pytest.fixture(scope="session")
def tiny_bundle_master(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omsf2.runtime.bundle import BundleSpec, make_bundle

    out = tmp_path_factory.mktemp("bundle") / "b"
    make_bundle(BundleSpec(str(tiny_export), str(out), name="tiny", data_source="random weights"))
    return out


@pytest.fixture()
def tiny_bundle(tiny_bundle_master: Path, tmp_path: Path) -> Path:
    """A fresh copy of the bundle, free to tamper with."""
    return Path(shutil.copytree(tiny_bundle_master, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five grayscale PNGs of odd, non-square sizes (8- and 16-bit)."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("images")
    out = []
    for i, (h, w) in enumerate([(97, 61), (64, 64), (50, 123), (131, 77), (40, 40)]):
        yy, xx = np.mgrid[0:h, 0:w]
        img = 0.5 + 0.4 * np.sin(xx / (3 + i)) * np.cos(yy / 5) + 0.05 * rng.standard_normal((h, w))
        img = np.clip(img, 0, 1)
        p = root / f"img{i}.png"
        if i % 2:
            Image.fromarray(np.rint(img * 65535).astype(np.uint16)).save(p)
        else:
            Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(p)
        out.append(p)
    return out


def _write_dicom(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2", modality: str = "DX", **elements):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"  # a PA chest radiograph: what the clinical gating lets through
    ds.ViewPosition = "PA"
    ds.set_pixel_data(arr, photometric, arr.dtype.itemsize * 8)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def write_dicom():
    """``write_dicom(path, arr, photometric="MONOCHROME2", modality="DX", **elements) -> path`` (a PA chest)."""
    return _write_dicom


CPP = Path(__file__).resolve().parents[2] / "omsf2" / "runtime" / "cpp"
#: The C library without an inference backend (no OpenVINO, no TensorRT): what g++ alone builds.
CPP_SOURCES = (
    "preprocess.cpp",
    "json.cpp",
    "rules.cpp",
    "bundle.cpp",
    "model_check.cpp",
    "trust.cpp",
    "engine_manifest.cpp",
    "engine.cpp",
    "capi.cpp",
    "no_engine.cpp",
)


#: OpenSSL's headers (Debian's libssl-dev, which .ci/run installs): the library checks signatures with them.
OPENSSL = Path("/usr/include/openssl/evp.h").is_file()


def build_cpp_lib(out: Path, openssl: bool, opt: str = "-O2") -> ctypes.CDLL:
    """``libomsf2_runtime.so`` built with the system g++ (warnings are errors), with or without OpenSSL, typed."""
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++) on this machine")
    flags = ["-std=c++17", opt, "-ffp-contract=off", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror"]
    ssl = ["-DOMSF2_WITH_OPENSSL"] if openssl else []
    proc = subprocess.run(
        [cxx, *flags, *ssl, "-o", str(out), *(str(CPP / s) for s in CPP_SOURCES), *(["-lcrypto"] if openssl else [])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(out))
    for name in (
        "omsf2_last_error",
        "omsf2_runtime_class_name",
        "omsf2_rules_json",
        "omsf2_runtime_task",
        "omsf2_runtime_digest",
        "omsf2_runtime_signer",
    ):
        getattr(lib, name).restype = ctypes.c_char_p
    lib.omsf2_check_engine_compatibility.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_int32,
        ctypes.c_int32,
    ]
    lib.omsf2_check_json.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.omsf2_activate.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_size_t]
    lib.omsf2_check_input.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_uint32]
    lib.omsf2_runtime_check_input.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32]
    for name in ("omsf2_runtime_digest", "omsf2_runtime_signer"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    return lib


@pytest.fixture(scope="session")
def cpp_lib_builder():
    """:func:`build_cpp_lib`, for a test that needs a library built otherwise (conftest is not importable)."""
    return build_cpp_lib


@pytest.fixture(scope="session")
def cpp_lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """``libomsf2_runtime.so`` built once with g++, with OpenSSL (signatures) where its headers are installed."""
    return build_cpp_lib(tmp_path_factory.mktemp("cpp") / "libomsf2_runtime.so", OPENSSL)


def require(what: str) -> None:
    """Skip where a tool is missing; under CI (CI=true) fail instead, saying what to install."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(what)
    pytest.skip(what)


@pytest.fixture(scope="session")
def comma_locale(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``{"LOCPATH": ..., "LC_ALL": "de_DE.UTF-8"}``: a decimal-comma locale compiled here with localedef.

    Built from ``/usr/share/i18n`` (Debian's ``locales``, which .ci/run installs); skipped where that is
    missing, failed under CI.
    """
    localedef = shutil.which("localedef")
    if localedef is None or not Path("/usr/share/i18n/locales/de_DE").is_file():
        require("no de_DE locale source (apt-get install locales)")
    root = tmp_path_factory.mktemp("locale")
    subprocess.run([localedef, "-i", "de_DE", "-f", "UTF-8", str(root / "de_DE.UTF-8")], capture_output=True)
    env = {"LOCPATH": str(root), "LC_ALL": "de_DE.UTF-8"}
    probe = "import locale; locale.setlocale(locale.LC_ALL, ''); print(locale.localeconv()['decimal_point'])"
    proc = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True, text=True)
    if proc.stdout.strip() != ",":
        require(f"localedef could not build de_DE.UTF-8 ({proc.stderr.strip()[-200:]})")
    return env
