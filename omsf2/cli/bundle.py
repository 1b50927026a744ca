"""``omsf2 bundle``: turn an export folder into a hash-verified bundle folder (no torch needed).

``--name`` and ``--version`` are required: they are the algorithm's identity that every result the
DICOM node writes carries (with the manifest's sha256), never a file name. ``--accept-*`` declare
what the model may be run on (the clinical input gating, :mod:`omsf2.runtime.gating`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omsf2.cli.errors import console, fail


def bundle_cmd(
    export_dir: Annotated[Path, typer.Argument(help="An 'omsf2 export' output folder (with report.json).")],
    out: Annotated[Path, typer.Option(help="The bundle folder to create (must not exist, or be empty).")],
    name: Annotated[
        str | None, typer.Option(help="The algorithm's name, as every result names it (required; <= 64 characters).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="The algorithm's version (required), e.g. 2.1.0.")] = None,
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
    sign: Annotated[
        Path | None,
        typer.Option(help="Sign the manifest with this Ed25519 private key (omsf2 keygen's .key): manifest.sig."),
    ] = None,
    accept_modality: Annotated[
        list[str] | None, typer.Option(help="A DICOM Modality the model accepts (repeat; default CR, DR, DX).")
    ] = None,
    accept_body_part: Annotated[
        list[str] | None, typer.Option(help="A BodyPartExamined the model accepts (repeat; default CHEST).")
    ] = None,
    accept_view: Annotated[
        list[str] | None,
        typer.Option(help="A ViewPosition the model accepts (repeat; default PA and AP; add LL/RL for laterals)."),
    ] = None,
) -> None:
    """Bundle an export: model files, manifest.json (metadata, sha256 of every file), a README, a signature."""
    from omsf2.runtime.bundle import BundleSpec, make_bundle
    from omsf2.runtime.gating import Accepts

    if not name or not version:
        raise fail("--name and --version are required: every result names the algorithm by them")
    defaults = Accepts()
    accepts = Accepts(
        modalities=tuple(accept_modality or defaults.modalities),
        body_parts=tuple(accept_body_part or defaults.body_parts),
        views=tuple(accept_view or defaults.views),
    )
    spec = BundleSpec(
        export_dir=str(export_dir),
        out=str(out),
        name=name,
        version=version,
        intended_use=intended_use or "",
        data_source=data_source,
        references=tuple(reference or ()),
        max_batch=max_batch,
        plugin_library=None if plugin_lib is None else str(plugin_lib),
        sign=None if sign is None else str(sign),
        accepts=accepts,
    )
    repo_spec = None
    if triton is not None:
        from omsf2.export.triton_repo import TritonRepoSpec

        repo_spec = TritonRepoSpec(out=str(triton), max_batch=max_batch)  # checks the path before any work
    b = make_bundle(spec)
    files = sorted(b.metadata["files"])
    console.print(f"wrote bundle {b.root} ({len(files)} files: {', '.join(files)})")
    console.print(f"algorithm {b.name} {b.version}; accepts {', '.join(b.accepts.modalities)} images of "
                  f"{', '.join(b.accepts.body_parts)}, view {', '.join(b.accepts.views)}")  # fmt: skip
    console.print(f"manifest sha256 {b.digest}" + (f", signed by key {b.signer[:16]}..." if b.signer else ""))
    if repo_spec is not None:
        from omsf2.export.triton_repo import write_triton_repo

        repo = write_triton_repo(b, repo_spec)
        console.print(f"wrote Triton model repository {repo.root} (models: {', '.join(repo.models)})")
