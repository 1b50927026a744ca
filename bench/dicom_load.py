"""DICOM node load scenario: concurrent scanners push radiographs; a real Orthanc receives the results.

Usage (from the repository root, Orthanc installed: ``apt-get install -y orthanc``):

    .venv/bin/python bench/dicom_load.py [--images 200] [--scus 4] [--img-size 256] [--image-px 512]
                                         [--results sr,pm] [--result-workers 1] [--backend ort]

Starts Orthanc (generated config, free local ports, temporary storage) and ``omsf2 serve dicom``
as processes with the harness of ``tests/serve/conftest.py`` (loaded by path: one harness for the
test and the benchmark), pushes ``--images`` 16-bit DX images from ``--scus`` concurrent pynetdicom
associations, waits until every result is acknowledged by Orthanc and checks that Orthanc holds
exactly one of each result object per image. In the same run, before and after the node, the bare
:class:`~omsf2.runtime.predictor.Predictor` (same bundle, backend and threads) predicts the same 200
files as ``omsf2 predict`` would (read, preprocess, infer; one process, batches of the bundle's
``max_batch``): the node's throughput is reported as a share of it.

Writes ``bench/results/dicom-load-<machine>.json`` and ``.md``: images/s (first receipt to last
delivery, and sustained: the middle 80 % of deliveries), p50/p99 receipt-to-delivery, and where
the time goes: per-stage means from the node's own events (decode, inference per batch and per
image, result building per image, delivery per result), the CPU seconds of the node (with its
result workers) and of Orthanc over the run, and the machine's load average. The model is an
untrained ``omsf2_tiny`` at ``--img-size`` (throughput does not depend on the weights) unless
``--model`` names a bundle.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, machine, written_by

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def harness() -> Any:
    """``tests/serve/conftest.py`` loaded by path: one harness for the node's tests and its benchmarks."""
    spec = importlib.util.spec_from_file_location("omsf2_dicom_harness", REPO / "tests" / "serve" / "conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children (the node's result workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def bare_predictor(bundle: Path, files: list[Path], backend: str, threads: int) -> dict[str, Any]:
    """Images/s of ``Predictor.predict_files`` over ``files`` (what ``omsf2 predict`` does), after a warm-up."""
    from omsf2.runtime.predictor import Predictor

    pred = Predictor.from_bundle(bundle, backend=backend, threads=threads)
    pred.predict_files(files[: pred.max_batch])  # warm-up: sessions, first-call allocations
    t0 = time.perf_counter()
    results = pred.predict_files(files)
    wall = time.perf_counter() - t0
    assert all(r.error is None for r in results), [r.error for r in results if r.error][:3]
    return {"images_per_s": round(len(files) / wall, 3), "wall_s": round(wall, 3), "max_batch": pred.max_batch}


def pacs_ceiling(orthanc: Any, root: Path, per_kind: int = 30) -> dict[str, Any]:
    """Orthanc's own ingest rate for the node's result objects, measured right after the node's run.

    ``per_kind`` of each result kind Orthanc holds are fetched back, given new UIDs (so Orthanc
    stores them as new instances) and C-STOREd over one association as the node sends them
    (pynetdicom, Nagle off, results interleaved SR then PM). Tried by hand on this machine, DCMTK's
    storescu was about as slow as pynetdicom to this Orthanc, and pynetdicom to a do-nothing SCP was
    several times faster, so this measures the PACS, not the sender: the node cannot deliver faster.
    """
    import socket as _socket

    import pydicom
    from pydicom.uid import generate_uid
    from pynetdicom import AE

    root.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, list[Path]] = {}
    for i in orthanc.instances():
        files = kinds.setdefault(i["sop_class"], [])
        if len(files) < per_kind:
            ds = pydicom.dcmread(orthanc.file(i["id"], root / f"{i['id']}.dcm"))
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.SeriesInstanceUID = generate_uid()
            ds.save_as(root / f"{i['id']}.dcm", enforce_file_format=True)
            files.append(root / f"{i['id']}.dcm")
    order = [f for pair in zip(*kinds.values(), strict=False) for f in pair]
    ae = AE(ae_title="OMSF2")
    for f in order[: len(kinds)]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    host, port = orthanc.forward.split("@")[1].split(":")
    assoc = ae.associate(host, int(port), ae_title=orthanc.forward.split("@")[0])
    assoc.dul.socket.socket.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    ok = sum(int(getattr(assoc.send_c_store(f), "Status", -1)) == 0 for f in order)
    wall = time.perf_counter() - t0
    assoc.release()
    per_result = len(kinds)
    return {"objects": len(order), "stored": ok, "wall_s": round(wall, 3),
            "ms_per_object": round(1000 * wall / len(order), 2),
            "results_per_s": round(len(order) / per_result / wall, 3)}  # fmt: skip


def _sustained(forwarded: list[dict[str, Any]], ts: Any) -> float:
    """Deliveries per second between the 10th and the 90th percentile of delivery times."""
    times = np.sort([ts(e) for e in forwarded])
    lo, hi = int(0.1 * len(times)), int(0.9 * len(times))
    return float((hi - lo) / max(1e-9, times[hi - 1] - times[lo])) if hi - 1 > lo else float("nan")


def _stages(node: Any) -> dict[str, float]:
    """Mean per-stage times from the node's events (milliseconds)."""
    predicted, forwarded = node.events("predicted"), node.events("forwarded")
    batches = {(e["infer_ms"], e["batch"]) for e in predicted}  # one entry per batch (its images share it)
    return {
        "mean_batch": round(float(np.mean([e["batch"] for e in predicted])), 2),
        "decode_ms_per_image": round(float(np.mean([e["read_ms"] for e in predicted])), 2),
        "infer_ms_per_batch": round(float(np.mean([ms for ms, _ in batches])), 2),
        "infer_ms_per_image": round(sum(ms for ms, _ in batches) / len(predicted), 2),
        "build_ms_per_image": round(float(np.mean([e["encode_ms"] for e in predicted])), 2),
        "send_ms_per_result": round(float(np.mean([e["send_ms"] for e in forwarded])), 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    h = harness()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="omsf2-dicom-load-") as tmp:
        root = Path(tmp)
        bundle = Path(args.model) if args.model else h.make_tiny_bundle(root, args.img_size)
        datasets, files = h.load_images(args.images, args.image_px, root / "images")
        bare_before = bare_predictor(bundle, files, args.backend, args.threads)
        port = h.free_port()
        orthanc = h.Orthanc(root / "orthanc", port)
        orthanc.start()
        try:
            node = h.Node(bundle, root / "spool", orthanc.forward, port, "--threads", str(args.threads),
                          "--backend", args.backend, "--results", args.results,
                          "--result-workers", str(args.result_workers))  # fmt: skip
            t0 = time.perf_counter()
            node.start()
            startup_s = time.perf_counter() - t0
            cpu0 = (cpu_seconds(node.proc.pid), cpu_seconds(orthanc.proc.pid), time.perf_counter())
            result = h.load_scenario(port, node, datasets=datasets, scus=args.scus)
            cpu = (cpu_seconds(node.proc.pid) - cpu0[0], cpu_seconds(orthanc.proc.pid) - cpu0[1])
            elapsed = time.perf_counter() - cpu0[2]
            stages = _stages(node)
            rc = node.terminate()
            held = orthanc.by_kind()
            ceiling = pacs_ceiling(orthanc, root / "ceiling")
            version = subprocess.run([h.orthanc_binary(), "--version"], capture_output=True, text=True).stdout
        finally:
            orthanc.stop()
        bare_after = bare_predictor(bundle, files, args.backend, args.threads)
        kinds = args.results.split(",")
        exactly_once = all(len(held[k]) == args.images for k in kinds) and held["image"] == set()
        bare = round((bare_before["images_per_s"] + bare_after["images_per_s"]) / 2, 3)
        sustained = round(_sustained(node.events("forwarded"), h._ts), 3)
        return {
            "scenario": "dicom-load",
            "written_by": written_by(__file__),
            "about": (
                f"{args.scus} concurrent pynetdicom SCUs push {args.images} 16-bit DX images (~{args.image_px} px) to "
                f"omsf2 serve dicom; results ({args.results}) C-STOREd to a local Orthanc; the bare Predictor on the "
                "same files, backend and threads before and after, in the same run"
            ),
            "machine": machine()[1],
            "date": time.strftime("%Y-%m-%d"),
            "orthanc": version.splitlines()[0] if version else "?",
            "model": {
                "bundle": str(bundle) if args.model else f"untrained omsf2_tiny at {args.img_size} px (ONNX FP32)",
                "backend": node.events("listening")[0]["backend"],
                "threads": args.threads,
                "results": kinds,
                "result_workers": args.result_workers,
            },
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "node_startup_s": round(startup_s, 2),
            "node_exit_code": rc,
            "exactly_one_result_each": exactly_once,
            "orthanc_objects": {k: len(v) for k, v in held.items()},
            "bare_predictor": {"before": bare_before, "after": bare_after, "images_per_s": bare},
            "sustained_images_per_s": sustained,
            "node_share_of_bare": round(sustained / bare, 3),
            "pacs_ingest": ceiling,
            "node_share_of_pacs_ingest": round(sustained / ceiling["results_per_s"], 3),
            "stages": stages,
            "cpu_s": {"node_and_workers": round(cpu[0], 2), "orthanc": round(cpu[1], 2), "elapsed": round(elapsed, 2)},
            **{k: v for k, v in result.items() if k != "uids"},
        }


def write(r: dict[str, Any]) -> Path:
    slug = machine()[0]
    out = RESULTS / f"dicom-load-{slug}.json"
    out.write_text(json.dumps(r, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(r))
    return out


def render(r: dict[str, Any]) -> str:
    """The record's md page, rendered from the JSON alone."""
    s, cpu, bare, pacs = r["stages"], r["cpu_s"], r["bare_predictor"], r["pacs_ingest"]
    share = r["node_share_of_bare"]
    return "\n".join(
        [
            f"# dicom-load (dicom-load-{machine()[0]}.json)",
            "",
            f"{r['about']}.",
            "",
            f"Machine: {r['machine']}; {r['date']}; {r['orthanc']}. Model: {r['model']['bundle']}, backend "
            f"{r['model']['backend']}, {r['model']['threads']} thread(s); results {', '.join(r['model']['results'])} "
            f"built by {r['model']['result_workers']} worker process(es). 1-minute load average "
            f"{r['loadavg_1m_before']} before and {r['loadavg_1m_after']} after (the machine is shared).",
            "",
            "| images | SCUs | node images/s (sustained) | first receipt to last delivery | bare Predictor images/s "
            "| node / bare | p50 receipt→delivery | p99 | Orthanc objects, exactly once |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| {r['images']} | {r['scus']} | {r['sustained_images_per_s']:.2f} | {r['images_per_s']:.2f} images/s "
            f"({r['wall_s']:.1f} s) | {bare['images_per_s']:.2f} (before {bare['before']['images_per_s']:.2f}, after "
            f"{bare['after']['images_per_s']:.2f}) | {100 * share:.0f} % | {r['receipt_to_delivery_p50_s']:.2f} s "
            f"| {r['receipt_to_delivery_p99_s']:.2f} s | {r['orthanc_objects']} ({r['exactly_one_result_each']}) |",
            "",
            f"The PACS's own ingest, measured right after the run with {pacs['objects']} of the node's result objects "
            f"re-sent under new UIDs over one association: {pacs['ms_per_object']} ms an object, "
            f"{pacs['results_per_s']:.2f} results/s; the node sustained {100 * r['node_share_of_pacs_ingest']:.0f} % "
            "of that.",
            "",
            "Where the time goes (means from the node's events): decoding "
            f"{s['decode_ms_per_image']} ms per image, inference {s['infer_ms_per_batch']} ms per batch of "
            f"{s['mean_batch']} ({s['infer_ms_per_image']} ms per image), building the results "
            f"{s['build_ms_per_image']} ms per image, delivering {s['send_ms_per_result']} ms per result. Over the "
            f"{cpu['elapsed']} s of the run "
            f"the node and its result worker used {cpu['node_and_workers']} CPU seconds and Orthanc {cpu['orthanc']} "
            f"(2 cores give {2 * cpu['elapsed']:.0f}).",
            "",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--scus", type=int, default=4)
    p.add_argument("--img-size", type=int, default=256, help="model input size of the generated bundle")
    p.add_argument("--image-px", type=int, default=512, help="rows of the pushed images (columns 16 fewer)")
    p.add_argument("--threads", type=int, default=1, help="backend threads of the node and the bare Predictor")
    p.add_argument("--backend", default="ort", help="runtime backend of the node and the bare Predictor")
    p.add_argument("--results", default="sr,pm", help="the node's --results")
    p.add_argument("--result-workers", type=int, default=1, help="the node's --result-workers")
    p.add_argument("--model", help="a bundle to serve instead of the generated one")
    args = p.parse_args()
    r = run(args)
    out = write(r)
    print(json.dumps({k: r[k] for k in ("sustained_images_per_s", "node_share_of_bare", "receipt_to_delivery_p50_s",
                                        "receipt_to_delivery_p99_s")}))  # fmt: skip
    print(f"wrote {out} and {out.with_suffix('.md').name}")


if __name__ == "__main__":
    main()
