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
from omsf2.cli.predict import Backend
from omsf2.cli.serve_triton import serve_triton_cmd


def dicom_cmd(
    model: Annotated[Path | None, typer.Option(help="The bundle (or export folder) to run.")] = None,
    forward: Annotated[
        str | None, typer.Option(help="Where results go, AE@HOST:PORT (the PACS), e.g. ORTHANC@127.0.0.1:4242.")
    ] = None,
    ae_title: Annotated[str, typer.Option(help="The node's AE title.")] = "OMSF2",
    host: Annotated[str, typer.Option(help="Address to listen on (another than 127.0.0.1 is your choice).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="DICOM port to listen on (0: a free one, logged).")] = 11112,
    allow_ae: Annotated[
        list[str] | None, typer.Option("--allow-ae", help="Calling AE title to accept (repeat) [default: any].")
    ] = None,
    spool: Annotated[Path, typer.Option(help="Spool folder: received images and undelivered results.")] = Path(
        "dicom-spool"
    ),
    backend: Annotated[Backend, typer.Option(help="Runtime backend.")] = Backend.AUTO,
    threads: Annotated[int, typer.Option(help="CPU threads for the backend (0: its default).")] = 0,
    retries: Annotated[int, typer.Option(help="Delivery attempts per result before it is marked failed.")] = 8,
    retry_delay: Annotated[
        float, typer.Option(help="Seconds before the first delivery retry (doubles each time, at most 300).")
    ] = 2.0,
    log: Annotated[Path | None, typer.Option(help="Append the JSON-line event log here [default: stderr].")] = None,
    status: Annotated[
        Path | None, typer.Option(help="Print what the spool SPOOL holds (pending, failed, rejected) and exit.")
    ] = None,
) -> None:
    """Run the DICOM AI node: receive radiographs (C-STORE), send back an SR and a heat-map SC."""
    if status is not None:
        _print_status(status)
        return
    from omsf2.serve.dicom_config import Destination, NodeConfig
    from omsf2.serve.dicom_node import JsonLineFormatter, serve_dicom

    if model is None or forward is None:
        raise ValueError("--model and --forward are required (or --status SPOOL to inspect a spool)")
    if not model.is_dir():
        raise ValueError(f"--model '{model}' is not a bundle or export folder")
    cfg = NodeConfig(
        model=str(model),
        forward=Destination.parse(forward),
        ae_title=ae_title,
        host=host,
        port=port,
        allow_ae=tuple(allow_ae or ()),
        spool=str(spool),
        backend=backend.value,
        threads=threads,
        retries=retries,
        retry_delay=retry_delay,
    )
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
    table.add_row("delivery failed (retry budget spent)", str(len(st.failed)))
    table.add_row("rejected (not predictable)", str(len(st.rejected)))
    table.add_row("delivered", str(st.delivered))
    console.print(table)
    for f in st.failed:
        console.print(
            f"failed {f['sop_instance_uid']}: {f['attempts']} attempts, last error: {escape(str(f['last_error']))}",
            highlight=False,
            soft_wrap=True,
        )
    for r in st.rejected:
        console.print(f"rejected {r['sop_instance_uid']}: {escape(str(r['reason']))}", highlight=False, soft_wrap=True)


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
