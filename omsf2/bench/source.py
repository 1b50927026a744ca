"""What ``omsf2 bench SOURCE`` is given: a checkpoint (exported first) or a hash-verified export folder.

Everything here runs before any work: a missing or empty SOURCE, a folder without ``report.json``,
an artifact whose sha256 differs from the report, or an image size the export was not made for is
a one-line ``ValueError``. The torch backends need the checkpoint an export came from; when
``report.json``'s checkpoint is not found or has changed, they are skipped with that reason rather
than run on other weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from omsf2.config import PreprocessSpec
from omsf2.fileio import sha256_file

REPORT = "report.json"


@dataclasses.dataclass(frozen=True)
class Source:
    """A resolved SOURCE.

    Attributes:
        path: what the user gave.
        kind: ``checkpoint`` or ``export``.
        export_dir: the export folder (None for a checkpoint until it is exported).
        report: the export's report.json (None for a checkpoint).
        checkpoint: a checkpoint whose weights the artifacts hold (None: torch backends skip).
        checkpoint_note: why ``checkpoint`` is None.
        classes: class names.
        preprocess: the preprocessing spec (input size, channels).
    """

    path: Path
    kind: str
    export_dir: Path | None
    report: dict[str, Any] | None
    checkpoint: Path | None
    checkpoint_note: str | None
    classes: tuple[str, ...]
    preprocess: PreprocessSpec

    @property
    def img_size(self) -> int:
        """The (square) input size the source was made for."""
        return int(self.preprocess.size[0])

    def gate(self, artifact: str) -> dict[str, Any] | None:
        """The export's INT8 accuracy-gate entry for ``artifact`` (None if it has none)."""
        for key in ("int8", "int8_cpu"):
            entry = (self.report or {}).get(key)
            if isinstance(entry, dict) and entry.get("file") == artifact:
                return entry
        return None


def _read_report(folder: Path) -> dict[str, Any]:
    path = folder / REPORT
    if not path.is_file():
        raise ValueError(
            f"SOURCE '{folder}' has no {REPORT}: give a checkpoint (best.pt) or a folder written by omsf2 export"
        )
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"'{path}' is not valid JSON ({e})") from e
    if not isinstance(report, dict) or not isinstance(report.get("artifacts"), dict) or "preprocess" not in report:
        raise ValueError(f"'{path}' is not an omsf2 export report (no artifacts / preprocess)")
    return report


def verify_artifacts(folder: Path, report: dict[str, Any]) -> None:
    """Every artifact report.json lists is present with the sha256 it records.

    Raises:
        ValueError: a missing file or a hash mismatch (naming the file).
    """
    for name, entry in report["artifacts"].items():
        if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
            raise ValueError(f"'{folder / REPORT}': artifact {name!r} lacks file / sha256")
        path = folder / str(entry["file"])
        if not path.is_file():
            raise ValueError(f"export folder '{folder}': {entry['file']} is listed in {REPORT} but missing")
        if sha256_file(path) != entry["sha256"]:
            raise ValueError(
                f"export folder '{folder}': {entry['file']} does not match {REPORT} (sha256 differs); "
                "re-export or restore the file"
            )


def _find_checkpoint(folder: Path, report: dict[str, Any]) -> tuple[Path | None, str | None]:
    entry = report.get("checkpoint") or {}
    raw, digest = entry.get("path"), entry.get("sha256")
    if not raw:
        return None, f"{REPORT} names no checkpoint"
    p = Path(str(raw))
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, folder / p, folder.parent / p, folder / p.name]
    for cand in candidates:
        if cand.is_file():
            if digest and sha256_file(cand) != digest:
                return None, f"checkpoint '{cand}' has changed since the export (sha256 differs)"
            return cand, None
    return None, f"the export's checkpoint '{raw}' is not found here"


def open_source(path: str | Path) -> Source:
    """Resolve SOURCE: a checkpoint file or an export folder whose artifacts match its report.

    Raises:
        ValueError: missing or empty SOURCE, no report.json, hash mismatch, unreadable checkpoint.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"SOURCE '{p}' does not exist; give a checkpoint (best.pt) or an export folder")
    if p.is_dir():
        if not any(p.iterdir()):
            raise ValueError(f"SOURCE '{p}' is an empty folder; give a checkpoint (best.pt) or an export folder")
        report = _read_report(p)
        verify_artifacts(p, report)
        ckpt, note = _find_checkpoint(p, report)
        pre = PreprocessSpec.from_dict(report["preprocess"])
        classes = tuple(str(c) for c in report.get("classes", ()))
        return Source(p, "export", p, report, ckpt, note, classes, pre)
    if p.stat().st_size == 0:
        raise ValueError(f"SOURCE '{p}' is an empty file; give a checkpoint (best.pt) or an export folder")
    from omsf2.models.checkpoint import checkpoint_info, load_checkpoint

    _, names, _, pre = checkpoint_info(load_checkpoint(p))
    return Source(p, "checkpoint", None, None, p, None, tuple(names), pre)


def check_sizes(source: Source, sizes: tuple[int, ...] | None) -> tuple[int, ...]:
    """The image sizes to bench (default: the source's).

    Raises:
        ValueError: a size an export folder was not made for, or not a multiple of 32.
    """
    if not sizes:
        return (source.img_size,)
    if source.preprocess.size[0] != source.preprocess.size[1]:
        raise ValueError(f"the bench runs square inputs; SOURCE was made for {source.preprocess.size}")
    bad = [s for s in sizes if s % 32]
    if bad:
        raise ValueError(f"--img-size must be multiples of 32, got {', '.join(map(str, bad))}")
    if source.kind == "export":
        other = [s for s in sizes if s != source.img_size]
        if other:
            raise ValueError(
                f"image size {other[0]} was not exported: the ONNX in '{source.export_dir}' takes "
                f"{source.img_size} px (H and W are fixed at export); bench the checkpoint to export other sizes"
            )
    return tuple(dict.fromkeys(sizes))
