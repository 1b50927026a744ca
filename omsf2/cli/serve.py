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
from rich.markup import escape
from rich.table import Table

from omsf2.cli.errors import console
from omsf2.cli.predict import Backend, ExpectSha256Option, TrustOption, trust_policy
from omsf2.cli.serve_triton import serve_triton_cmd
from omsf2.serve.dicom_config import DEFAULT_MAX_PDU, DEFAULT_MAX_PIXELS


def dicom_cmd(
    model: Annotated[
        Path | None, typer.Option(help="The bundle to run (an export folder needs --allow-unsigned).")
    ] = None,
    forward: Annotated[
        str | None,
        typer.Option(help="Where results go by C-STORE, AE@HOST:PORT (the PACS), e.g. ORTHANC@127.0.0.1:4242."),
    ] = None,
    forward_stow: Annotated[
        str | None,
        typer.Option(
            help="Also (or instead) send results by STOW-RS to this DICOMweb URL, e.g. http://pacs:8042/dicom-web."
        ),
    ] = None,
    results: Annotated[
        str, typer.Option(help="Objects per analysed image: sr and any of pm (Parametric Map), sc (Secondary Capture).")
    ] = "sr,pm",
    allow_missing: Annotated[
        list[str] | None,
        typer.Option("--allow-missing", help="Analyse images without this attribute: body-part or view (repeat)."),
    ] = None,
    reanalyse: Annotated[
        bool, typer.Option("--reanalyse", help="At start, run the spool's kept images again under this bundle.")
    ] = False,
    keep_sources: Annotated[
        bool, typer.Option("--keep-sources/--no-keep-sources", help="Keep analysed images for --reanalyse.")
    ] = True,
    triton_url: Annotated[
        str | None, typer.Option(help="With --backend triton: the omsf2 serve triton server, HOST:PORT (gRPC).")
    ] = None,
    triton_model: Annotated[str, typer.Option(help="With --backend triton: its --model-name.")] = "omsf2",
    decode_workers: Annotated[int, typer.Option(help="Threads that gate, read and preprocess images.")] = 2,
    result_workers: Annotated[
        int, typer.Option(help="Processes that build the SR/PM/SC (0: a thread in the node).")
    ] = 1,
    ae_title: Annotated[str, typer.Option(help="The node's AE title.")] = "OMSF2",
    host: Annotated[
        str, typer.Option(help="Address to listen on; one other than loopback needs --allow-ae.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Plain DICOM port (0: a free one, logged).")] = 11112,
    allow_ae: Annotated[
        list[str] | None,
        typer.Option("--allow-ae", help="Calling AE title to accept (repeat; default: any, on loopback only)."),
    ] = None,
    spool: Annotated[Path, typer.Option(help="Spool folder: received images and undelivered results.")] = Path(
        "dicom-spool"
    ),
    backend: Annotated[Backend, typer.Option(help="Runtime backend.")] = Backend.AUTO,
    threads: Annotated[int, typer.Option(help="CPU threads for the backend (0: its default).")] = 0,
    retries: Annotated[int, typer.Option(help="Delivery tries before a result is reported as failing.")] = 8,
    retry_delay: Annotated[float, typer.Option(help="Seconds before the first retry (doubles each time).")] = 2.0,
    max_retry_delay: Annotated[float, typer.Option(help="Longest wait between two retries, in seconds.")] = 300.0,
    tls_port: Annotated[int | None, typer.Option(help="Also listen with TLS on this port (0: a free one).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="The node's TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The node's TLS private key (PEM).")] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(help="CA (PEM) that callers' certificates must chain to (mutual TLS), and the PACS's."),
    ] = None,
    plain: Annotated[bool, typer.Option("--plain/--no-plain", help="Listen without TLS on --port too.")] = True,
    forward_tls: Annotated[
        bool, typer.Option("--forward-tls", help="Forward over TLS (the PACS verified against --tls-ca).")
    ] = False,
    max_pdu: Annotated[int, typer.Option(help="Largest PDU accepted, in bytes.")] = DEFAULT_MAX_PDU,
    max_pixels: Annotated[int, typer.Option(help="Most rows x columns x frames per instance.")] = DEFAULT_MAX_PIXELS,
    max_spool: Annotated[str, typer.Option(help="Most bytes the spool may hold, e.g. 20G, 500M.")] = "20G",
    trust: TrustOption = None,
    expect_sha256: ExpectSha256Option = None,
    allow_unsigned: Annotated[
        bool, typer.Option("--allow-unsigned", help="Accept an export folder (not a bundle) as --model; logged.")
    ] = False,
    audit: Annotated[
        Path | None, typer.Option(help="Append the audit trail (JSON lines, IHE ATNA codes) here.")
    ] = None,
    audit_phi: Annotated[bool, typer.Option("--audit-phi", help="Let patient names and IDs into the audit trail.")] = (
        False
    ),
    audit_syslog: Annotated[
        str | None, typer.Option(help="Also send audit events to udp://HOST:PORT or tcp://HOST:PORT (RFC 5424).")
    ] = None,
    log: Annotated[Path | None, typer.Option(help="Append the JSON-line event log here (default: stderr).")] = None,
    status: Annotated[
        Path | None, typer.Option(help="Print what the spool SPOOL holds (pending, failed, rejected) and exit.")
    ] = None,
) -> None:
    """Run the DICOM AI node: receive radiographs (C-STORE, plain or TLS), send back an SR and heat-map PM/SC."""
    if status is not None:
        _print_status(status)
        return
    from omsf2.serve.dicom_config import Destination, NodeConfig, TlsConfig, parse_size

    if model is None or (forward is None and forward_stow is None):
        raise ValueError(
            "--model and --forward (or --forward-stow) are required (or --status SPOOL to inspect a spool)"
        )
    if not model.is_dir():
        raise ValueError(f"--model '{model}' is not a bundle or export folder")
    paths = {"cert": tls_cert, "key": tls_key, "ca": tls_ca}
    cfg = NodeConfig(
        model=str(model),
        forward=None if forward is None else Destination.parse(forward),
        forward_stow=forward_stow,
        results=tuple(k.strip() for k in results.split(",") if k.strip()),
        allow_missing=tuple(allow_missing or ()),
        reanalyse=reanalyse,
        keep_sources=keep_sources,
        triton_url=triton_url,
        triton_model=triton_model,
        decode_workers=decode_workers,
        result_workers=result_workers,
        ae_title=ae_title,
        host=host,
        port=port,
        allow_ae=tuple(allow_ae or ()),
        spool=str(spool),
        backend=backend.value,
        threads=threads,
        retries=retries,
        retry_delay=retry_delay,
        max_retry_delay=max_retry_delay,
        tls=TlsConfig(**{k: None if v is None else str(v) for k, v in paths.items()}),
        tls_port=tls_port,
        plain=plain,
        forward_tls=forward_tls,
        max_pdu=max_pdu,
        max_pixels=max_pixels,
        max_spool_bytes=parse_size(max_spool, "--max-spool"),
        trust=trust_policy(trust, expect_sha256),
        allow_unsigned=allow_unsigned,
        audit=None if audit is None else str(audit),
        audit_phi=audit_phi,
        audit_syslog=audit_syslog,
    )
    _run_node(cfg, log)


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


def _print_status(path: Path) -> None:
    from omsf2.serve.dicom_spool import spool_status

    st = spool_status(path)
    table = Table(title=f"spool {escape(st.root)}" + (" (in use by a running node)" if st.locked else ""))
    table.add_column("state")
    table.add_column("instances", justify="right")
    table.add_row("received, not yet predicted", str(st.incoming))
    table.add_row("predicted, waiting for delivery", str(st.pending))
    table.add_row("delivery failing (retry budget spent, still retried)", str(len(st.failed)))
    table.add_row("rejected (not readable)", str(len(st.rejected)))
    table.add_row("declined (not applicable under the bundle that saw them)", str(len(st.declined)))
    table.add_row("kept for --reanalyse", str(st.sources))
    table.add_row("delivered", str(st.delivered))
    table.add_row("bytes held (received, waiting, rejected)", str(st.bytes_used))
    console.print(table)
    for f in st.failed:
        console.print(
            f"failed {f['sop_instance_uid']}: {f['attempts']} attempts so far, "
            f"last error: {escape(str(f['last_error']))}",
            highlight=False,
            soft_wrap=True,
        )
    for r in st.rejected:
        console.print(f"rejected {r['sop_instance_uid']}: {escape(str(r['reason']))}", highlight=False, soft_wrap=True)
    for r in st.declined:
        console.print(f"declined {r['sop_instance_uid']}: {escape(str(r['reason']))}", highlight=False, soft_wrap=True)


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
