"""``omsf2 trace BUNDLE``: the chain from the training data to a bundle, each link verified where it is on disk.

The command parses, calls :func:`omsf2.runtime.trace.trace_bundle` and prints: a header, one line
per link, then a summary, or one ``error:`` line per broken link and exit 1. A bundle whose own
files were edited is refused before the chain is read (one line, exit 1). Needs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from omsf2.cli.errors import console, err
from omsf2.cli.predict import trust_policy


def trace_cmd(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder (omsf2 bundle's output).")],
    trust: Annotated[
        list[Path] | None,
        typer.Option("--trust", help="Trace only a bundle signed by this Ed25519 public key (repeat for several)."),
    ] = None,
    expect_sha256: Annotated[
        str | None, typer.Option("--expect-sha256", help="Trace only the bundle whose manifest has this sha256.")
    ] = None,
) -> None:
    """Print the chain data -> checkpoint -> ONNX -> calibration -> INT8 -> gate -> engine -> bundle, verified."""
    from omsf2.runtime.trace import trace_bundle

    report = trace_bundle(bundle, trust_policy(trust, expect_sha256))
    for line in report.lines:
        console.print(escape(line), highlight=False, soft_wrap=True)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
    if report.ok:
        console.print(f"chain holds: no recorded hash differs ({counts})", highlight=False, soft_wrap=True)
        return
    for line in report.errors:
        err.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)
