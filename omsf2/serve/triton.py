"""Serve a bundle's runtime Predictor with Triton Inference Server through PyTriton.

``serve_triton(spec)`` opens the bundle with :meth:`omsf2.runtime.Predictor.from_bundle` and binds
one model to a real ``tritonserver`` that PyTriton starts (its Python backend forwards each batch
to this process). The served model has the interface of the ``omsf2`` ensemble that
:mod:`omsf2.export.triton_repo` writes for NVIDIA's Triton container, so one client works with
both: ``IMAGE_BYTES`` (BYTES, one encoded PNG/JPEG/DICOM per row) in; ``label`` (BYTES),
``probabilities`` (FP32, one per class), ``heatmap`` (FP32, model space) and ``original_hw``
(INT32, the image's height and width, to map the heat map back) out. Triton's dynamic batcher
groups concurrent requests; each batch is decoded and preprocessed with ``omsf2.data``
(:mod:`omsf2.serve.triton_python`) and run as one call to the predictor's session.

Beside it, ``<model_name>_logits`` serves the same Predictor to other omsf2 processes (the runtime's
``triton`` backend, :mod:`omsf2.runtime.triton_client`: DICOM nodes and ``omsf2 predict`` that share
this server): ``image`` (FP32, a preprocessed ``(C, H, W)`` per row) in; ``logits`` (FP32, checked
by :meth:`~omsf2.runtime.predictor.Predictor.run_logits`: shapes and finiteness, not activated),
``heatmap`` (FP32, model space) and ``bundle_sha256`` (BYTES: this server's bundle digest, in every
response, so a client refuses a server that runs another bundle) out.

Everything binds to 127.0.0.1 unless told otherwise. The trade-offs: PyTriton reports errors per
execution, so an unreadable file fails the whole dynamic batch it was grouped into (the ensemble
of the model repository fails only its own request); and PyTriton pins numpy < 2, so it lives in
the ``omsf2[triton-serve]`` extra. Its Python-backend stub links the libpython of the interpreter
that runs it: this module puts ``sysconfig``'s ``LIBDIR`` on ``LD_LIBRARY_PATH`` before Triton starts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sysconfig
from collections.abc import Callable
from typing import Any

import numpy as np

from omsf2.runtime.predictor import Predictor
from omsf2.runtime.trust import TrustPolicy
from omsf2.serve.triton_python import BYTES_INPUT, ORIGINAL_HW, labels_of, preprocess_bytes

log = logging.getLogger(__name__)

MODEL_NAME = "omsf2"


@dataclasses.dataclass(frozen=True)
class TritonServeSpec:
    """What :func:`serve_triton` serves, and where.

    Attributes:
        model: a bundle folder (or an ``omsf2 export`` folder).
        backend: the Predictor backend (``auto``, ``ort``, ``ort-int8``, ``openvino``, ``tensorrt`` ...).
        host: address the HTTP, gRPC and metrics endpoints bind to.
        http_port: HTTP/REST port.
        grpc_port: gRPC port.
        metrics_port: Prometheus metrics port.
        model_name: the Triton model name.
        max_batch: the dynamic batcher's largest batch [default: the bundle's].
        max_queue_delay_us: how long the batcher waits to fill a batch.
        threads: CPU threads of the backend session (0: its default).
        access_token: the token Triton's protected endpoints (statistics, model repository, shared
            memory, trace, logging) expect in the ``triton-access-token`` header [default: a random one].
        trust: signing keys and/or a pinned manifest digest the bundle must satisfy
            (:class:`~omsf2.runtime.trust.TrustPolicy`); None: none required.
    """

    model: str
    backend: str = "auto"
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_name: str = MODEL_NAME
    max_batch: int | None = None
    max_queue_delay_us: int = 2000
    threads: int = 0
    access_token: str | None = dataclasses.field(default=None, repr=False)
    trust: TrustPolicy | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        ports = {"http_port": self.http_port, "grpc_port": self.grpc_port, "metrics_port": self.metrics_port}
        for name, port in ports.items():
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"{name} must be a port number 1-65535, got {port!r}")
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"the HTTP, gRPC and metrics ports must differ, got {sorted(ports.values())}")
        if self.max_batch is not None and (not isinstance(self.max_batch, int) or self.max_batch < 1):
            raise ValueError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        if not isinstance(self.max_queue_delay_us, int) or self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be a non-negative integer, got {self.max_queue_delay_us!r}")
        if not self.model_name or not self.model_name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"model_name must be letters, digits, '_' or '-', got {self.model_name!r}")


def make_infer_fn(predictor: Predictor) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    """PyTriton's callable: a list of requests (a dynamic batch) -> one output dict per request.

    All rows of all requests are decoded, preprocessed and run through
    :meth:`~omsf2.runtime.Predictor.run_batch` (the runtime's one inference call: chunking, output
    checks, activation) as one batch, then handed back request by request. Non-finite logits or
    heat maps raise there, so the batch fails as ``omsf2 predict`` refuses such outputs.
    """

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        blobs: list[bytes] = []
        sizes = []
        for req in requests:
            rows = np.asarray(req[BYTES_INPUT]).reshape(-1)
            sizes.append(len(rows))
            blobs += [bytes(b) for b in rows]
        x, hw = preprocess_bytes(blobs, predictor.spec)
        probabilities, heat = predictor.run_batch(x)
        probs = probabilities.astype(np.float32)
        heatmap = heat[:, None]  # (N, 1, h, w): the model's own layout, as the repository's ensemble returns it
        labels = labels_of(probs, predictor.classes)
        out, start = [], 0
        for n in sizes:
            sl = slice(start, start + n)
            out.append(
                {
                    "label": labels[sl].astype(np.bytes_),
                    "probabilities": probs[sl],
                    "heatmap": heatmap[sl],
                    ORIGINAL_HW: hw[sl],
                }
            )
            start += n
        return out

    return infer


def make_logits_fn(predictor: Predictor) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    """PyTriton's callable of the tensor model: preprocessed batches in, checked logits and heat maps out.

    Every request's rows are run as one :meth:`~omsf2.runtime.Predictor.run_logits` call (chunked,
    shape- and finiteness-checked; a model that emits NaN fails the batch here), and each response
    carries the bundle's digest.
    """
    digest = np.bytes_(predictor.bundle.digest.encode())

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        sizes = [len(req["image"]) for req in requests]
        x = np.concatenate([np.asarray(req["image"], dtype=np.float32) for req in requests])
        logits, heat = predictor.run_logits(x)
        out, start = [], 0
        for n in sizes:
            sl = slice(start, start + n)
            out.append(
                {
                    "logits": logits[sl].astype(np.float32),
                    "heatmap": heat[sl],
                    # the dtype is the digest's own (S64): np.full(..., dtype=np.bytes_) would keep one character
                    "bundle_sha256": np.full((n, 1), digest, dtype=digest.dtype),
                }
            )
            start += n
        return out

    return infer


def _with_libpython(env_path: str | None) -> str:
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    parts = [p for p in (env_path or "").split(":") if p]
    return ":".join([libdir, *[p for p in parts if p != libdir]]) if libdir else ":".join(parts)


def bind_model(triton: Any, predictor: Predictor, spec: TritonServeSpec) -> None:
    """Bind the predictor to a ``pytriton.triton.Triton`` as ``spec.model_name`` (see the module docstring)."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    k = len(predictor.classes)
    max_batch = spec.max_batch or predictor.max_batch
    preferred = sorted({b for b in (4, 8, max_batch) if b <= max_batch})
    triton.bind(
        model_name=spec.model_name,
        infer_func=make_infer_fn(predictor),
        inputs=[Tensor(name=BYTES_INPUT, dtype=np.bytes_, shape=(1,))],
        outputs=[
            Tensor(name="label", dtype=np.bytes_, shape=(1,)),
            Tensor(name="probabilities", dtype=np.float32, shape=(k,)),
            Tensor(name="heatmap", dtype=np.float32, shape=(-1, -1, -1)),
            Tensor(name=ORIGINAL_HW, dtype=np.int32, shape=(2,)),
        ],
        config=ModelConfig(
            max_batch_size=max_batch,
            batcher=DynamicBatcher(
                max_queue_delay_microseconds=spec.max_queue_delay_us, preferred_batch_size=preferred
            ),
        ),
        strict=True,
    )
    c, (h, w) = predictor.spec.channels, predictor.spec.size
    triton.bind(
        model_name=f"{spec.model_name}_logits",
        infer_func=make_logits_fn(predictor),
        inputs=[Tensor(name="image", dtype=np.float32, shape=(c, h, w))],
        outputs=[
            Tensor(name="logits", dtype=np.float32, shape=(k,)),
            Tensor(name="heatmap", dtype=np.float32, shape=(-1, -1)),
            Tensor(name="bundle_sha256", dtype=np.bytes_, shape=(1,)),
        ],
        config=ModelConfig(
            max_batch_size=max_batch,
            batcher=DynamicBatcher(
                max_queue_delay_microseconds=spec.max_queue_delay_us, preferred_batch_size=preferred
            ),
        ),
        strict=True,
    )


def serve_triton(spec: TritonServeSpec, on_ready: Callable[[Predictor], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop Triton and its Python-backend processes.

    Args:
        spec: what to serve and where.
        on_ready: called once the model is loaded and the endpoints answer.

    Raises:
        ValueError: a bundle that cannot be opened, or a port already in use.
        ModuleNotFoundError: PyTriton is not installed (``pip install 'omsf2[triton-serve]'``).
    """
    predictor = Predictor.from_bundle(spec.model, backend=spec.backend, threads=spec.threads, trust=spec.trust)
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    _check_ports_free(spec)
    os.environ["LD_LIBRARY_PATH"] = _with_libpython(os.environ.get("LD_LIBRARY_PATH"))
    config = TritonConfig(
        http_address=spec.host,
        http_port=spec.http_port,
        grpc_address=spec.host,
        grpc_port=spec.grpc_port,
        metrics_address=spec.host,
        metrics_port=spec.metrics_port,
        allow_sagemaker=False,
        allow_vertex_ai=False,
    )

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        security = TritonSecurityConfig(access_token=spec.access_token)
        with Triton(config=config, security_config=security) as triton:
            bind_model(triton, predictor, spec)
            triton.connect()
            log.info(
                "serving %s and %s_logits (%s) on %s http:%d grpc:%d",
                spec.model_name,
                spec.model_name,
                predictor.backend,
                spec.host,
                spec.http_port,
                spec.grpc_port,
            )
            if on_ready is not None:
                on_ready(predictor)
            triton.serve()  # returns on SIGINT (and SIGTERM, raised as one) after stopping the server
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_ports_free(spec: TritonServeSpec) -> None:
    import socket

    for name, port in (("http", spec.http_port), ("grpc", spec.grpc_port), ("metrics", spec.metrics_port)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((spec.host, port))
            except OSError as e:
                raise ValueError(f"cannot serve {name} on {spec.host}:{port}: {e.strerror or e}") from None
