"""Fixtures of the runtime tests: one tiny FP32 export and its bundle, made once per session."""

from __future__ import annotations

import shutil
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
    ds.set_pixel_data(arr, photometric, arr.dtype.itemsize * 8)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def write_dicom():
    """``write_dicom(path, arr, photometric="MONOCHROME2", modality="DX", **elements) -> path``."""
    return _write_dicom
