"""DICOM node load scenario: concurrent scanners push radiographs; a real Orthanc receives the results.

Usage (from the repository root, Orthanc installed: ``apt-get install -y orthanc``):

    .venv/bin/python bench/dicom_load.py [--images 200] [--scus 4] [--img-size 256] [--image-px 512]

Starts Orthanc (generated config, free local ports, temporary storage) and ``omsf2 serve dicom``
as processes with the harness of ``tests/serve/conftest.py`` (loaded by path: one harness for the
test and the benchmark), pushes ``--images`` 16-bit DX images from ``--scus`` concurrent pynetdicom
associations, waits until every SR and SC is acknowledged by Orthanc, checks that Orthanc holds
exactly one SR and one SC per image, and writes ``bench/results/dicom-load-<machine>.json`` and
``.md``: images/s (first receipt to last delivery) and p50/p99 of receipt-to-delivery, from the
node's own JSON events. The model is an untrained ``omsf2_tiny`` at ``--img-size`` (throughput does
not depend on the weights) unless ``--model`` names a bundle.
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

from common import RESULTS, machine

REPO = Path(__file__).resolve().parents[1]


def _harness() -> Any:
    spec = importlib.util.spec_from_file_location("omsf2_dicom_harness", REPO / "tests" / "serve" / "conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(args: argparse.Namespace) -> dict[str, Any]:
    h = _harness()
    from omsf2.runtime.bundle import load_bundle
    from omsf2.serve.dicom_results import ModelInfo, result_uids

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="omsf2-dicom-load-") as tmp:
        root = Path(tmp)
        bundle = Path(args.model) if args.model else h.make_tiny_bundle(root, args.img_size)
        port = h.free_port()
        orthanc = h.Orthanc(root / "orthanc", port)
        orthanc.start()
        try:
            node = h.Node(bundle, root / "spool", orthanc.forward, port, "--threads", str(args.threads))
            t0 = time.perf_counter()
            node.start()
            startup_s = time.perf_counter() - t0
            result = h.load_scenario(port, node, n=args.images, scus=args.scus, size=args.image_px)
            rc = node.terminate()
            b = load_bundle(bundle)
            model = ModelInfo("", "", b.digest, "", b.classes)
            want_sr = {result_uids(u, model).sr for u in result["uids"]}
            want_sc = {result_uids(u, model).sc for u in result["uids"]}
            got_sr = {i["sop"] for i in orthanc.instances("SR")}
            got_sc = {i["sop"] for i in orthanc.instances("OT")}
            version = subprocess.run([h.orthanc_binary(), "--version"], capture_output=True, text=True).stdout
        finally:
            orthanc.stop()
        predicted = node.events("predicted")
        batches = [e["batch"] for e in predicted]
        return {
            "scenario": "dicom-load",
            "about": (
                f"{args.scus} concurrent pynetdicom SCUs push {args.images} 16-bit DX images (~{args.image_px} px) to "
                f"omsf2 serve dicom; results (TID 1500 SR + heat-map SC) C-STOREd to a local Orthanc"
            ),
            "machine": machine()[1],
            "date": time.strftime("%Y-%m-%d"),
            "orthanc": version.splitlines()[0] if version else "?",
            "model": {
                "bundle": str(bundle) if args.model else f"untrained omsf2_tiny at {args.img_size} px (ONNX FP32)",
                "backend": node.events("listening")[0]["backend"],
                "threads": args.threads,
            },
            # the machine is shared: its 1-minute load average before the run says how busy it was
            "loadavg_1m_before": round(load_before, 2),
            "node_startup_s": round(startup_s, 2),
            "node_exit_code": rc,
            "exactly_one_sr_and_sc_each": got_sr == want_sr and got_sc == want_sc,
            "orthanc_sr": len(got_sr),
            "orthanc_sc": len(got_sc),
            "mean_batch": round(sum(batches) / len(batches), 2),
            "mean_infer_ms_per_batch": round(sum(e["infer_ms"] for e in predicted) / len(predicted), 2),
            "mean_encode_ms_per_image": round(sum(e["encode_ms"] for e in predicted) / len(predicted), 2),
            **{k: v for k, v in result.items() if k != "uids"},
        }


def write(r: dict[str, Any]) -> Path:
    slug = machine()[0]
    out = RESULTS / f"dicom-load-{slug}.json"
    out.write_text(json.dumps(r, indent=2) + "\n")
    md = [
        f"# dicom-load ({out.name})",
        "",
        f"{r['about']}.",
        "",
        f"Machine: {r['machine']}; {r['date']}; {r['orthanc']}. Model: {r['model']['bundle']}, backend "
        f"{r['model']['backend']}, {r['model']['threads']} thread(s). 1-minute load average before the run: "
        f"{r['loadavg_1m_before']} (the machine is shared).",
        "",
        "| images | SCUs | images/s | p50 receipt→delivery | p99 receipt→delivery | max | mean batch "
        "| SR / SC in Orthanc |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {r['images']} | {r['scus']} | {r['images_per_s']:.2f} | {r['receipt_to_delivery_p50_s']:.3f} s "
        f"| {r['receipt_to_delivery_p99_s']:.3f} s | {r['receipt_to_delivery_max_s']:.3f} s | {r['mean_batch']} "
        f"| {r['orthanc_sr']} / {r['orthanc_sc']} (exactly one each: {r['exactly_one_sr_and_sc_each']}) |",
        "",
        f"images/s is {r['images']} over first receipt to last delivery ({r['wall_s']:.1f} s); the SCUs finished "
        f"sending after {r['send_s']:.1f} s. Per batch, inference took {r['mean_infer_ms_per_batch']} ms on "
        f"average; building and encoding one SR + SC took {r['mean_encode_ms_per_image']} ms.",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--scus", type=int, default=4)
    p.add_argument("--img-size", type=int, default=256, help="model input size of the generated bundle")
    p.add_argument("--image-px", type=int, default=512, help="rows of the pushed images (columns 16 fewer)")
    p.add_argument("--threads", type=int, default=1, help="backend threads of the node")
    p.add_argument("--model", help="a bundle to serve instead of the generated one")
    args = p.parse_args()
    r = run(args)
    out = write(r)
    print(json.dumps({k: r[k] for k in ("images_per_s", "receipt_to_delivery_p50_s", "receipt_to_delivery_p99_s")}))
    print(f"wrote {out} and {out.with_suffix('.md').name}")


if __name__ == "__main__":
    main()
