"""``omsf2 bundle``: turn an export folder into a hash-verified bundle folder (no torch needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omsf2.cli.errors import console


def bundle_cmd(
    export_dir: Annotated[Path, typer.Argument(help="An 'omsf2 export' output folder (with report.json).")],
    out: Annotated[Path, typer.Option(help="The bundle folder to create (must not exist, or be empty).")],
    name: Annotated[str | None, typer.Option(help="Model name [default: the checkpoint's file stem].")] = None,
    version: Annotated[str, typer.Option(help="Model version.")] = "0.1.0",
    intended_use: Annotated[str | None, typer.Option(help="What the model is for (and is not).")] = None,
    data_source: Annotated[str, typer.Option(help="Where the training data came from.")] = "",
    reference: Annotated[list[str] | None, typer.Option(help="A citation (repeat).")] = None,
    max_batch: Annotated[int, typer.Option(help="Most images per inference call.")] = 32,
    plugin_lib: Annotated[
        Path | None, typer.Option(help="libomsf2_plugins.so for engines built with --plugins.")
    ] = None,
    triton: Annotated[
        Path | None,
        typer.Option(help="Also write a Triton Inference Server model repository (ONNX, engine, ensemble) here."),
    ] = None,
) -> None:
    """Bundle an export: model files, manifest.json (metadata, sha256 of every file) and a README."""
    from omsf2.runtime.bundle import DEFAULT_INTENDED_USE, BundleSpec, make_bundle

    spec = BundleSpec(
        export_dir=str(export_dir),
        out=str(out),
        name=name,
        version=version,
        intended_use=intended_use or DEFAULT_INTENDED_USE,
        data_source=data_source,
        references=tuple(reference or ()),
        max_batch=max_batch,
        plugin_library=None if plugin_lib is None else str(plugin_lib),
    )
    repo_spec = None
    if triton is not None:
        from omsf2.export.triton_repo import TritonRepoSpec

        repo_spec = TritonRepoSpec(out=str(triton), max_batch=max_batch)  # checks the path before any work
    b = make_bundle(spec)
    files = sorted(b.metadata["files"])
    console.print(f"wrote bundle {b.root} ({len(files)} files: {', '.join(files)})")
    console.print(f"manifest sha256 {b.digest}")
    if repo_spec is not None:
        from omsf2.export.triton_repo import write_triton_repo

        repo = write_triton_repo(b, repo_spec)
        console.print(f"wrote Triton model repository {repo.root} (models: {', '.join(repo.models)})")
