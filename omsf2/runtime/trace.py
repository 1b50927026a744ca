"""The traceability chain of a bundle, and ``omsf2 trace``'s check of every link it can reach on disk.

data → checkpoint → ONNX → calibration set → quantized ONNX → gate → engine → bundle: each link
names its inputs and outputs with the sha256 each had when the step ran. The facts come from the
records the steps wrote: the checkpoint's data record (:mod:`omsf2.train.data_record`), the
export's ``report.json`` (checkpoint, calibration folder and set, gate set, the gates' figures,
artifacts; :mod:`omsf2.export.evidence`) and the bundle's manifest. :func:`export_links` turns a
report into links (the export writes them into ``report.json``, the bundle into its manifest and
model card); :func:`trace_bundle` verifies them.

Verifying recomputes each hash where its subject is on disk: the data folder, the checkpoint at its
recorded path, the calibration folder and the images drawn from it, the gate images, the export
folder's files and report, and the bundle's own files (through :func:`omsf2.runtime.bundle.load_bundle`,
so a bundle whose files were edited is refused first, in one line). A subject that is gone is
reported as "not on disk (not verified)", a fact an older omsf2 did not record as "not recorded":
neither is a failure. A hash that differs is: one line naming the step, the subject, both hashes.
The trade-off: the check reads the data and calibration folders in full (seconds for cxr-real).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from omsf2.fileio import sha256_file
from omsf2.lineage import data_listing, files_sha256, folder_sha256, record_sha256
from omsf2.runtime.trust import TrustPolicy

#: The report entries that hold the gates' results (the gate step's output).
GATE_KEYS = ("int8", "int8_cpu", "engine_gate")
QUANTIZED = ("onnx_int8", "onnx_int8_cpu")
VERIFIED, BUNDLE_COPY, ABSENT = "verified", "verified, bundle copy", "not on disk (not verified)"
NOT_RECORDED, GENERATED, CHANGED = "not recorded", "generated in memory, nothing on disk", "CHANGED"


def _item(
    what: str, kind: str, path: str | None, sha256: str | None, since: str = "the export", **extra: Any
) -> dict[str, Any]:
    return {"what": what, "kind": kind, "path": path, "sha256": sha256, "since": since, **extra}


def _artifact(arts: dict[str, Any], target: str, out: Path) -> dict[str, Any]:
    info = arts.get(target) or {}
    name = str(info.get("file") or target)
    return _item(name, "file", str(out / name), info.get("sha256"), file=name)


def _data_item(report: dict[str, Any]) -> dict[str, Any]:
    record = (report.get("training") or {}).get("data_record") or {}
    listing = record.get("listing") or {}
    return _item(
        "training data",
        "data",
        listing.get("path"),
        listing.get("sha256"),
        "training",
        data_kind=listing.get("kind"),
        scope=listing.get("scope"),
    )


def _calibration_links(report: dict[str, Any], arts: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    cal = report.get("calibration")
    if not isinstance(cal, dict):
        return []
    folder = cal.get("folder") or {}
    folder_item = _item("calibration folder", "folder", folder.get("path") or cal.get("data_dir"), folder.get("sha256"))
    images = cal.get("images")
    set_item = _item(
        "calibration set",
        "files",
        cal.get("data_dir_resolved") or cal.get("data_dir"),
        cal.get("set_sha256"),
        names=images,
        count=cal.get("count"),
    )
    quantized = [_artifact(arts, t, out) for t in QUANTIZED if t in arts]
    return [
        {"step": "calibration set", "input": [folder_item], "output": [set_item]},
        {"step": "quantized ONNX", "input": [_artifact(arts, "onnx", out), set_item], "output": quantized},
    ]


def _gate_link(report: dict[str, Any], arts: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    gates = {k: report[k] for k in GATE_KEYS if k in report}
    if not gates:
        return []
    part = (report.get("gate_data") or {}).get("gate") or {}
    gate_set = _item(
        "gate set",
        "files",
        part.get("data_dir_resolved") or part.get("data_dir"),
        part.get("sha256"),
        names=part.get("images"),
        count=part.get("n"),
    )
    judged = [_artifact(arts, t, out) for t in QUANTIZED if t in arts]
    verdicts = {k: bool(v.get("passed")) for k, v in gates.items() if k != "engine_gate" and isinstance(v, dict)}
    verdicts.update({k: bool(v.get("passed")) for k, v in (gates.get("engine_gate") or {}).items()})
    result = _item(
        "gate result", "record", str(out / "report.json"), record_sha256(gates), keys=sorted(gates), verdicts=verdicts
    )
    return [{"step": "gate", "input": [gate_set, *judged], "output": [result]}]


def export_links(report: dict[str, Any], export_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The chain from the data to the export's files, as ``report`` records it (the export lives in ``export_dir``).

    Returns:
        Links in chain order, each ``{"step", "input": [item], "output": [item]}``; an item is
        ``{"what", "kind", "path", "sha256", "since", ...}`` with ``sha256`` None where not recorded.
    """
    out = Path(export_dir)
    ck = report.get("checkpoint") or {}
    checkpoint = _item("checkpoint", "file", ck.get("resolved") or ck.get("path"), ck.get("sha256"))
    arts = report.get("artifacts") or {}
    links = [{"step": "checkpoint", "input": [_data_item(report)], "output": [checkpoint]}]
    if "onnx" in arts:
        links.append({"step": "ONNX", "input": [checkpoint], "output": [_artifact(arts, "onnx", out)]})
    links += _calibration_links(report, arts, out)
    links += _gate_link(report, arts, out)
    for target in sorted(t for t in arts if t.startswith("engine")):
        source = str((arts[target] or {}).get("built_from"))
        src = [_artifact(arts, source, out)] if source in arts else [_item("engine source", "file", None, None)]
        links.append({"step": "engine", "input": src, "output": [_artifact(arts, target, out)]})
    return links


def bundle_link(export_dir: str | os.PathLike[str], report_sha256: str) -> dict[str, Any]:
    """The last link: the export's ``report.json`` (as it was when bundled) -> the bundle's files.

    The bundle's own hash is its manifest's sha256, which the manifest cannot hold: the trace
    prints it after :func:`omsf2.runtime.bundle.load_bundle` verified every file.
    """
    report = _item("export report", "file", str(Path(export_dir) / "report.json"), report_sha256, "the bundle was made")
    return {"step": "bundle", "input": [report], "output": [_item("bundle", "bundle", None, None)]}


# --------------------------------------------------------------------------- verifying


@dataclasses.dataclass
class TraceReport:
    """What :func:`trace_bundle` found.

    Attributes:
        lines: the header, then one line per link.
        errors: one line per broken link (a recorded hash that differs now); empty when the chain holds.
        counts: status -> how many subjects had it.
    """

    lines: list[str]
    errors: list[str]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        """No link is broken."""
        return not self.errors


def _now(item: dict[str, Any]) -> str | None:
    """The subject's sha256 now, None where it is not on disk; raises OSError where it cannot be read."""
    kind, path = item.get("kind"), item.get("path")
    if not path:
        return None
    p = Path(path)
    if kind in ("file", "record") and not p.is_file():
        return None
    if kind == "file":
        return sha256_file(p)
    if kind == "record":
        report = json.loads(p.read_text())
        return record_sha256({k: report[k] for k in item.get("keys", []) if k in report})
    if kind == "folder":
        return folder_sha256(p)["sha256"] if p.is_dir() else None
    if kind == "data":
        return data_listing(p)["sha256"] if p.exists() else None
    if kind == "files":
        if not p.is_dir():
            return None
        try:
            return str(files_sha256(p, item.get("names") or [])["sha256"])
        except FileNotFoundError as e:
            return f"a file is missing: {Path(e.filename or '?').name}"
    return None


class _Verifier:
    """Checks each subject once (a checkpoint is both a step's output and the next step's input)."""

    def __init__(self, bundle_files: dict[str, str]) -> None:
        self.bundle_files = bundle_files
        self.seen: dict[tuple[Any, ...], str] = {}
        self.broken: dict[str, list[tuple[str, str]]] = {}  # step -> (subject, message), in the order found
        self.counts: dict[str, int] = {}

    @staticmethod
    def key(item: dict[str, Any]) -> tuple[Any, ...]:
        """What identifies a subject: its kind, path, recorded hash and name."""
        return item.get("kind"), item.get("path"), item.get("sha256"), item.get("what")

    def status(self, step: str, item: dict[str, Any]) -> str:
        key = self.key(item)
        if key not in self.seen:
            self.seen[key] = self._check(step, item)
            self.counts[self.seen[key]] = self.counts.get(self.seen[key], 0) + 1
        return self.seen[key]

    def _check(self, step: str, item: dict[str, Any]) -> str:
        recorded = item.get("sha256")
        if item.get("kind") == "bundle":
            return VERIFIED  # load_bundle held every file to the manifest before the trace began
        if item.get("kind") == "data" and item.get("data_kind") == "synthetic":
            return GENERATED
        if not recorded:
            return NOT_RECORDED
        try:
            now = _now(item)
        except (OSError, ValueError) as e:
            now = f"unreadable: {getattr(e, 'strerror', None) or e}"
        if now is None:
            copy = self.bundle_files.get(str(item.get("file") or ""))
            return BUNDLE_COPY if copy is not None and copy == recorded else ABSENT
        if now != recorded:
            now_text = now if len(now) != 64 else f"{now} now"
            self.broken.setdefault(step, []).append((str(item["what"]), (
                f"{step}: {item['what']} '{item['path']}' changed since {item.get('since', 'the export')} "
                f"(sha256 {recorded} recorded, {now_text})"
            )))  # fmt: skip
            return CHANGED
        copy = self.bundle_files.get(str(item.get("file") or ""))
        if copy is not None and copy != recorded:
            message = f"{step}: the bundle's '{item['file']}' is not the file the export wrote (sha256 differs)"
            self.broken.setdefault(step, []).append((str(item["file"]), message))
            return CHANGED
        return VERIFIED

    def errors(self) -> list[str]:
        """One line per broken link: its first changed subject in full, the others of the same step named."""
        out = []
        for found in self.broken.values():
            others = [what for what, _ in found[1:]]
            out.append(found[0][1] + (f"; {', '.join(others)} changed too" if others else ""))
        return out


def _describe(item: dict[str, Any], status: str, first: bool) -> str:
    """``what [path] sha12 (status)``; the path of a subject outside the export, the first time it appears."""
    sha = str(item.get("sha256") or "")[:12] or "-"
    outside = item.get("kind") in ("data", "folder", "files") or item["what"] == "checkpoint"
    where = f" {item['path']}" if outside and first and item.get("path") else ""
    if item.get("kind") == "bundle":
        return f"bundle files ({status}: every file against manifest.json)"
    if item.get("kind") == "record" and item.get("verdicts"):
        verdicts = ", ".join(f"{k} {'passed' if v else 'failed'}" for k, v in item["verdicts"].items())
        return f"{item['what']} {sha} [{verdicts}] ({status})"
    return f"{item['what']}{where} {sha} ({status})"


def link_line(link: dict[str, Any], verifier: _Verifier) -> str:
    """One line: ``step: input (status), ... -> output (status), ...``."""
    step = str(link.get("step"))

    def describe(item: dict[str, Any]) -> str:
        first = verifier.key(item) not in verifier.seen
        return _describe(item, verifier.status(step, item), first)

    ins = [describe(i) for i in link.get("input") or []]
    outs = [describe(o) for o in link.get("output") or []]
    return f"{step}: {', '.join(ins) or '-'} -> {', '.join(outs) or 'nothing written'}"


def trace_bundle(path: str | os.PathLike[str], trust: TrustPolicy | None = None) -> TraceReport:
    """Load and verify a bundle (one-line BundleError if it was edited), then verify its chain.

    Raises:
        BundleError: the bundle itself is refused (a file changed, added or removed, a bad
            signature), or it holds no trace (made by an omsf2 before the trace existed).
    """
    from omsf2.runtime.bundle import BundleError, load_bundle

    b = load_bundle(path, trust)
    links = b.metadata.get("trace")
    if not isinstance(links, list) or not links:
        raise BundleError(f"bundle '{b.root}' holds no trace (made before omsf2 recorded one); bundle the export again")
    verifier = _Verifier({str(k): str(v) for k, v in (b.metadata.get("files") or {}).items()})
    lines = [f"bundle {b.root}: {b.name} {b.version}, manifest sha256 {b.digest}"]
    lines += [link_line(link, verifier) for link in links if isinstance(link, dict)]
    if not any(isinstance(link, dict) and link.get("step") == "engine" for link in links):
        at = next((i for i, line in enumerate(lines) if line.startswith("bundle:")), len(lines))
        lines.insert(
            at, "engine: none built in this export (omsf2 export --format engine builds them on the target GPU)"
        )
    return TraceReport(lines, verifier.errors(), verifier.counts)
