"""Triton serving scenario: ``omsf2 serve triton`` throughput and p50/p99 latency, 1 and 8 clients.

Builds a bundle of ``omsf2_tiny`` at the demo's 224 px (untrained, seed 0: serving cost does not
depend on the weights), starts ``omsf2 serve triton`` from a venv with ``omsf2[triton-serve]`` (the
one the tests cache, or ``--serve-bin``) on free 127.0.0.1 ports, and sends real chest radiographs
(PNG bytes from ../shared/data/cxr-real, else phantoms) over gRPC: first one client in a loop,
then 8 concurrent clients. Each request is one file; latency is the client's round trip. Triton's
own statistics give the executions and the mean batch size. The in-process Predictor (read,
preprocess, onnxruntime) is timed on the same files as the baseline. Writes
``results/triton-serve-<machine>.json`` and ``.md``.

    .venv/bin/python bench/triton_serve.py [--requests 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from common import RESULTS, machine, written_by  # noqa: E402
from dicom_load import harness  # noqa: E402

CXR = REPO.parent / "shared" / "data" / "cxr-real"
TOKEN = "omsf2-bench"


def make_bundle(root: Path) -> Path:
    import torch

    from omsf2 import create_model
    from omsf2.config import PreprocessSpec
    from omsf2.data.synthetic import STAGES
    from omsf2.export.targets import ExportSpec, run_export
    from omsf2.models.checkpoint import save_checkpoint
    from omsf2.runtime.bundle import BundleSpec, make_bundle

    torch.manual_seed(0)
    model = create_model("omsf2_tiny", img_size=224, num_classes=len(STAGES)).eval()
    ckpt = {"model_config": model.cfg.to_dict(), "classes": list(STAGES), "task": "multiclass",
            "preprocess": PreprocessSpec(size=(224, 224)).to_dict(), "model": model.state_dict()}  # fmt: skip
    save_checkpoint(root / "tiny.pt", ckpt)
    run_export(ExportSpec(str(root / "tiny.pt"), str(root / "export")))
    make_bundle(BundleSpec(str(root / "export"), str(root / "bundle"), name="omsf2_tiny-224", max_batch=16))
    return root / "bundle"


def input_files(root: Path, n: int = 32) -> tuple[list[Path], str]:
    files = sorted((CXR / "val").rglob("*.png"))[:n] if CXR.is_dir() else []
    if files:
        return files, f"{len(files)} cxr-real val PNGs"
    from omsf2.data.synthetic import write_dataset

    write_dataset(root / "phantoms", n, seed=1, size=512, n_val=0, n_test=0, workers=1)
    files = sorted((root / "phantoms").rglob("*.png"))[:n]
    return files, f"{len(files)} synthetic 512-px phantoms"


def default_serve_bin() -> Path:
    found = sorted((Path.home() / ".cache" / "omsf2" / "venvs").glob("pytriton-*/bin/omsf2"), key=os.path.getmtime)
    if not found:
        sys.exit("no omsf2[triton-serve] venv found: run tests/serve/test_triton_serve.py once, or pass --serve-bin")
    return found[-1]


def start_server(serve_bin: Path, bundle: Path, threads: int, log: Path) -> tuple[subprocess.Popen, str, str]:
    import tritonclient.http as httpclient

    http, grpc, metrics = harness().free_ports(3)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(OMP_NUM_THREADS=str(threads), OMSF2_TRITON_ACCESS_TOKEN=TOKEN)
    cmd = [str(serve_bin), "serve", "triton", "--model", str(bundle), "--http-port", str(http), "--grpc-port",
           str(grpc), "--metrics-port", str(metrics), "--threads", str(threads), "--backend", "ort"]  # fmt: skip
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if client.is_model_ready("omsf2"):
                return proc, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        except Exception:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    sys.exit("server not ready in 300 s")


def one_request(client, data: np.ndarray) -> float:
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")
    inp.set_data_from_numpy(data)
    t0 = time.perf_counter()
    res = client.infer("omsf2", [inp])
    dt = time.perf_counter() - t0
    if res.as_numpy("label") is None:
        raise RuntimeError("no label in the response")
    return dt


def run_clients(grpc_url: str, blobs: list[np.ndarray], clients: int, total: int) -> dict:
    import tritonclient.grpc as grpcclient

    per = total // clients
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []

    def work(k: int) -> None:
        c = grpcclient.InferenceServerClient(grpc_url)
        try:
            for i in range(per):
                lat[k].append(one_request(c, blobs[(k * 7 + i) % len(blobs)]))
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        sys.exit(f"{len(errors)} client errors, first: {errors[0]}")
    ms = np.array([x for row in lat for x in row]) * 1e3
    return {
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "clients": clients,
        "requests": int(ms.size),
        "wall_s": round(wall, 3),
        "images_per_s": round(ms.size / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def server_stats(http_url: str) -> dict:
    import tritonclient.http as httpclient

    s = httpclient.InferenceServerClient(http_url).get_inference_statistics(
        "omsf2", headers={"triton-access-token": TOKEN}
    )["model_stats"][0]
    return {
        "inference_count": int(s["inference_count"]),
        "execution_count": int(s["execution_count"]),
        "batch_sizes": {str(b["batch_size"]): int(b["compute_infer"]["count"]) for b in s["batch_stats"]},
    }


def delta(a: dict, b: dict) -> dict:
    inf = b["inference_count"] - a["inference_count"]
    exe = b["execution_count"] - a["execution_count"]
    return {"inferences": inf, "executions": exe, "mean_batch": round(inf / max(exe, 1), 2)}


def baseline(bundle: Path, files: list[Path], threads: int, n: int) -> dict:
    from omsf2.runtime import Predictor

    p = Predictor.from_bundle(bundle, backend="ort", threads=threads)
    for f in files[:5]:
        p.predict([f])
    ms = []
    for i in range(n):
        t0 = time.perf_counter()
        p.predict([files[i % len(files)]])
        ms.append((time.perf_counter() - t0) * 1e3)
    a = np.array(ms)
    return {"load_avg_1m_after": round(os.getloadavg()[0], 2), "requests": n,
            "images_per_s": round(1e3 / a.mean(), 2), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per scenario")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads in the server and the baseline")
    ap.add_argument("--serve-bin", type=Path, default=None, help="omsf2 of a venv with omsf2[triton-serve]")
    args = ap.parse_args()
    serve_bin = args.serve_bin or default_serve_bin()
    slug, desc = machine()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = make_bundle(root)
        files, about_inputs = input_files(root)
        blobs = [np.array([[f.read_bytes()]], dtype=np.object_) for f in files]
        base = baseline(bundle, files, args.threads, args.requests)
        proc, http_url, grpc_url = start_server(serve_bin, bundle, args.threads, root / "server.log")
        try:
            run_clients(grpc_url, blobs, 1, 20)  # warm-up
            rows = []
            for clients in (1, 8):
                before = server_stats(http_url)
                row = run_clients(grpc_url, blobs, clients, args.requests)
                row.update(delta(before, server_stats(http_url)))
                rows.append(row)
                print(json.dumps(row))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(90)
    result = {
        "scenario": "triton-serve",
        "written_by": written_by(__file__),
        "about": (f"omsf2 serve triton (PyTriton's tritonserver, dynamic batching, onnxruntime FP32 with "
                  f"{args.threads} thread(s)) on omsf2_tiny at 224 px; gRPC clients, one file per request, "
                  f"{about_inputs}; latency is the client's round trip (decode + preprocess + model + transport)"),
        "machine": desc,
        "date": datetime.date.today().isoformat(),
        "command": f"bench/triton_serve.py --requests {args.requests} --threads {args.threads}",
        "baseline_predictor_in_process": base,
        "rows": rows,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"triton-serve-{slug}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# triton-serve ({out.name})", "", result["about"] + ".", "", f"Machine: {desc}; {result['date']}.", ""]
    md += ["| clients | requests | images/s | p50 ms | p90 ms | p99 ms | executions | mean batch | load avg |"]
    md += ["|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {r['clients']} | {r['requests']} | {r['images_per_s']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} "
           f"| {r['executions']} | {r['mean_batch']} | {r['load_avg_1m_after']} |" for r in rows]  # fmt: skip
    md += ["", f"Baseline, the Predictor in-process on one file at a time: {base['images_per_s']} images/s, "
           f"p50 {base['p50_ms']} ms, p99 {base['p99_ms']} ms (load average {base['load_avg_1m_after']}); "
           "it also maps the heat map back onto the full-size radiograph, which the server leaves to the client "
           "(it returns the model-space map and original_hw).", "",
           "The machine's 2 cores are shared with other jobs (the 1-minute load average after each row is "
           "recorded), so absolute figures are noisy; the server, its Python-backend stub and the clients "
           "all run on those 2 cores.", ""]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(md))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
