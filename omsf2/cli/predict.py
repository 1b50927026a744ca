"""``omsf2 predict``: stage radiographs with a bundle, an export folder or a checkpoint.

Parses, opens one :class:`omsf2.runtime.Predictor`, streams files through it and prints. A file
that cannot be read, or a DICOM the clinical gating declines (:mod:`omsf2.runtime.gating`: not a
CR/DX chest PA/AP radiograph the bundle accepts), is reported in the results with its reason while
the rest are processed; the exit code is 1 if any file failed. A folder is scanned recursively for
image files by suffix and for DICOM files by content (``IM0001`` without a suffix). A tampered
bundle is a one-line error before any file is read. Only ``--model CKPT`` needs torch (the
checkpoint is exported to ONNX in a temporary folder first).
"""

from __future__ import annotations

import csv
import enum
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from omsf2.cli.errors import console, err, fail
from omsf2.data.io import IMAGE_SUFFIXES, find_images

PROGRESS_AFTER = 8  # files; fewer finish before a bar would be useful

#: ``--trust`` and ``--expect-sha256``, shared by predict and the serve commands.
TrustOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--trust",
        help="Run only bundles signed by this Ed25519 public key (omsf2 keygen's .pub; repeat for several).",
    ),
]
ExpectSha256Option = Annotated[
    str | None,
    typer.Option(
        "--expect-sha256", help="Run only the bundle whose manifest has this sha256 (omsf2 bundle prints it)."
    ),
]


def trust_policy(trust: list[Path] | None, expect_sha256: str | None) -> Any:
    """The :class:`~omsf2.runtime.trust.TrustPolicy` of ``--trust`` / ``--expect-sha256`` (keys read now)."""
    from omsf2.runtime.trust import TrustPolicy

    return TrustPolicy.from_options([str(p) for p in trust or ()], expect_sha256)


class Backend(str, enum.Enum):
    """What ``--backend`` selects: ``auto`` and every row of :data:`omsf2.runtime.rules.BACKEND_RULES`.

    A test holds it to the table (:data:`omsf2.runtime.sessions.BACKEND_NAMES`), in the table's order.
    """

    AUTO = "auto"
    ORT = "ort"
    ORT_INT8 = "ort-int8"
    OPENVINO = "openvino"
    OPENVINO_INT8 = "openvino-int8"
    OPENVINO_BF16 = "openvino-bf16"
    TENSORRT = "tensorrt"
    ORT_CUDA = "ort-cuda"
    ORT_TRT = "ort-trt"
    TRITON = "triton"


def collect_inputs(inputs: list[str]) -> list[str]:
    """Files as given, folders expanded recursively (:func:`omsf2.data.io.find_images`), ``-``: paths on stdin."""
    out: list[str] = []
    for item in inputs:
        if item == "-":
            out += [line.strip() for line in sys.stdin if line.strip()]
        elif Path(item).is_dir():
            out += [str(p) for p in find_images(item)]
        else:
            out.append(item)  # missing or unreadable files are reported per file
    return out


def _check_output(path: Path | None, what: str, folder: bool = False) -> None:
    if path is None or str(path) == "-":
        return
    if folder:
        if path.exists() and not path.is_dir():
            raise fail(f"{what} '{path}' exists and is not a folder")
        parent = path if path.exists() else path.parent
    else:
        if path.is_dir():
            raise fail(f"{what} '{path}' is a folder; give a file path")
        parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise fail(f"{what} '{path}': '{parent}' is not writable")


def _not_a_checkpoint(model: Path) -> str | None:
    """Why ``model`` cannot be a checkpoint (an image, or not the zip archive torch saves), or None."""
    try:
        with open(model, "rb") as f:
            head = f.read(132)
    except OSError as e:
        return f"--model '{model}' cannot be read: {e.strerror or e}"
    if model.suffix.lower() in IMAGE_SUFFIXES or head.startswith((b"\x89PNG", b"\xff\xd8")) or head[128:] == b"DICM":
        return (
            f"--model '{model}' is an image, not a model: pass a bundle folder, an export folder or a checkpoint (.pt)"
        )
    if not head.startswith(b"PK\x03\x04"):
        return f"--model '{model}' is not a checkpoint (torch saves a zip archive), a bundle folder or an export folder"
    return None


def _open_predictor(model: Path, backend: str, threads: int, tmp: Path, trust: Any, options: Any = None) -> Any:
    from omsf2.runtime.predictor import Predictor

    if model.is_dir():
        return Predictor.from_bundle(model, backend=backend, threads=threads, trust=trust, options=options)
    if not model.is_file():
        raise fail(f"--model '{model}' does not exist (a bundle folder, an export folder or a checkpoint)")
    why = _not_a_checkpoint(model)
    if why is not None:
        raise fail(why)
    if trust.configured:
        raise fail(f"--model '{model}' is a checkpoint; --trust and --expect-sha256 need a signed bundle folder")
    if importlib.util.find_spec("torch") is None:
        raise fail(
            f"--model '{model}' is a checkpoint, which needs torch (pip install 'omsf2[train]'); "
            "without torch, predict from a bundle (omsf2 export CKPT --out EXPORT; omsf2 bundle EXPORT --out B)"
        )
    from omsf2.export.targets import ExportSpec, run_export

    err.print(f"exporting {model.name} to ONNX first (a bundle skips this step)")
    run_export(ExportSpec(str(model), str(tmp / "export")))
    return Predictor.from_bundle(tmp / "export", backend=backend, threads=threads)


def _overlay_name(folder: Path, source: str, used: set[str]) -> Path:
    stem = Path(source).stem or "image"
    name, k = f"{stem}.overlay.png", 2
    while name in used:
        name, k = f"{stem}_{k}.overlay.png", k + 1
    used.add(name)
    return folder / name


def _rows(results: list[Any], overlays: dict[str, str]) -> Iterator[dict[str, Any]]:
    for r in results:
        p = r.prediction
        row: dict[str, Any] = {"file": r.source, "label": None, "probabilities": None, "error": r.error}
        if p is not None:
            row.update(label=p.label, probabilities=p.probabilities, timing=p.timing)
            if r.source in overlays:
                row["overlay"] = overlays[r.source]
        yield row


def _write_csv(path: Path, rows: list[dict[str, Any]], classes: tuple[str, ...]) -> None:
    from omsf2.fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", *(f"p_{c}" for c in classes), "error"])
        for row in rows:
            probs = row["probabilities"] or {}
            w.writerow([row["file"], row["label"] or "", *(probs.get(c, "") for c in classes), row["error"] or ""])


def _print_table(results: list[Any], out: Console) -> None:
    table = Table("file", "label", "p", "note")
    table.columns[0].overflow = "fold"
    for r in results:
        if r.prediction is not None:
            p = r.prediction
            table.add_row(escape(r.source), p.label, f"{p.probabilities[p.label]:.3f}", "")
        else:
            table.add_row(escape(r.source), "[red]failed[/]", "", escape(r.error or ""))
    out.print(table)


def predict_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (recursive) or '-' for paths on stdin.")],
    model: Annotated[Path, typer.Option(help="A bundle, an export folder or a checkpoint (needs torch).")],
    backend: Annotated[Backend, typer.Option(help="Inference backend (auto: TensorRT on a GPU, else ort).")] = (
        Backend.AUTO
    ),
    overlay: Annotated[Path | None, typer.Option(help="Folder for heat-map-over-image PNGs.")] = None,
    json_path: Annotated[str | None, typer.Option("--json", help="Write results as JSON to PATH, or '-'.")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write results as CSV to PATH.")] = None,
    batch: Annotated[int | None, typer.Option(help="Images per inference call (default: the bundle's).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for onnxruntime/OpenVINO (0: default).")] = 0,
    any_modality: Annotated[
        bool, typer.Option("--any-modality", help="Accept DICOMs of any Modality (research; the other rules apply).")
    ] = False,
    allow_missing: Annotated[
        list[str] | None,
        typer.Option("--allow-missing", help="Accept DICOMs without this attribute: body-part or view (repeat)."),
    ] = None,
    triton_url: Annotated[
        str | None, typer.Option(help="With --backend triton: the omsf2 serve triton server, HOST:PORT (gRPC).")
    ] = None,
    triton_model: Annotated[str, typer.Option(help="With --backend triton: its --model-name.")] = "omsf2",
    trust: TrustOption = None,
    expect_sha256: ExpectSha256Option = None,
) -> None:
    """Predict the stage of radiographs: a table, optional JSON/CSV and heat-map overlays; exit 1 if any failed."""
    if batch is not None and batch < 1:
        raise fail(f"--batch must be at least 1, got {batch}")
    if threads < 0:
        raise fail(f"--threads must be 0 or more, got {threads}")
    _check_output(overlay, "--overlay", folder=True)
    if overlay is not None and importlib.util.find_spec("matplotlib") is None:
        raise fail("--overlay needs matplotlib for its colormap (pip install matplotlib)")
    _check_output(None if json_path is None else Path(json_path), "--json")
    _check_output(csv_path, "--csv")
    if (backend == Backend.TRITON) != (triton_url is not None):
        raise fail("--backend triton and --triton-url HOST:PORT go together")
    from omsf2.runtime.sessions import SessionOptions

    options = SessionOptions(threads=threads, triton_url=triton_url, triton_model=triton_model)
    policy = trust_policy(trust, expect_sha256)
    files = collect_inputs(inputs)
    if not files:
        raise fail(
            "no input images (give files, folders with PNG/JPEG/TIFF/BMP/DICOM files, or '-' for paths on stdin)"
        )
    out = err if json_path == "-" else console
    with tempfile.TemporaryDirectory(prefix="omsf2-predict-") as tmp:
        predictor = _open_predictor(model, backend.value, threads, Path(tmp), policy, options)
        if batch is not None:
            predictor.max_batch = min(batch, predictor.max_batch)
        gate = predictor.gate_policy(any_modality=any_modality, allow_missing=allow_missing or ())
        results = _run(predictor, files, gate, out)
    overlays = _write_overlays(results, overlay) if overlay is not None else {}
    _print_table(results, out)
    rows = list(_rows(results, overlays))
    if json_path is not None:
        _write_json(json_path, rows, predictor)
    if csv_path is not None:
        _write_csv(csv_path, rows, predictor.classes)
    failed = sum(r.error is not None for r in results)
    where = f"; overlays in {overlay}" if overlays else ""
    out.print(f"{len(results) - failed} of {len(results)} predicted with {predictor.backend}{where}")
    if failed:
        raise fail(f"{failed} file(s) could not be predicted (see the table)")


def _run(predictor: Any, files: list[str], gate: Any, out: Console) -> list[Any]:
    if len(files) < PROGRESS_AFTER:
        return list(predictor.predict_files(files, policy=gate))
    from rich.progress import Progress

    with Progress(console=err, transient=True) as prog:
        task = prog.add_task("predicting", total=len(files))
        return list(predictor.predict_files(files, policy=gate, on_result=lambda _: prog.advance(task)))


def _write_overlays(results: list[Any], folder: Path) -> dict[str, str]:
    from omsf2.data.io import read_image
    from omsf2.runtime.overlay import write_overlay

    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    written = {}
    for r in results:
        if r.prediction is not None:
            path = _overlay_name(folder, r.source, used)
            write_overlay(path, read_image(r.source), r.prediction.heatmap)
            written[r.source] = str(path)
    return written


def _write_json(dest: str, rows: list[dict[str, Any]], predictor: Any) -> None:
    doc = {
        "model": str(predictor.bundle.root),
        "algorithm": {"name": predictor.bundle.name, "version": predictor.bundle.version},
        "bundle_sha256": predictor.bundle.digest,
        "backend": predictor.backend,
        "classes": list(predictor.classes),
        "results": rows,
    }
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    if dest == "-":
        sys.stdout.write(text)
        return
    from omsf2.fileio import atomic_path

    with atomic_path(dest) as tmp:
        tmp.write_text(text)
