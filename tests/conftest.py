"""Shared fixtures and the needs_cuda / needs_trt markers (skipped, with a reason, where absent)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# Triton reads TRITON_INTERPRET when it is first imported, so this must run before any test imports
# triton. Without a GPU the Triton kernels run for real in Triton's CPU interpreter (not skipped).
if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]


def _cxr_real_candidates() -> list[Path]:
    """Where cxr-real may be: $OMSF2_CXR_REAL, ../shared beside this checkout, or beside its clone's origin.

    A fresh clone (``git clone /work/main /tmp/x``, as the fresh-clone check and CI make) has no
    ``../shared`` of its own; its ``origin`` is the checkout that has one.
    """
    import subprocess

    found = [Path(p) for p in [os.environ.get("OMSF2_CXR_REAL", "")] if p]
    found.append(REPO.parent / "shared" / "data" / "cxr-real")
    origin = subprocess.run(
        ["git", "-C", str(REPO), "remote", "get-url", "origin"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        found.append(Path(origin).resolve().parent / "shared" / "data" / "cxr-real")
    return found


@pytest.fixture(scope="session")
def cxr_real() -> Path:
    """The cxr-real folder (``train/``, ``val/``); skipped where it is not found, failed under CI (CI=true)."""
    candidates = _cxr_real_candidates()
    for root in candidates:
        if (root / "val").is_dir():
            return root
    why = f"cxr-real is not at {' or '.join(map(str, candidates))} (set OMSF2_CXR_REAL)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = _has_cuda()
    trt = cuda and importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "needs_cuda" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device; none on this machine"))
        if "needs_trt" in item.keywords and not trt:
            item.add_marker(pytest.mark.skip(reason="needs TensorRT and a CUDA device; not on this machine"))


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)])
def device(request: pytest.FixtureRequest) -> str:
    """Run the test on each device: cpu always, cuda marked needs_cuda (skipped without a GPU)."""
    return str(request.param)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny phantom image folder (16 train, 8 val, 8 test at 96 px), written once per session."""
    from omsf2.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synth") / "phantoms"
    write_dataset(root, 16, seed=3, size=96, n_val=8, n_test=8, workers=1)
    return root


@pytest.fixture()
def small_cfg(synth_root: Path):
    """A TrainConfig that trains in a few seconds on 2 cores."""
    from omsf2.data.datasets import DataSpec
    from omsf2.train import AugConfig, TrainConfig

    return TrainConfig(
        data=DataSpec(source=str(synth_root)),
        epochs=2,
        batch_size=4,
        img_size=64,
        workers=0,
        aug=AugConfig(attention_prob=0.5),
        warmup_epochs=0.5,
    )


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory: pytest.TempPathFactory, synth_root: Path) -> Path:
    """best.pt of omsf2_tiny trained one epoch at 64 px on ``synth_root`` (reference kernels), once per session."""
    from omsf2.data.datasets import DataSpec
    from omsf2.train import AugConfig, TrainConfig, train

    cfg = TrainConfig(
        data=DataSpec(source=str(synth_root)),
        epochs=1,
        batch_size=4,
        img_size=64,
        workers=0,
        aug=AugConfig(attention_prob=0.0),
    )
    out = tmp_path_factory.mktemp("trained")
    train(cfg, out)
    return out / "best.pt"


@pytest.fixture(scope="session")
def cxr_chain(tmp_path_factory: pytest.TempPathFactory, cxr_real: Path) -> dict[str, Path]:
    """The chain on real radiographs: omsf2_tiny trained one epoch at 64 px on cxr-real's train split (val
    from its val split), INT8 calibrated on 32 of its train images and gated on its val split, bundled."""
    from omsf2.data.datasets import DataSpec
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.runtime.bundle import BundleSpec, make_bundle
    from omsf2.train import AugConfig, TrainConfig, train

    root = tmp_path_factory.mktemp("cxr-chain")
    cfg = TrainConfig(data=DataSpec(source=str(cxr_real)), epochs=1, batch_size=16, img_size=64, workers=0,
                      aug=AugConfig(attention_prob=0.0))  # fmt: skip
    train(cfg, root / "run")
    ckpt, export, bundle = root / "run" / "best.pt", root / "export", root / "bundle"
    run_export(
        ExportSpec(str(ckpt), str(export), int8=True, calib_data=str(cxr_real / "train"), calib_count=32,
                   min_calib=32, eval_data=str(cxr_real / "val"), max_drop=100.0, min_agreement=0.0)
    )  # fmt: skip
    make_bundle(BundleSpec(str(export), str(bundle), name="tiny-cxr", version="1.0.0", data_source="cxr-real"))
    return {"root": root, "checkpoint": ckpt, "calib": cxr_real / "train", "export": export, "bundle": bundle,
            "data": cxr_real}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained omsf2_tiny at 64 px with the phantom classes (export needs no training)."""
    import torch

    from omsf2 import create_model
    from omsf2.config import PreprocessSpec
    from omsf2.data.synthetic import STAGES
    from omsf2.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("omsf2_tiny", img_size=64, num_classes=len(STAGES)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(
        path,
        {
            "model_config": model.cfg.to_dict(),
            "classes": list(STAGES),
            "task": "multiclass",
            "preprocess": PreprocessSpec(size=(64, 64)).to_dict(),
            "model": model.state_dict(),
        },
    )
    return path


@pytest.fixture(scope="session")
def evidence_chain(tmp_path_factory: pytest.TempPathFactory, trained_ckpt: Path, synth_root: Path) -> dict[str, Path]:
    """A whole chain: data -> trained checkpoint -> INT8 export (own calibration folder) -> bundle.

    The checkpoint (a copy of ``trained_ckpt``, which records ``synth_root`` as its data) and the
    calibration folder (a copy of ``synth_root/train``) are this fixture's own, so a test may change
    them to break a link, and must put them back.
    """
    import shutil

    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.runtime.bundle import BundleSpec, make_bundle

    root = tmp_path_factory.mktemp("evidence")
    ckpt = Path(shutil.copy2(trained_ckpt, root / "best.pt"))
    calib = Path(shutil.copytree(synth_root / "train", root / "calib"))
    export = root / "export"
    run_export(
        ExportSpec(str(ckpt), str(export), int8=True, calib_data=str(calib), calib_count=16, min_calib=16,
                   eval_data=str(synth_root / "test"), max_drop=100.0, min_agreement=0.0)
    )  # fmt: skip
    bundle = root / "bundle"
    make_bundle(BundleSpec(str(export), str(bundle), name="tiny", version="1.0.0", data_source="phantoms"))
    return {"root": root, "checkpoint": ckpt, "calib": calib, "export": export, "bundle": bundle, "data": synth_root}
