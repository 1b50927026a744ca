"""The package's import rules (ARCHITECTURE.md), checked on the source and in fresh interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "omsf2"

# module prefix -> omsf2 subpackages it must not import
FORBIDDEN = {
    "omsf2.kernels": ("omsf2.models", "omsf2.data", "omsf2.train", "omsf2.cli", "omsf2.evaluate", "omsf2.export"),
    "omsf2.export": ("omsf2.train", "omsf2.cli", "omsf2.evaluate", "omsf2.bench"),
    # the torch-free runtime: never torch, never export (export uses runtime, not the reverse)
    "omsf2.runtime": (
        "torch",
        "omsf2.export",
        "omsf2.models",
        "omsf2.kernels",
        "omsf2.train",
        "omsf2.cli",
        "omsf2.evaluate",
        "omsf2.bench",
        "omsf2.data.datasets",
        "omsf2.data.loader",
    ),
    "omsf2.op_contract": ("torch", "numpy", "omsf2.models", "omsf2.kernels", "omsf2.export", "omsf2.runtime"),
    "omsf2.models": ("omsf2.data", "omsf2.train", "omsf2.cli", "omsf2.evaluate"),
    "omsf2.data": ("omsf2.models", "omsf2.train", "omsf2.cli", "omsf2.evaluate", "omsf2.kernels"),
    "omsf2.metrics": ("omsf2.models", "omsf2.data", "omsf2.train", "omsf2.cli", "torch"),
    "omsf2.config": ("omsf2.models", "omsf2.data", "omsf2.train", "torch", "numpy"),
    "omsf2.train": ("omsf2.cli",),
    # the DICOM node and Triton serving sit on the runtime (and data's readers): no torch, no model code
    "omsf2.serve": (
        "torch",
        "omsf2.models",
        "omsf2.kernels",
        "omsf2.export",
        "omsf2.train",
        "omsf2.evaluate",
        "omsf2.bench",
        "omsf2.cli",
        "omsf2.demo",
        "omsf2.data.datasets",
        "omsf2.data.loader",
    ),
    # the bench times the runtime's sessions (and PyTorch as the baseline): never training, serving or the CLI
    "omsf2.bench": ("omsf2.train", "omsf2.serve", "omsf2.evaluate", "omsf2.cli", "omsf2.demo"),
    "omsf2.evaluate": ("omsf2.train", "omsf2.cli"),
}
# numpy-only modules the torch-free runtime reuses
NO_TORCH = ("omsf2.data.io", "omsf2.data.preprocess", "omsf2.data.synthetic", "omsf2.data.datasets")
OPTIONAL = ("triton", "tensorrt", "onnx", "onnxruntime", "openvino", "modelopt", "nncf", "cuda", "pycuda")
# ``@triton.jit`` needs triton when the module body runs, so these private kernel modules import it
# at the top; in exchange nothing may import them at the top (only launchers, inside functions).
JIT_MODULES = ("omsf2.kernels.triton._pool", "omsf2.kernels.triton._fuse")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out.append((name, p))
    return out


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("name", "path"), _modules(), ids=[n for n, _ in _modules()])
def test_import_rules(name: str, path: Path) -> None:
    imports = _imports(path)
    for prefix, banned in FORBIDDEN.items():
        if name == prefix or name.startswith(prefix + "."):
            bad = [i for i in imports for b in banned if i == b or i.startswith(b + ".")]
            assert not bad, f"{name} imports {bad}"
    assert "omsf2.cli" not in {i for i in imports if not name.startswith("omsf2.cli")}
    if name in NO_TORCH:
        assert not [i for i in imports if i.split(".")[0] == "torch"], f"{name} imports torch"
    top = _imports(path, top_level_only=True)
    heavy = [i for i in top if i.split(".")[0] in OPTIONAL]
    assert not heavy or name in JIT_MODULES, f"{name} imports optional stacks at import time: {heavy}"
    eager_jit = [i for i in top if i in JIT_MODULES]
    assert not eager_jit, f"{name} imports Triton kernel modules at import time: {eager_jit}"


def test_import_omsf2_is_light() -> None:
    code = (
        "import sys, omsf2, omsf2.data.io, omsf2.data.preprocess, omsf2.data.synthetic, omsf2.metrics, omsf2.config,"
        " omsf2.runtime, omsf2.runtime.bundle, omsf2.runtime.predictor, omsf2.runtime.sessions, omsf2.runtime.rules,"
        " omsf2.op_contract;"
        "bad = [m for m in ('torch', 'triton', 'onnx', 'onnxruntime', 'tensorrt', 'openvino', 'matplotlib')"
        " if m in sys.modules];"
        "assert not bad, bad; print(omsf2.__version__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lazy = subprocess.run(
        [sys.executable, "-c", "import omsf2; print(sorted(omsf2.list_models()))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "omsf2_tiny" in lazy.stdout, lazy.stderr
