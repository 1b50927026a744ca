"""Environment report (``omsf2 info``): versions, devices, optional stacks; torch only where installed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform

from omsf2._version import __version__

OPTIONAL = (
    "onnx",
    "onnxruntime",
    "openvino",
    "onnxsim",
    "onnxslim",
    "triton",
    "tensorrt",
    "cuda-python",
    "cryptography",
    "pynetdicom",
    "highdicom",
    "pydicom-data",
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, or a module set to None
        return False


def _torch_facts() -> dict[str, str]:
    """torch, CUDA and kernel facts; a runtime-only install (no torch) says so instead."""
    if not _importable("torch"):
        return {"torch": "not installed (a [runtime] install: predict, bundle and serve need no torch)"}
    import torch

    from omsf2.kernels.ops import Backend, env_backend, unavailable_reason

    chosen = env_backend()
    env = {
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "cuda": torch.version.cuda or "none (CPU build)",
        "cuda devices": str(torch.cuda.device_count()) if torch.cuda.is_available() else "0",
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            env[f"cuda:{i}"] = f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB"
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        parts = [f"{b.value} ({'yes' if (r := unavailable_reason(b, dev)) is None else 'no: ' + r})" for b in Backend]
        env[f"kernels on {dev}"] = "; ".join(parts)
    env["OMSF2_KERNELS"] = chosen.value if chosen is not None else "unset (automatic choice)"
    return env


def _runtime_facts() -> dict[str, str]:
    """What the torch-free runtime can run here: onnxruntime's execution providers."""
    if not _importable("onnxruntime"):
        return {"runtime backends": "none (pip install 'omsf2[runtime]')"}
    import onnxruntime as ort

    return {
        "onnxruntime providers": ", ".join(p.removesuffix("ExecutionProvider") for p in ort.get_available_providers())
    }


def environment() -> dict[str, str]:
    """Key facts about this machine and installation, as strings; works without torch.

    Raises:
        ValueError: ``OMSF2_KERNELS`` names no kernel backend.
    """
    env = {
        "omsf2": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu cores": str(os.cpu_count()),
        "numpy": _version("numpy"),
        "pydicom": _version("pydicom"),
        "pillow": _version("pillow"),
    }
    env.update(_torch_facts())
    for dist in OPTIONAL:
        env[dist] = _version(dist)
    env.update(_runtime_facts())
    return env
