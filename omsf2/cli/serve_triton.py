"""``omsf2 serve triton``: serve a bundle with Triton Inference Server through PyTriton.

Two models: ``NAME`` (encoded images in, labels and probabilities out: any client) and
``NAME_logits`` (preprocessed tensors in, checked logits, heat maps and the bundle's sha256 out:
what ``omsf2 predict`` and ``omsf2 serve dicom`` use with ``--backend triton --triton-url``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omsf2.cli.errors import console
from omsf2.cli.predict import ExpectSha256Option, TrustOption, trust_policy


def serve_triton_cmd(
    model: Annotated[Path, typer.Option(help="A bundle folder (or an 'omsf2 export' folder).")],
    http_port: Annotated[int, typer.Option(help="HTTP/REST port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    backend: Annotated[
        str, typer.Option(help="Predictor backend: auto, ort, ort-int8, openvino, tensorrt ...")
    ] = "auto",
    model_name: Annotated[str, typer.Option(help="The Triton model name.")] = "omsf2",
    max_batch: Annotated[int | None, typer.Option(help="Largest dynamic batch (default: the bundle's).")] = None,
    max_queue_delay_us: Annotated[int, typer.Option(help="How long the batcher waits to fill a batch (µs).")] = 2000,
    threads: Annotated[int, typer.Option(help="CPU threads of the backend session (0: its default).")] = 0,
    access_token: Annotated[
        str | None,
        typer.Option(
            envvar="OMSF2_TRITON_ACCESS_TOKEN",
            show_default=False,
            help="Token for Triton's protected endpoints (statistics ...; default: a random one).",
        ),
    ] = None,
    trust: TrustOption = None,
    expect_sha256: ExpectSha256Option = None,
) -> None:
    """Serve the bundle's Predictor on Triton (HTTP and gRPC) until Ctrl-C or SIGTERM; needs omsf2[triton-serve]."""
    from omsf2.serve.triton import TritonServeSpec, serve_triton

    spec = TritonServeSpec(
        model=str(model),
        backend=backend,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        model_name=model_name,
        max_batch=max_batch,
        max_queue_delay_us=max_queue_delay_us,
        threads=threads,
        access_token=access_token,
        trust=trust_policy(trust, expect_sha256),
    )

    def ready(predictor: object) -> None:
        console.print(
            f"serving '{spec.model_name}' and '{spec.model_name}_logits' ({getattr(predictor, 'backend', '?')}, "
            f"bundle sha256 {getattr(getattr(predictor, 'bundle', None), 'digest', '?')}) on http://{host}:{http_port} "
            f"and grpc {host}:{grpc_port}; Ctrl-C stops",
            highlight=False,
            soft_wrap=True,
        )

    serve_triton(spec, on_ready=ready)
    console.print("stopped")
