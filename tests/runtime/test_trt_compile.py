"""The TensorRT C++ compiles against TensorRT's real public headers, for every version omsf2 targets.

No machine here has TensorRT's libraries, so compiling to object files is as far as this goes: the headers of
NVIDIA/TensorRT OSS (``third_party/tensorrt/<major.minor>/include``, see its README) for TensorRT 10.3 (JetPack
6.1/6.2) and 11.x, plus the CUDA toolkit's headers. Each version compiles, with the project's warnings as errors:

- the plugin library ``omsf2/kernels/cuda/plugin/omsf2_plugins.cpp`` in both of the builds CMake makes of it
  (``getCreators`` for ``IPluginRegistry::loadLibrary``, and ``OMSF2_PLUGIN_SELF_REGISTER``);
- the C++ runtime's engine ``omsf2/runtime/cpp/trt_engine.cpp``.

Two probes prove the check itself: each folder's headers declare the version the folder is named after, and an
API that TensorRT 11 removed (``BuilderFlag::kFP16``) compiles against 10.3 and fails against 11.x. All jobs
compile in parallel, in a few seconds on 2 cores. Where g++ or the CUDA headers are missing the tests skip, except
under ``CI=true``, where they fail.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENDORED = REPO / "third_party" / "tensorrt"
VERSIONS = ("10.3", "11.1")  # folders under third_party/tensorrt, named <major>.<minor> after NvInferVersion.h
PLUGIN = REPO / "omsf2" / "kernels" / "cuda" / "plugin" / "omsf2_plugins.cpp"
CSRC = REPO / "omsf2" / "kernels" / "cuda" / "csrc"
RUNTIME_CPP = REPO / "omsf2" / "runtime" / "cpp"
# The warnings CMake enables for the project's C++ (omsf2/runtime/cpp/CMakeLists.txt), as errors. The vendored
# and CUDA headers come in with -isystem, so their own warnings stay out of the verdict.
WARNINGS = ("-Wall", "-Wextra", "-Werror")

VERSION_PROBE = """\
#include <NvInferRuntime.h>
static_assert(NV_TENSORRT_MAJOR == {major} && NV_TENSORRT_MINOR == {minor}, "not the headers of TensorRT {version}");
"""
REMOVED_API_PROBE = """\
#include <NvInfer.h>
nvinfer1::BuilderFlag const kRemovedIn11 = nvinfer1::BuilderFlag::kFP16;
"""


def _unavailable(reason: str) -> None:
    """Fail under CI (the check must run there), skip elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


def _cuda_include() -> Path | None:
    """The CUDA toolkit's include folder (with cuda_runtime_api.h), found as tests/kernels/test_cuda_compile.py does."""
    nvcc = shutil.which("nvcc")
    homes = [
        os.environ.get("CUDA_HOME", ""),
        str(Path(nvcc).resolve().parent.parent) if nvcc else "",
        "/usr/local/cuda",
    ]
    found = [Path(h) / "include" for h in homes if h and (Path(h) / "include" / "cuda_runtime_api.h").is_file()]
    return found[0] if found else None


@dataclass(frozen=True)
class Job:
    """One translation unit compiled against one TensorRT version."""

    version: str
    name: str
    source: Path
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    returncode: int
    stderr: str
    obj: Path


def _jobs(probes: Path) -> list[Job]:
    (probes / "removed_api.cpp").write_text(REMOVED_API_PROBE)
    jobs = []
    for version in VERSIONS:
        major, minor = version.split(".")
        probe = probes / f"version_{major}_{minor}.cpp"
        probe.write_text(VERSION_PROBE.format(major=major, minor=minor, version=version))
        plugin_flags = ("-fvisibility=hidden", "-fvisibility-inlines-hidden", f"-I{CSRC}")
        jobs += [
            Job(version, "plugin", PLUGIN, plugin_flags),
            Job(version, "plugin_autoreg", PLUGIN, (*plugin_flags, "-DOMSF2_PLUGIN_SELF_REGISTER")),
            Job(version, "trt_engine", RUNTIME_CPP / "trt_engine.cpp", (f"-I{RUNTIME_CPP}",)),
            Job(version, "version_probe", probe),
            Job(version, "removed_api_probe", probes / "removed_api.cpp"),
        ]
    return jobs


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Result]:
    """Every job compiled to an object file, two at a time; results by (version, name)."""
    gxx = shutil.which("g++")
    if gxx is None:
        _unavailable("g++ not found on PATH: cannot compile the TensorRT C++ (apt-get install g++)")
    cuda_include = _cuda_include()
    if cuda_include is None:
        _unavailable("no CUDA headers (cuda_runtime_api.h) under $CUDA_HOME, nvcc's toolkit or /usr/local/cuda")
    missing = [v for v in VERSIONS if not (VENDORED / v / "include" / "NvInferRuntime.h").is_file()]
    assert not missing, f"vendored TensorRT headers missing for {missing} under {VENDORED}"
    out = tmp_path_factory.mktemp("trt_compile")
    jobs = _jobs(out)

    def compile_one(job: Job) -> Result:
        obj = out / f"{job.name}-{job.version}.o"
        cmd = [str(gxx), "-std=c++17", "-O2", "-fPIC", *WARNINGS, *job.flags]
        cmd += ["-isystem", str(VENDORED / job.version / "include"), "-isystem", str(cuda_include)]
        cmd += ["-c", str(job.source), "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        return Result(proc.returncode, proc.stderr, obj)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(compile_one, jobs))
    return {(job.version, job.name): result for job, result in zip(jobs, results, strict=True)}


def _assert_compiled(result: Result, what: str) -> None:
    assert result.returncode == 0, f"{what} does not compile:\n{result.stderr[-6000:]}"
    assert result.obj.stat().st_size > 0, f"{what}: empty object file"


@pytest.mark.parametrize("version", VERSIONS)
def test_headers_are_the_version_of_their_folder(compiled: dict[tuple[str, str], Result], version: str) -> None:
    _assert_compiled(compiled[version, "version_probe"], f"the TensorRT {version} version probe")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", ["plugin", "plugin_autoreg"])
def test_plugin_library_compiles(compiled: dict[tuple[str, str], Result], version: str, name: str) -> None:
    _assert_compiled(compiled[version, name], f"{PLUGIN.relative_to(REPO)} ({name}) against TensorRT {version}")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", ["plugin", "plugin_autoreg"])
def test_plugin_library_exports_the_tensorrt_entry_points(
    compiled: dict[tuple[str, str], Result], tmp_path: Path, version: str, name: str
) -> None:
    """Linked as CMake links it (hidden visibility), the library exports what loadLibrary looks up, and only that.

    ``setLoggerFinder`` in both builds; ``getCreators`` only in the loadLibrary build (a self-registering library
    that also exported it would fail loadLibrary on a duplicate creator). The loadLibrary build is then loaded as
    ``IPluginRegistry::loadLibrary`` loads it (dlopen, dlsym ``getCreators``) and hands over its two creators.
    """
    result = compiled[version, name]
    _assert_compiled(result, f"{PLUGIN.relative_to(REPO)} ({name}) against TensorRT {version}")
    gxx, nm = shutil.which("g++"), shutil.which("nm")
    if gxx is None or nm is None:
        _unavailable("g++ and nm (binutils) are needed to link and inspect the plugin library")
    # No libnvinfer / libcudart / kernels here: leave their symbols undefined and bind lazily (never called).
    lib = tmp_path / f"lib{name}-{version}.so"
    link = [str(gxx), "-shared", "-Wl,-z,lazy", str(result.obj), "-o", str(lib)]
    proc = subprocess.run(link, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    dynsym = subprocess.run([str(nm), "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    functions = {f[2] for f in (line.split() for line in dynsym.stdout.splitlines()) if len(f) == 3 and f[1] == "T"}
    expected = {"setLoggerFinder", "getCreators"} if name == "plugin" else {"setLoggerFinder"}
    assert functions == expected
    if name == "plugin":
        handle = ctypes.CDLL(str(lib), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
        get_creators = handle.getCreators
        get_creators.restype, get_creators.argtypes = ctypes.c_void_p, [ctypes.POINTER(ctypes.c_int32)]
        count = ctypes.c_int32(-1)
        assert get_creators(ctypes.byref(count)) is not None
        assert count.value == 2  # MultiscalePool and ScaleFuse


@pytest.mark.parametrize("version", VERSIONS)
def test_trt_engine_compiles(compiled: dict[tuple[str, str], Result], version: str) -> None:
    _assert_compiled(compiled[version, "trt_engine"], f"omsf2/runtime/cpp/trt_engine.cpp against TensorRT {version}")


def test_an_api_removed_in_11_fails_the_check(compiled: dict[tuple[str, str], Result]) -> None:
    """The check tells the versions apart: BuilderFlag::kFP16 exists in 10.3 and is gone in 11 (strong typing)."""
    _assert_compiled(compiled["10.3", "removed_api_probe"], "BuilderFlag::kFP16 against TensorRT 10.3")
    gone = compiled["11.1", "removed_api_probe"]
    assert gone.returncode != 0, "BuilderFlag::kFP16 compiled against the TensorRT 11 headers"
    assert "kFP16" in gone.stderr
