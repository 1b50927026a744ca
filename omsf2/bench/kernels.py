"""Kernel micro-benchmark (``omsf2 bench --kernels``): fused kernels vs the unfused reference vs TensorRT.

On a GPU, every case (the op shapes of omsf2_r50 / omsf2_r18 at 448 px, batch 8) runs on every
backend in fp32, fp16 and bf16, timed with CUDA events after a warm-up: the eager reference,
``torch.compile`` of the reference (inductor's own fusion, the fair baseline), the Triton and
CUDA kernels, and where TensorRT is installed a TensorRT engine of the reference graph (its own
pooling / concat / resize / elementwise layers) and, given a plugin library, an engine that uses
the omsf2 plugins. Each row also carries the max abs error against the fp32 reference.

On a CPU only the reference is timed. Triton runs in its interpreter for correctness (its wall
time measures Python, so it is not reported), and the CUDA and TensorRT rows say why they did
not run. ``bench/kernel_bench.py`` records the result in ``bench/results/``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _model_shape_cases(batch: int) -> list[Any]:
    from omsf2.kernels.check import GPU_CASES

    return [dataclasses.replace(c, shape=(batch, *c.shape[1:])) for c in GPU_CASES]


def _compile_rows(cases: list[Any], dtypes: list[str], iters: int) -> list[dict[str, Any]]:
    """torch.compile (inductor) of the reference: what PyTorch fuses on its own."""
    import torch

    from omsf2.kernels.check import DTYPES, percentile, time_fn
    from omsf2.kernels.reference import multiscale_pool_ref, scale_fuse_ref

    rows = []
    dev = torch.device("cuda")
    for case in cases:
        for dname in dtypes:
            inputs = case.inputs(DTYPES[dname], dev)
            fn: Any
            if case.op == "multiscale_pool":
                pool = functools.partial(multiscale_pool_ref, windows=case.windows, mode=case.mode)
                fn = torch.compile(pool, dynamic=False)
            else:
                fn = torch.compile(scale_fuse_ref, dynamic=False)
            with torch.no_grad():
                out = fn(*inputs)
                err = (out.float() - case.reference(inputs)).abs().max().item()
                times = time_fn(functools.partial(fn, *inputs), dev, warmup=20, iters=iters)
            med = statistics.median(times)
            rows.append(
                {
                    "op": case.op,
                    "case": case.label(),
                    "backend": "torch.compile(ref)",
                    "dtype": dname,
                    "status": "ok",
                    "max_abs_err": err,
                    "median_ms": med,
                    "p90_ms": percentile(times, 0.9),
                    "gb_per_s": case.min_bytes(DTYPES[dname]) / (med * 1e-3) / 1e9,
                }
            )
    return rows


def _trt_engine(onnx_path: Path, plugin_lib: Path | None) -> Any:
    """Build a strongly typed engine for fixed shapes (no optimisation profile needed)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if plugin_lib is not None:
        builder.get_plugin_registry().load_library(str(plugin_lib))
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError("TensorRT failed to build the engine")
    return trt.Runtime(logger).deserialize_cuda_engine(blob)


def _trt_rows(cases: list[Any], dtypes: list[str], iters: int, plugin_lib: Path | None) -> list[dict[str, Any]]:
    """TensorRT's own layers on the reference graph, and the omsf2 plugins where a library is given."""
    import torch

    from omsf2.kernels.check import DTYPES, percentile, time_fn
    from omsf2.kernels.ops import MultiscalePool, ScaleFuse, use_backend

    variants = [("TensorRT layers", False)] + ([("TensorRT plugin", True)] if plugin_lib else [])
    rows = []
    dev = torch.device("cuda")
    for case in cases:
        for dname in dtypes:
            inputs = case.inputs(DTYPES[dname], dev)
            module = MultiscalePool(case.windows, case.mode) if case.op == "multiscale_pool" else ScaleFuse()
            for label, plugins in variants:
                row: dict[str, Any] = {"op": case.op, "case": case.label(), "backend": label, "dtype": dname}
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        onnx_path = Path(tmp) / "op.onnx"
                        names = [f"in{i}" for i in range(len(inputs))]
                        kwargs: dict[str, Any] = {"input_names": names, "output_names": ["out"]}
                        if plugins:
                            from omsf2.export.custom_ops import plugin_ops, translation_table

                            ctx: Any = plugin_ops()
                            kwargs["custom_translation_table"] = translation_table()
                        else:
                            ctx = use_backend("ref")
                        with ctx, torch.no_grad():
                            torch.onnx.export(module, inputs, str(onnx_path), opset_version=19, dynamo=True, **kwargs)
                        engine = _trt_engine(onnx_path, plugin_lib if plugins else None)
                    ctx_exec = engine.create_execution_context()
                    out = torch.empty_like(case.reference(inputs), dtype=DTYPES[dname])
                    for name, t in zip(names, inputs, strict=True):
                        ctx_exec.set_tensor_address(name, t.data_ptr())
                    ctx_exec.set_tensor_address("out", out.data_ptr())
                    stream = torch.cuda.current_stream().cuda_stream
                    ctx_exec.execute_async_v3(stream)
                    torch.cuda.synchronize()
                    err = (out.float() - case.reference(inputs)).abs().max().item()
                    run_once = functools.partial(ctx_exec.execute_async_v3, stream)
                    times = time_fn(run_once, dev, warmup=20, iters=iters)
                    med = statistics.median(times)
                    row.update(
                        status="ok",
                        max_abs_err=err,
                        median_ms=med,
                        p90_ms=percentile(times, 0.9),
                        gb_per_s=case.min_bytes(DTYPES[dname]) / (med * 1e-3) / 1e9,
                    )
                except (ImportError, RuntimeError, ValueError, AttributeError) as e:
                    row.update(status="error", detail=" ".join(str(e).split())[:300])
                rows.append(row)
    return rows


def _direct_pool_rows(cases: list[Any], device: str, iters: int) -> list[dict[str, Any]]:
    """Max pooling at each window directly (one F.max_pool2d per window): what the cascade replaced."""
    import torch
    import torch.nn.functional as F

    from omsf2.kernels.check import DTYPES, percentile, time_fn

    rows = []
    dev = torch.device(device)
    for case in cases:
        if case.op != "multiscale_pool" or case.mode != "max":
            continue
        (x,) = case.inputs(DTYPES["fp32"], dev)

        def direct(x: Any = x, ks: tuple[int, ...] = case.windows) -> Any:
            return torch.cat([x, *(F.max_pool2d(x, k, 1, k // 2) for k in ks)], dim=1)

        with torch.no_grad():
            err = (direct() - case.reference((x,))).abs().max().item()
            times = time_fn(direct, dev, iters=iters)
        rows.append(
            {"op": case.op, "case": case.label(), "backend": "direct pools (torch)", "dtype": "fp32",
             "status": "ok", "max_abs_err": err, "median_ms": statistics.median(times),
             "p90_ms": percentile(times, 0.9)}
        )  # fmt: skip
    return rows


def _with_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ref = {(r["case"], r["dtype"]): r["median_ms"] for r in rows if r["backend"] == "ref" and r.get("median_ms")}
    for r in rows:
        base = ref.get((r["case"], r["dtype"]))
        if base and r.get("median_ms") and r["backend"] != "ref":
            r["speedup_vs_ref"] = base / r["median_ms"]
    return rows


def run_kernel_bench(device: str = "auto", iters: int = 200, plugin_lib: Path | None = None) -> dict[str, Any]:
    """Run the kernel micro-benchmark on ``device`` (``auto``, ``cpu`` or ``cuda``); returns the record.

    Raises:
        ValueError: an unknown device or ``iters`` < 1.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    if iters < 1:
        raise ValueError(f"--iters must be >= 1, got {iters}")
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        # Triton reads this when first imported: on a CPU its kernels run in the interpreter.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from omsf2.kernels.check import check_kernels

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    t0 = time.perf_counter()
    notes: list[str] = []
    if dev == "cuda":
        cases = _model_shape_cases(8)
        dtypes = ["fp32", "fp16", "bf16"]
        rows = [dataclasses.asdict(r) for r in check_kernels(dev, cases=cases, dtypes=dtypes, iters=iters)]
        rows += _compile_rows(cases, dtypes, iters)
        try:
            import tensorrt  # noqa: F401

            rows += _trt_rows(cases, dtypes, iters, plugin_lib)
        except ImportError:
            notes.append("TensorRT is not installed here: no TensorRT rows.")
        about = (
            "Op shapes of omsf2_r50 / omsf2_r18 at 448 px, batch 8, on the GPU: device time by CUDA events, "
            f"{iters} runs after warm-up. GB/s counts the minimum bytes (inputs read once, output written once)."
        )
    else:
        rows, notes, about = _cpu_rows(iters)
    rows = _with_speedups(rows)
    for r in rows:
        if r.get("detail"):
            note = f"{r['backend']}: {r['detail']}"
            if note not in notes:
                notes.append(note)
    return {
        "about": about,
        "device": dev,
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": round(time.perf_counter() - t0, 1),
        "rows": rows,
        "notes": notes,
    }


def _cpu_rows(iters: int) -> tuple[list[dict[str, Any]], list[str], str]:
    """Correctness of every backend on small odd shapes, then the reference's CPU time at model shapes."""
    from omsf2.kernels.check import CPU_CASES, check_kernels

    rows = [dataclasses.asdict(r) for r in check_kernels("cpu", cases=CPU_CASES, timing=False)]
    rows += [
        dataclasses.asdict(r) for r in check_kernels("cpu", backends=["ref"], cases=_model_shape_cases(1), iters=iters)
    ]
    rows += _direct_pool_rows(_model_shape_cases(1), "cpu", iters)
    notes = [
        "CPU machine: only the PyTorch reference is timed (model shapes, batch 1, perf_counter).",
        "Triton rows ran in Triton's CPU interpreter (TRITON_INTERPRET=1): correctness only; its wall time "
        "measures the interpreter and is not reported.",
        "CUDA and TensorRT rows need a GPU; their status says why they did not run.",
        "'direct pools (torch)' pools x once per window; the reference cascades max pools (9 = 5 then 5, "
        "13 = 9 then 5), same values; 'x ref' below 1 means slower than the reference.",
    ]
    about = "CPU run: interpreter correctness on small odd shapes, and the reference's CPU time at model shapes."
    return rows, notes, about
