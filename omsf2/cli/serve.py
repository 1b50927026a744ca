"""``omsf2 serve``: long-running servers on top of the runtime, one command each.

:func:`make_serve_app` builds the ``serve`` sub-app; each server is one ``*_cmd`` function here
registered in :data:`COMMANDS`, wrapped by the root app's error handler (library errors become one
line and exit 1). Adding a server is one function and one row.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from omsf2.cli.predict import Backend, ExpectSha256Option, TrustOption, trust_policy
from omsf2.cli.serve_status import print_status
from omsf2.cli.serve_triton import serve_triton_cmd
from omsf2.serve.dicom_config import DEFAULT_MAX_PDU, DEFAULT_MAX_PIXELS
from omsf2.serve.int8_monitor import DEFAULT_WINDOW

# The options of ``omsf2 serve dicom``, one alias each, so the command's signature stays one line per option.
_ModelOpt = Annotated[Path | None, typer.Option(help="The bundle to run (an export folder needs --allow-unsigned).")]
_ForwardOpt = Annotated[
    str | None,
    typer.Option(help="Where results go by C-STORE, AE@HOST:PORT (the PACS), e.g. ORTHANC@127.0.0.1:4242."),
]
_ForwardStowOpt = Annotated[
    str | None,
    typer.Option(
        help="Also (or instead) send results by STOW-RS to this DICOMweb URL, e.g. http://pacs:8042/dicom-web."
    ),
]
_ResultsOpt = Annotated[
    str, typer.Option(help="Objects per analysed image: sr and any of pm (Parametric Map), sc (Secondary Capture).")
]
_AllowMissingOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-missing", help="Analyse images without this attribute: body-part or view (repeat)."),
]
_ReanalyseOpt = Annotated[
    bool, typer.Option("--reanalyse", help="At start, run the spool's kept images again under this bundle.")
]
_KeepSourcesOpt = Annotated[
    bool, typer.Option("--keep-sources/--no-keep-sources", help="Keep analysed images for --reanalyse.")
]
_TritonUrlOpt = Annotated[
    str | None, typer.Option(help="With --backend triton: the omsf2 serve triton server, HOST:PORT (gRPC).")
]
_TritonModelOpt = Annotated[str, typer.Option(help="With --backend triton: its --model-name.")]
_DecodeWorkersOpt = Annotated[int, typer.Option(help="Threads that gate, read and preprocess images.")]
_ResultWorkersOpt = Annotated[int, typer.Option(help="Processes that build the SR/PM/SC (0: a thread in the node).")]
_AeTitleOpt = Annotated[str, typer.Option(help="The node's AE title.")]
_HostOpt = Annotated[str, typer.Option(help="Address to listen on; one other than loopback needs --allow-ae.")]
_PortOpt = Annotated[int, typer.Option(help="Plain DICOM port (0: a free one, logged).")]
_AllowAeOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-ae", help="Calling AE title to accept (repeat; default: any, on loopback only)."),
]
_SpoolOpt = Annotated[Path, typer.Option(help="Spool folder: received images and undelivered results.")]
_BackendOpt = Annotated[Backend, typer.Option(help="Runtime backend.")]
_ThreadsOpt = Annotated[int, typer.Option(help="CPU threads for the backend (0: its default).")]
_RetriesOpt = Annotated[int, typer.Option(help="Delivery tries before a result is reported as failing.")]
_RetryDelayOpt = Annotated[float, typer.Option(help="Seconds before the first retry (doubles each time).")]
_MaxRetryDelayOpt = Annotated[float, typer.Option(help="Longest wait between two retries, in seconds.")]
_TlsPortOpt = Annotated[int | None, typer.Option(help="Also listen with TLS on this port (0: a free one).")]
_TlsCertOpt = Annotated[Path | None, typer.Option(help="The node's TLS certificate (PEM).")]
_TlsKeyOpt = Annotated[Path | None, typer.Option(help="The node's TLS private key (PEM).")]
_TlsCaOpt = Annotated[
    Path | None,
    typer.Option(help="CA (PEM) that callers' certificates must chain to (mutual TLS), and the PACS's."),
]
_PlainOpt = Annotated[bool, typer.Option("--plain/--no-plain", help="Listen without TLS on --port too.")]
_ForwardTlsOpt = Annotated[
    bool, typer.Option("--forward-tls", help="Forward over TLS (the PACS verified against --tls-ca).")
]
_MaxPduOpt = Annotated[int, typer.Option(help="Largest PDU accepted, in bytes.")]
_MaxPixelsOpt = Annotated[int, typer.Option(help="Most rows x columns x frames per instance.")]
_MaxSpoolOpt = Annotated[str, typer.Option(help="Most bytes the spool may hold, e.g. 20G, 500M.")]
_AllowUnsignedOpt = Annotated[
    bool, typer.Option("--allow-unsigned", help="Accept an export folder (not a bundle) as --model; logged.")
]
_AuditOpt = Annotated[Path | None, typer.Option(help="Append the audit trail (JSON lines, IHE ATNA codes) here.")]
_AuditPhiOpt = Annotated[bool, typer.Option("--audit-phi", help="Let patient names and IDs into the audit trail.")]
_AuditSyslogOpt = Annotated[
    str | None, typer.Option(help="Also send audit events to udp://HOST:PORT or tcp://HOST:PORT (RFC 5424).")
]
_LogOpt = Annotated[Path | None, typer.Option(help="Append the JSON-line event log here (default: stderr).")]
_MonitorOpt = Annotated[
    float | None,
    typer.Option(help="Check this fraction of analysed images against FP32, off the result path (INT8 backends)."),
]
_MonitorWindowOpt = Annotated[
    int | None, typer.Option(help=f"With --monitor: samples per group the figures cover (default {DEFAULT_WINDOW}).")
]
_MonitorBoundOpt = Annotated[
    float | None, typer.Option(help="With --monitor: agreement bound instead of the bundle's gate bounds.")
]
_StatusOpt = Annotated[
    Path | None,
    typer.Option(help="Print what the spool SPOOL holds (pending, failed, rejected) and the monitor's figures."),
]


def dicom_cmd(
    model: _ModelOpt = None,
    forward: _ForwardOpt = None,
    forward_stow: _ForwardStowOpt = None,
    results: _ResultsOpt = "sr,pm",
    allow_missing: _AllowMissingOpt = None,
    reanalyse: _ReanalyseOpt = False,
    keep_sources: _KeepSourcesOpt = True,
    triton_url: _TritonUrlOpt = None,
    triton_model: _TritonModelOpt = "omsf2",
    decode_workers: _DecodeWorkersOpt = 2,
    result_workers: _ResultWorkersOpt = 1,
    ae_title: _AeTitleOpt = "OMSF2",
    host: _HostOpt = "127.0.0.1",
    port: _PortOpt = 11112,
    allow_ae: _AllowAeOpt = None,
    spool: _SpoolOpt = Path("dicom-spool"),
    backend: _BackendOpt = Backend.AUTO,
    threads: _ThreadsOpt = 0,
    retries: _RetriesOpt = 8,
    retry_delay: _RetryDelayOpt = 2.0,
    max_retry_delay: _MaxRetryDelayOpt = 300.0,
    tls_port: _TlsPortOpt = None,
    tls_cert: _TlsCertOpt = None,
    tls_key: _TlsKeyOpt = None,
    tls_ca: _TlsCaOpt = None,
    plain: _PlainOpt = True,
    forward_tls: _ForwardTlsOpt = False,
    max_pdu: _MaxPduOpt = DEFAULT_MAX_PDU,
    max_pixels: _MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    max_spool: _MaxSpoolOpt = "20G",
    trust: TrustOption = None,
    expect_sha256: ExpectSha256Option = None,
    allow_unsigned: _AllowUnsignedOpt = False,
    audit: _AuditOpt = None,
    audit_phi: _AuditPhiOpt = False,
    audit_syslog: _AuditSyslogOpt = None,
    log: _LogOpt = None,
    monitor: _MonitorOpt = None,
    monitor_window: _MonitorWindowOpt = None,
    monitor_bound: _MonitorBoundOpt = None,
    status: _StatusOpt = None,
) -> None:
    """Run the DICOM AI node: receive radiographs (C-STORE, plain or TLS), send back an SR and heat-map PM/SC."""
    if status is not None:
        print_status(status)
        return
    options = dict(locals())  # every option by name (nothing else is defined yet)
    _run_node(_node_config(options), log)


def _node_config(o: dict[str, Any]) -> Any:
    """The :class:`~omsf2.serve.dicom_config.NodeConfig` of ``omsf2 serve dicom``'s options (checked there)."""
    from omsf2.serve.dicom_config import Destination, NodeConfig, TlsConfig, parse_size
    from omsf2.serve.int8_monitor import MonitorSpec

    if o["monitor"] is None and (o["monitor_bound"] is not None or o["monitor_window"] is not None):
        raise ValueError("--monitor-bound and --monitor-window go with --monitor FRACTION")
    model, forward = o["model"], o["forward"]
    if model is None or (forward is None and o["forward_stow"] is None):
        raise ValueError(
            "--model and --forward (or --forward-stow) are required (or --status SPOOL to inspect a spool)"
        )
    if not model.is_dir():
        raise ValueError(f"--model '{model}' is not a bundle or export folder")
    same = (  # options that NodeConfig takes as they are
        "forward_stow", "reanalyse", "keep_sources", "triton_url", "triton_model", "decode_workers",
        "result_workers", "ae_title", "host", "port", "threads", "retries", "retry_delay", "max_retry_delay",
        "tls_port", "plain", "forward_tls", "max_pdu", "max_pixels", "allow_unsigned", "audit_phi", "audit_syslog",
    )  # fmt: skip
    paths = {k: o[f"tls_{k}"] for k in ("cert", "key", "ca")}
    monitor = None
    if o["monitor"] is not None:  # MonitorSpec's own defaults for what was not given
        given = {k: o[f"monitor_{k}"] for k in ("window", "bound") if o[f"monitor_{k}"] is not None}
        monitor = MonitorSpec(o["monitor"], **given)
    return NodeConfig(
        model=str(model),
        forward=None if forward is None else Destination.parse(forward),
        results=tuple(k.strip() for k in o["results"].split(",") if k.strip()),
        allow_missing=tuple(o["allow_missing"] or ()),
        allow_ae=tuple(o["allow_ae"] or ()),
        spool=str(o["spool"]),
        backend=o["backend"].value,
        tls=TlsConfig(**{k: None if v is None else str(v) for k, v in paths.items()}),
        max_spool_bytes=parse_size(o["max_spool"], "--max-spool"),
        trust=trust_policy(o["trust"], o["expect_sha256"]),
        audit=None if o["audit"] is None else str(o["audit"]),
        monitor=monitor,
        **{k: o[k] for k in same},
    )


def _run_node(cfg: Any, log: Path | None) -> None:
    """Run the node with its JSON-line events on stderr or in ``log``."""
    from omsf2.serve.dicom_node import JsonLineFormatter, serve_dicom

    handler: logging.Handler = logging.StreamHandler(sys.stderr) if log is None else logging.FileHandler(log)
    handler.setFormatter(JsonLineFormatter())
    events = logging.getLogger("omsf2.serve.dicom.events")
    events.addHandler(handler)
    events.setLevel(logging.INFO)
    events.propagate = False
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # the events say it; -v shows pynetdicom's own
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    try:
        serve_dicom(cfg)
    finally:
        events.removeHandler(handler)
        handler.close()


#: name -> command function of the ``serve`` sub-app.
COMMANDS: dict[str, Callable[..., Any]] = {"dicom": dicom_cmd, "triton": serve_triton_cmd}


def make_serve_app(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> typer.Typer:
    """The ``serve`` sub-app, each command wrapped by ``wrap`` (the root app's error handler)."""
    serve_app = typer.Typer(
        help="Serve a bundle: the DICOM node, Triton Inference Server (PyTriton).", no_args_is_help=True
    )
    for name, fn in COMMANDS.items():
        serve_app.command(name)(wrap(fn))
    return serve_app
