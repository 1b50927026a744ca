"""The CUDA sources compile with nvcc for the deployment targets (sm_87 Orin, sm_90 H100), no GPU needed.

Also syntax-checks the torch binding against the installed torch headers where that is possible.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from omsf2.kernels.cuda import source_files

NVCC = shutil.which("nvcc")
ARCHS = ("87", "90")
CU_FILES = [p for p in source_files() if p.suffix == ".cu"]
CSRC = CU_FILES[0].parent if CU_FILES else Path()

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH: cannot compile the CUDA sources")


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def test_source_files_listed() -> None:
    names = {p.name for p in source_files()}
    assert {"omsf2_kernels.cuh", "multiscale_pool.cu", "scale_fuse.cu", "torch_binding.cpp"} <= names


def test_cu_files_compile_for_orin_and_h100(tmp_path: Path) -> None:
    # 2 files x 2 archs in parallel: nvcc is mostly single-threaded, ~10 s wall on 2 cores instead of ~17 s.
    jobs = [(cu, arch) for cu in CU_FILES for arch in ARCHS]
    flags = ["-std=c++17", "-O3", "-Xcompiler=-Wall", "-Werror=all-warnings", "-I", str(CSRC)]
    cmds = [
        [str(NVCC), *flags, f"-arch=sm_{arch}", "-c", str(cu), "-o", str(tmp_path / f"{cu.stem}.sm_{arch}.o")]
        for cu, arch in jobs
    ]
    with ThreadPoolExecutor(max_workers=len(cmds)) as pool:
        results = list(pool.map(_run, cmds))
    failures = [
        f"{cu.name} sm_{arch}:\n{r.stderr}" for (cu, arch), r in zip(jobs, results, strict=True) if r.returncode
    ]
    assert not failures, "\n".join(failures)
    assert all((tmp_path / f"{cu.stem}.sm_{arch}.o").stat().st_size > 0 for cu, arch in jobs)


@pytest.mark.slow
def test_torch_binding_syntax(tmp_path: Path) -> None:
    torch_ext = pytest.importorskip("torch.utils.cpp_extension")
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found")
    # nvcc may be a wrapper script outside the toolkit (as /usr/local/bin/nvcc here): try the usual homes.
    homes = [os.environ.get("CUDA_HOME", ""), str(Path(str(NVCC)).resolve().parent.parent), "/usr/local/cuda"]
    found = [Path(h) / "include" for h in homes if h and (Path(h) / "include" / "cuda_runtime_api.h").exists()]
    if not found:
        pytest.skip(f"no CUDA headers (cuda_runtime_api.h) under {homes}")
    cuda_include = found[0]
    # CPU wheels of torch ship the c10/cuda headers but not the CMake-generated cuda_cmake_macros.h they
    # include; a one-line stand-in (what a CUDA build generates for a shared-library build) fills the gap.
    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [str(tmp_path / "stub"), *torch_ext.include_paths(), sysconfig.get_paths()["include"]]
    includes += [str(cuda_include), str(CSRC)]
    cmd = [gxx, "-std=c++20", "-fsyntax-only", "-w", "-DTORCH_EXTENSION_NAME=omsf2_cuda_ext"]
    cmd += [f"-I{p}" for p in includes] + [str(CSRC / "torch_binding.cpp")]
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_cmake_builds_the_kernel_library_without_tensorrt(tmp_path: Path) -> None:
    """The plugin's CMake project configures here and builds its TensorRT-free part for sm_87 and sm_90."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    src = CSRC.parent
    build = tmp_path / "build"
    env = {**os.environ, "CUDACXX": str(NVCC)}
    conf = subprocess.run(
        [cmake, "-S", str(src), "-B", str(build), "-DCMAKE_CUDA_ARCHITECTURES=87;90"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert conf.returncode == 0, conf.stdout[-3000:] + conf.stderr[-3000:]
    # No TensorRT on this machine: the configure step must say the plugin libraries are skipped.
    assert "TensorRT" in conf.stdout + conf.stderr
    built = subprocess.run(
        [cmake, "--build", str(build), "-j", "2"], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert list(build.rglob("libomsf2_kernels.a")), "libomsf2_kernels.a was not built"
