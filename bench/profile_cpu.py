"""Where the CPU time goes: onnxruntime's profiler and OpenVINO's per-layer counters on one export.

Usage (from the repository root, with the package installed in .venv):

    .venv/bin/python bench/profile_cpu.py runs/bench-r18-448/export --name r18-448 --iters 5

For each of model.onnx, model.int8-cpu.onnx and model.int8.onnx it records (1) onnxruntime's
optimised graph (op types after its fusions: how many convolutions became QLinearConv / ConvInteger,
how many Quantize/Dequantize pairs remain, which float ops sit between them) and its per-node
profile summed by op type, and (2) OpenVINO's per-layer times summed by layer type and kernel
(the kernel name says whether a convolution ran in int8 or f32), and onnxruntime on model.int8.onnx with
``session.qdqisint8allowed=1`` (every S8S8 convolution fused). With ``--before OTHER_EXPORT`` it
also times the INT8 files of both exports in interleaved rounds in this one process (onnxruntime
on ``model.int8-cpu.onnx``, OpenVINO on both files: A, B, A, B, ...), so that a before / after
ratio survives a busy machine. Written to ``bench/results/profile-<name>-<machine>.json``;
``bench/results/README.md`` links them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, summarize, written_by

from omsf2.runtime.openvino_core import openvino_core

FILES = ("model.onnx", "model.int8-cpu.onnx", "model.int8.onnx")


def _ort(path: Path, x: np.ndarray, iters: int, threads: int, config: dict[str, str] | None = None) -> dict:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        for key, value in (config or {}).items():
            so.add_session_config_entry(key, value)
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        sess.run(None, feed)
        t0 = time.perf_counter()
        for _ in range(iters):
            sess.run(None, feed)
        wall = (time.perf_counter() - t0) / iters * 1e3
        trace = json.loads(Path(sess.end_profiling()).read_text())
        graph = onnx.load(str(Path(tmp) / "opt.onnx")).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    by_op: dict[str, float] = collections.defaultdict(float)
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            by_op[ev["args"].get("op_name", "?")] += ev["dur"] / 1e3 / (iters + 1)
    total = sum(by_op.values()) or 1.0
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:12]
    return {
        "ms_per_run": wall,
        "optimized_op_counts": dict(ops.most_common()),
        "time_by_op_ms": {k: round(v, 3) for k, v in top},
        "time_share": {k: round(v / total, 3) for k, v in top},
        "float_between_qdq": _float_islands(graph),
    }


def _float_islands(graph) -> dict[str, int]:
    """Float ops fed by a DequantizeLinear: each means the tensor left INT8 (and must be re-quantized)."""
    produced_by = {o: n for n in graph.node for o in n.output}
    out: collections.Counter = collections.Counter()
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"):
            continue
        srcs = [produced_by.get(i) for i in n.input]
        if any(s is not None and s.op_type == "DequantizeLinear" for s in srcs):
            out[n.op_type] += 1
    return dict(out.most_common())


def _openvino(path: Path, x: np.ndarray, iters: int, threads: int) -> dict:
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = openvino_core()  # the process's one Core (omsf2.runtime.openvino_core says why)
    model = core.read_model(str(path))
    model.reshape({0: list(x.shape)})
    cfg = {props.inference_num_threads: threads, hints.performance_mode: hints.PerformanceMode.LATENCY,
           props.num_streams: 1, props.enable_profiling: True, hints.inference_precision: ov.Type.f32}  # fmt: skip
    req = core.compile_model(model, "CPU", cfg).create_infer_request()
    req.infer({0: x})
    t0 = time.perf_counter()
    for _ in range(iters):
        req.infer({0: x})
    wall = (time.perf_counter() - t0) / iters * 1e3
    by_kind: dict[str, float] = collections.defaultdict(float)
    for p in req.get_profiling_info():
        if p.status == p.Status.EXECUTED:
            by_kind[f"{p.node_type} [{p.exec_type}]"] += p.real_time.total_seconds() * 1e3
    total = sum(by_kind.values()) or 1.0
    top = sorted(by_kind.items(), key=lambda kv: -kv[1])[:14]
    return {"ms_per_run": wall, "time_by_layer_ms": {k: round(v, 3) for k, v in top},
            "time_share": {k: round(v / total, 3) for k, v in top}}  # fmt: skip


def _ort_runner(path: Path, x: np.ndarray, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)


def _openvino_runner(path: Path, x: np.ndarray, threads: int):
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = openvino_core()  # the process's one Core (omsf2.runtime.openvino_core says why)
    model = core.read_model(str(path))
    model.reshape({0: list(x.shape)})
    cfg = {props.inference_num_threads: threads, hints.performance_mode: hints.PerformanceMode.LATENCY,
           props.num_streams: 1, hints.inference_precision: ov.Type.f32}  # fmt: skip
    req = core.compile_model(model, "CPU", cfg).create_infer_request()
    return lambda: req.infer({0: x})


def _before_after(before: Path, after: Path, x: np.ndarray, rounds: int, iters: int, threads: int) -> dict:
    """Both exports' INT8 files timed in interleaved rounds; ratios of medians after / before."""
    runs = {}
    for tag, d in (("before", before), ("after", after)):
        runs[f"ort-int8 {tag}"] = _ort_runner(d / "model.int8-cpu.onnx", x, threads)
        runs[f"openvino model.int8.onnx {tag}"] = _openvino_runner(d / "model.int8.onnx", x, threads)
        runs[f"openvino model.int8-cpu.onnx {tag}"] = _openvino_runner(d / "model.int8-cpu.onnx", x, threads)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for f in runs.values():
        f()
    load0 = os.getloadavg()
    for _ in range(rounds):
        for key, f in runs.items():
            for _ in range(iters):
                t = time.perf_counter()
                f()
                times[key].append((time.perf_counter() - t) * 1e3)
    rows = {k: {"p50_ms": round(float(np.median(v)), 2), "min_ms": round(float(np.min(v)), 2), "n": len(v)}
            for k, v in times.items()}  # fmt: skip
    ratios = {b: round(rows[f"{b} after"]["p50_ms"] / rows[f"{b} before"]["p50_ms"], 3)
              for b in ("ort-int8", "openvino model.int8.onnx", "openvino model.int8-cpu.onnx")}  # fmt: skip
    return {"before": str(before), "after": str(after), "rounds": rounds, "iters_per_round": iters,
            "load_average_start_end": [list(load0), list(os.getloadavg())], "rows": rows,
            "p50_ratio_after_over_before": ratios}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--before", type=Path, help="another export of the same model: time both INT8 files interleaved")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds for --before")
    args = ap.parse_args()
    from omsf2.bench.machine import fingerprint, machine_slug

    report = json.loads((args.export / "report.json").read_text())
    s = report["preprocess"]["size"][0]
    x = np.random.default_rng(0).standard_normal((1, report["preprocess"]["channels"], s, s), dtype=np.float32)
    fp = fingerprint(args.threads)
    rec = {"name": args.name, "export": str(args.export), "img_size": s, "fingerprint": fp, "iters": args.iters,
           "command": " ".join(["python", "bench/profile_cpu.py", *sys.argv[1:]]), "written_by": written_by(__file__),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": list(os.getloadavg()),
           "onnxruntime": {}, "openvino": {}}  # fmt: skip
    for f in FILES:
        if (args.export / f).is_file():
            print(f"profiling {f}", flush=True)
            rec["onnxruntime"][f] = _ort(args.export / f, x, args.iters, args.threads)
            rec["openvino"][f] = _openvino(args.export / f, x, args.iters, args.threads)
    if (args.export / "model.int8.onnx").is_file():
        # onnxruntime on x86 fuses only some S8S8 Q/DQ convolutions by default; this forces all of them.
        forced = {"session.qdqisint8allowed": "1"}
        rec["onnxruntime"]["model.int8.onnx, session.qdqisint8allowed=1"] = _ort(
            args.export / "model.int8.onnx", x, args.iters, args.threads, forced
        )
    if args.before is not None:
        print(f"timing {args.before} against {args.export}, interleaved", flush=True)
        rec["before_after"] = _before_after(args.before, args.export, x, args.rounds, args.iters, args.threads)
    out = RESULTS / f"profile-{args.name}-{machine_slug(fp)}.json"
    out.write_text(json.dumps(rec, indent=2) + "\n")
    print(f"wrote {out}\nwrote {summarize()}")


if __name__ == "__main__":
    main()
