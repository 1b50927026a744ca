"""Environment report (``omsf2 info``): versions, devices, optional stacks. Imports nothing heavy eagerly."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from omsf2._version import __version__

OPTIONAL = ("onnx", "onnxruntime", "onnxsim", "onnxslim", "triton", "tensorrt", "cuda-python", "pydicom-data")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    """Key facts about this machine and installation, as strings.

    Raises:
        ValueError: ``OMSF2_KERNELS`` names no kernel backend.
    """
    import torch

    from omsf2.kernels.ops import Backend, env_backend, unavailable_reason

    chosen = env_backend()

    env = {
        "omsf2": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "numpy": _version("numpy"),
        "pydicom": _version("pydicom"),
        "pillow": _version("pillow"),
        "cuda": torch.version.cuda or "none (CPU build)",
        "cuda devices": str(torch.cuda.device_count()) if torch.cuda.is_available() else "0",
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            env[f"cuda:{i}"] = f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB"
    for dist in OPTIONAL:
        env[dist] = _version(dist)
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        parts = [f"{b.value} ({'yes' if (r := unavailable_reason(b, dev)) is None else 'no: ' + r})" for b in Backend]
        env[f"kernels on {dev}"] = "; ".join(parts)
    env["OMSF2_KERNELS"] = chosen.value if chosen is not None else "unset (automatic choice)"
    return env
