"""A bundle: one hash-verified folder that holds everything a deployment runs.

``make_bundle(export_dir, out)`` copies what ``omsf2 export`` wrote (ONNX flavours, engines and their
manifests, ``libomsf2_plugins.so`` where built) into ``out`` with a ``manifest.json``, a short
README and the model card (``model_card.json``, ``MODEL_CARD.md``: :mod:`omsf2.runtime.model_card`);
the manifest's ``trace`` is the chain from the training data to the bundle (:mod:`omsf2.runtime.trace`).
The manifest follows the MONAI bundle's metadata conventions where they fit
(``network_data_format``, ``intended_use``, ``data_source``, ``references``) and adds what the
runtime needs: class names, the preprocessing spec, the export's accuracy figures and INT8 gate,
which file each export target became, and the sha256 of every other file in the folder.

:func:`load_bundle` verifies before anything is run: a newer format version, a path that escapes
the folder (absolute, ``..``, a symlink out), a file that was changed, added or removed are each
refused with one line (:class:`BundleError`). The manifest itself is not listed (it holds the
hashes); its own sha256 is the bundle's :attr:`Bundle.digest`, which a deployment can pin.
Then the manifest is held to every model file it names (:mod:`omsf2.runtime.model_check`: classes,
task, preprocessing, the source checkpoint and the I/O shapes against the ONNX's ``omsf2.*``
metadata or the engine's manifest), since nothing hashes the manifest itself. With a
:class:`~omsf2.runtime.trust.TrustPolicy` (a pinned digest, trusted Ed25519 keys) the manifest's
bytes are checked before any other file is read, and ``manifest.sig`` (``make_bundle`` with
``sign``) carries the signature. The trade-off: hashing reads every file once per load, and each
ONNX a second time for its metadata (an INT8 file is a few MB, well under a second), in exchange
for never running a file other than the one that was exported and gated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from omsf2._version import __version__
from omsf2.config import PreprocessSpec
from omsf2.fileio import default_mode, sha256_file
from omsf2.runtime.gating import Accepts
from omsf2.runtime.model_card import CARD_JSON, CARD_MD, build_card, write_card
from omsf2.runtime.model_check import ModelMismatch, check_model, engine_model_info, onnx_model_info
from omsf2.runtime.rules import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, PLUGIN_LIBRARY, ManifestJSONError, loads_json
from omsf2.runtime.trace import bundle_link, export_links
from omsf2.runtime.trust import SIGNATURE_FILE, TrustError, TrustPolicy, sign_manifest, verify_manifest

FORMAT = BUNDLE_FORMAT
FORMAT_VERSION = BUNDLE_FORMAT_VERSION
MANIFEST = "manifest.json"
README = "README.md"
REPORT = "report.json"
__all__ = ["PLUGIN_LIBRARY", "Bundle", "BundleError", "BundleSpec", "load_bundle", "load_export", "make_bundle"]
DEFAULT_MAX_BATCH = 32
#: The pneumoconiosis stages (the phantoms' and the paper's classes): only a model with these classes is
#: described as staging pneumoconiosis by default.
PNEUMOCONIOSIS_STAGES = ("normal", "stage_I", "stage_II", "stage_III")


def default_intended_use(classes: tuple[str, ...] | list[str]) -> str:
    """The intended use a bundle states when none is given: research use, in the words of its own classes."""
    if tuple(classes) == PNEUMOCONIOSIS_STAGES:
        what = "staging of pneumoconiosis"
    else:  # a model of other classes (cxr-real's pneumonia) is not described as a pneumoconiosis model
        what = f"classification into {', '.join(classes)}"
    return (
        f"Research use only: {what} on posteroanterior chest radiographs (CR/DX). "
        "Not a medical device; not for diagnosis."
    )


class BundleError(ValueError):
    """A bundle or export folder that must not be run; the message is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A verified bundle (or export folder): where its files are and what the model expects.

    Attributes:
        root: the folder.
        classes: class names, in logit order.
        preprocess: the preprocessing spec recorded with the model.
        artifacts: export target name (``onnx``, ``onnx_int8_cpu``, ``engine_int8`` ...) -> file.
        max_batch: the most images one inference call takes.
        task: ``multiclass`` (softmax) or ``multilabel`` (sigmoid).
        digest: sha256 of ``manifest.json`` (of ``report.json`` for an export folder).
        metadata: the whole manifest.
        artifact_sha256: export target -> the sha256 its file must have.
        signer: the id (sha256 of the raw public key) of the key that signed the manifest, or None.
        accepts: what the model accepts (modalities, body parts, views: the clinical input gating,
            :mod:`omsf2.runtime.gating`); the defaults for an export folder or an older manifest.
    """

    root: Path
    classes: tuple[str, ...]
    preprocess: PreprocessSpec
    artifacts: dict[str, Path]
    max_batch: int
    task: str
    digest: str
    metadata: dict[str, Any] = dataclasses.field(repr=False, compare=False)
    artifact_sha256: dict[str, str] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    signer: str | None = None
    accepts: Accepts = dataclasses.field(default_factory=Accepts, compare=False)

    @property
    def name(self) -> str:
        """The model's name from the manifest (``omsf2 bundle --name``); ``unnamed`` where it has none."""
        return str(self.metadata.get("name") or "unnamed")

    @property
    def version(self) -> str:
        """The model's version from the manifest (``omsf2 bundle --version``); ``unversioned`` where it has none."""
        return str(self.metadata.get("version") or "unversioned")

    def read_artifact(self, target: str) -> bytes:
        """The bytes of the ``target`` artifact, read once and checked against its recorded sha256.

        A session is built from these bytes, so the model that runs is the one that was hashed even
        if the file changes after the bundle was verified.

        Raises:
            BundleError: no such artifact, or its bytes do not match (the file changed since loading).
        """
        if target not in self.artifacts:
            raise BundleError(f"bundle '{self.root}' has no {target} artifact (it has {', '.join(self.artifacts)})")
        path = self.artifacts[target]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BundleError(f"bundle '{self.root}': cannot read '{path.name}': {e.strerror or e}") from e
        if hashlib.sha256(data).hexdigest() != self.artifact_sha256.get(target):
            raise BundleError(
                f"bundle '{self.root}': '{path.name}' changed after the bundle was verified (sha256 differs)"
            )
        return data


# --------------------------------------------------------------------------- paths and hashes


def _safe_relpath(root: Path, name: object) -> Path:
    """``root / name`` when ``name`` is a plain relative path that stays inside ``root``, else BundleError."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise BundleError(f"bundle '{root}': invalid file name {name!r} in {MANIFEST}")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        raise BundleError(f"bundle '{root}': path {name!r} in {MANIFEST} escapes the bundle folder")
    path = root / pure
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise BundleError(f"bundle '{root}': '{name}' resolves outside the bundle folder (symlink)") from None
    return path


def _present_files(root: Path) -> set[str]:
    """Every file under ``root`` (POSIX relative names; symlinks to files count as files, not followed for dirs)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                found.add((rel / d).as_posix())  # a linked folder is never part of a bundle
        for f in filenames:
            found.add((rel / f).as_posix())
    return found


def verify_files(
    root: Path, files: dict[str, str], exempt: frozenset[str] = frozenset({MANIFEST, SIGNATURE_FILE})
) -> None:
    """Hold the folder to ``files`` (name -> sha256): nothing added, removed, changed or escaping.

    Raises:
        BundleError: the first problem, in one line.
    """
    if not isinstance(files, dict) or not files:
        raise BundleError(f"bundle '{root}': {MANIFEST} lists no files")
    for name, digest in files.items():
        path = _safe_relpath(root, name)
        if path.is_symlink():
            raise BundleError(f"bundle '{root}': '{name}' is a symlink; bundles hold plain files")
        if not path.is_file():
            raise BundleError(f"bundle '{root}': '{name}' is listed in {MANIFEST} but missing (file removed)")
        if not isinstance(digest, str) or sha256_file(path) != digest:
            raise BundleError(f"bundle '{root}': '{name}' does not match its sha256 in {MANIFEST} (file changed)")
    extra = sorted(_present_files(root) - set(files) - exempt)
    if extra:
        more = f" (+{len(extra) - 1} more)" if len(extra) > 1 else ""
        raise BundleError(f"bundle '{root}': '{extra[0]}'{more} is not listed in {MANIFEST} (file added)")


# --------------------------------------------------------------------------- loading


def _model_fields(root: Path, meta: dict[str, Any], what: str) -> tuple[tuple[str, ...], PreprocessSpec, str]:
    try:
        classes = tuple(str(c) for c in meta["classes"])
        pre = PreprocessSpec.from_dict(meta["preprocess"])
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{what} '{root}' has no valid classes/preprocess ({type(e).__name__}: {e})") from e
    if not classes:
        raise BundleError(f"{what} '{root}' lists no classes")
    task = str(meta.get("task", "multiclass"))
    if task not in ("multiclass", "multilabel"):
        raise BundleError(f"{what} '{root}': unknown task {task!r} (multiclass or multilabel)")
    return classes, pre, task


def _read_json(path: Path, what: str) -> tuple[dict[str, Any], bytes]:
    """The JSON object in ``path`` and the bytes it was parsed from."""
    if not path.is_file():
        raise BundleError(f"'{path.parent}' is not an omsf2 {what}: it has no {path.name}")
    data = path.read_bytes()
    try:
        meta = loads_json(data)
    except ManifestJSONError as e:
        raise BundleError(f"'{path}' is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise BundleError(f"'{path}' is not a JSON object")
    return meta, data


def _check_models(root: Path, meta: dict[str, Any], artifacts: dict[str, Path], checkpoint: Any, what: str) -> None:
    """Hold each model file to the manifest's classes, task, preprocessing and identity (sorted by target).

    Raises:
        BundleError: the first mismatch (:mod:`omsf2.runtime.model_check`), or an unreadable model file.
    """
    fields = {
        "classes": list(meta["classes"]),
        "task": str(meta.get("task", "multiclass")),
        "preprocess": meta["preprocess"],
        "checkpoint_sha256": checkpoint.get("sha256") if isinstance(checkpoint, dict) else None,
    }
    for target in sorted(artifacts):
        path = artifacts[target]
        try:
            if path.suffix == ".engine":
                side = path.with_name(path.name + ".json")
                info = engine_model_info(loads_json(side.read_bytes())) if side.is_file() else None
            else:
                info = onnx_model_info(path.read_bytes())
        except (OSError, ValueError) as e:
            raise BundleError(f"{what} '{root}': '{path.name}' is not a readable model file ({e})") from None
        if info is None:
            continue  # an engine without its manifest: the session refuses it when it opens
        try:
            check_model(fields, info, path.name, MANIFEST if what == "bundle" else REPORT)
        except ModelMismatch as e:
            raise BundleError(f"{what} '{root}': {e}") from None


def load_bundle(path: str | os.PathLike[str], trust: TrustPolicy | None = None) -> Bundle:
    """Read and verify a bundle folder (see the module docstring for what is refused).

    Args:
        path: the bundle folder.
        trust: a pinned digest and/or trusted signing keys, checked on the manifest's bytes before
            any other file is read (None: no signature or digest required).

    Raises:
        BundleError: not a bundle, a newer format, files that do not match the manifest, a manifest
            that does not match its model files, or a bundle the trust policy refuses.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle '{root}' is not a folder")
    meta, raw = _read_json(root / MANIFEST, "bundle")
    digest = hashlib.sha256(raw).hexdigest()
    try:
        signer = verify_manifest(root, raw, trust or TrustPolicy())
    except TrustError as e:
        raise BundleError(str(e)) from None
    if meta.get("format") != FORMAT:
        raise BundleError(f"'{root / MANIFEST}' is not an omsf2 bundle manifest (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BundleError(f"'{root / MANIFEST}' has no valid format_version")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"bundle '{root}' has format version {version}; this omsf2 {__version__} reads up to {FORMAT_VERSION}"
            " (upgrade omsf2)"
        )
    verify_files(root, meta.get("files", {}))
    classes, pre, task = _model_fields(root, meta, "bundle")
    artifacts = meta.get("artifacts")
    if not isinstance(artifacts, dict) or not artifacts:
        raise BundleError(f"bundle '{root}' names no model artifacts")
    resolved, hashes = {}, {}
    for target, name in artifacts.items():
        if name not in meta["files"]:
            raise BundleError(f"bundle '{root}': artifact '{name}' is not among the hashed files")
        resolved[str(target)] = _safe_relpath(root, name)
        hashes[str(target)] = str(meta["files"][name])
    max_batch = int(meta.get("max_batch", DEFAULT_MAX_BATCH))
    try:
        accepts = Accepts.from_manifest(meta)
    except ValueError as e:
        raise BundleError(f"bundle '{root}': {e}") from None
    _check_models(root, meta, resolved, (meta.get("export") or {}).get("checkpoint"), "bundle")
    return Bundle(root, classes, pre, resolved, max(1, max_batch), task, digest, meta, hashes, signer, accepts)


def load_export(path: str | os.PathLike[str], trust: TrustPolicy | None = None) -> Bundle:
    """Read an ``omsf2 export`` folder as a bundle, its artifacts verified against ``report.json``.

    Files other than the artifacts may sit in an export folder; only the artifacts are checked.

    Raises:
        BundleError: no report.json, an artifact that is missing, changed or does not match the
            report's classes, task or preprocessing, or a trust policy (export folders are not signed).
    """
    root = Path(path)
    if trust is not None and trust.configured:
        raise BundleError(
            f"'{root}' is an export folder, which is not signed: --trust and --expect-sha256 need a bundle "
            "(omsf2 bundle EXPORT --out BUNDLE --sign KEY)"
        )
    report, raw = _read_json(root / REPORT, "export folder")
    digest = hashlib.sha256(raw).hexdigest()
    classes, pre, task = _model_fields(root, report, "export folder")
    arts = report.get("artifacts")
    if not isinstance(arts, dict) or not arts:
        raise BundleError(f"export folder '{root}': {REPORT} lists no artifacts")
    resolved, hashes = {}, {}
    for target, info in arts.items():
        if not isinstance(info, dict) or "file" not in info:
            raise BundleError(f"export folder '{root}': artifact {target!r} has no file in {REPORT}")
        p = _safe_relpath(root, info["file"])
        if not p.is_file():
            raise BundleError(f"export folder '{root}': '{info['file']}' is missing")
        if sha256_file(p) != info.get("sha256"):
            raise BundleError(f"export folder '{root}': '{info['file']}' does not match its sha256 in {REPORT}")
        resolved[str(target)] = p
        hashes[str(target)] = str(info["sha256"])
    _check_models(root, report, resolved, report.get("checkpoint"), "export folder")
    return Bundle(root, classes, pre, resolved, DEFAULT_MAX_BATCH, task, digest, report, hashes)


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is read as a bundle (it has ``manifest.json``, or no ``report.json`` either)."""
    root = Path(path)
    return (root / MANIFEST).is_file() or not (root / REPORT).is_file()


def load_model_folder(path: str | os.PathLike[str], trust: TrustPolicy | None = None) -> Bundle:
    """A bundle (``manifest.json``) or an export folder (``report.json``), verified (and held to ``trust``)."""
    if is_bundle(path):
        return load_bundle(path, trust)
    return load_export(path, trust)


# --------------------------------------------------------------------------- writing


@dataclasses.dataclass(frozen=True)
class BundleSpec:
    """What :func:`make_bundle` writes.

    Attributes:
        export_dir: an ``omsf2 export`` output folder (with ``report.json``).
        out: the bundle folder to create; it must not exist (or be empty).
        name: the algorithm's name, as every result names it (``omsf2 bundle --name``; at most 64
            characters); None writes ``unnamed`` (never a file name).
        version: the algorithm's version (``--version``); None writes ``unversioned``.
        intended_use: one paragraph on what the model is for (and is not); empty: :func:`default_intended_use`.
        data_source: where the training data came from.
        references: citations (papers, repositories).
        max_batch: the most images the runtime sends in one inference call.
        plugin_library: ``libomsf2_plugins.so`` for engines built with the custom ops, when it is
            not in the export folder (checked against the engine manifest's hash).
        sign: an Ed25519 private key (``omsf2 keygen``'s ``.key``) to sign the manifest with
            (``manifest.sig``); None: unsigned.
        accepts: the modalities, body parts and views the model accepts (the manifest's ``accepts``).
    """

    export_dir: str
    out: str
    name: str | None = None
    version: str | None = None
    intended_use: str = ""
    data_source: str = ""
    references: tuple[str, ...] = ()
    max_batch: int = DEFAULT_MAX_BATCH
    plugin_library: str | None = None
    sign: str | None = None
    accepts: Accepts = dataclasses.field(default_factory=Accepts)

    def __post_init__(self) -> None:
        for flag, value in (("--name", self.name), ("--version", self.version)):
            if value is not None and (
                not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable() or "\\" in value
            ):
                raise ValueError(f"{flag} must be 1-64 printable characters without a backslash, got {value!r}")
        if self.plugin_library is not None and not Path(self.plugin_library).is_file():
            raise ValueError(f"plugin library '{self.plugin_library}' does not exist")
        if self.sign is not None and not Path(self.sign).is_file():
            raise ValueError(f"signing key '{self.sign}' does not exist (omsf2 keygen --out PREFIX makes one)")
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        out = Path(self.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(f"bundle output '{out}' already exists and is not an empty folder")
        parent = out.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"bundle output '{out}': '{parent}' is a file, not a folder")
        if parent != out.parent:
            raise ValueError(f"bundle output '{out}': parent folder '{out.parent}' does not exist")


def _files_to_copy(export: Bundle, plugin_library: Path | None) -> list[Path]:
    """The artifacts, each engine's manifest, and the plugin library an engine was built with.

    Raises:
        BundleError: an engine without its manifest, or one that needs a plugin library that is
            neither given nor beside it, or whose hash differs from the one it was built with.
    """
    files = list(export.artifacts.values())
    for p in list(files):
        if p.suffix != ".engine":
            continue
        side = p.with_name(p.name + ".json")
        if not side.is_file():
            raise BundleError(f"export folder '{export.root}': engine '{p.name}' has no manifest '{side.name}'")
        files.append(side)
        meta = loads_json(side.read_bytes())
        if not meta.get("plugin_library"):
            continue
        lib = plugin_library or export.root / meta["plugin_library"]
        if not lib.is_file():
            raise BundleError(
                f"engine '{p.name}' needs plugin library '{meta['plugin_library']}'; pass --plugin-lib PATH"
            )
        if sha256_file(lib) != meta.get("plugin_library_sha256"):
            raise BundleError(f"plugin library '{lib}' is not the one '{p.name}' was built with (sha256 differs)")
        if lib.name != meta["plugin_library"]:
            raise BundleError(f"plugin library '{lib}' must be named '{meta['plugin_library']}' as the engine expects")
        if lib not in files:
            files.append(lib)
    lib = export.root / PLUGIN_LIBRARY
    if lib.is_file() and not any(f.name == PLUGIN_LIBRARY for f in files):
        files.append(lib)
    return files


def _network_data_format(export: Bundle) -> dict[str, Any]:
    pre = export.preprocess
    h, w = pre.size
    channel_def = {str(i): c for i, c in enumerate(export.classes)}
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": "magnitude",
                "modality": "CR/DX",
                "num_channels": pre.channels,
                "spatial_shape": [h, w],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": {str(i): "gray" for i in range(pre.channels)},
            }
        },
        "outputs": {
            "logits": {
                "type": "probabilities",
                "format": "classes",
                "num_channels": len(export.classes),
                "spatial_shape": [1],
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": False,
                "channel_def": channel_def,
                "activation": "softmax" if export.task == "multiclass" else "sigmoid",
            },
            "heatmap": {
                "type": "image",
                "format": "class activation map over the model input (the runtime maps it to the image)",
                "num_channels": 1,
                "dtype": "float32",
                "is_patch_data": False,
            },
        },
    }


def _readme(meta: dict[str, Any]) -> str:
    arts = ", ".join(f"`{f}` ({t})" for t, f in meta["artifacts"].items())
    return (
        f"# {meta['name']} {meta['version']} (omsf2 bundle)\n\n"
        f"Classes: {', '.join(meta['classes'])}.\n\nModel files: {arts}.\n\n"
        f"Accepts DICOM images of modality {', '.join(meta['accepts']['modalities'])}, body part "
        f"{', '.join(meta['accepts']['body_parts'])}, view {', '.join(meta['accepts']['views'])}.\n\n"
        f"Intended use: {meta['intended_use']}\n\n"
        "Run it (no PyTorch needed: `pip install omsf2[runtime]`):\n\n"
        "    omsf2 predict IMAGE... --model THIS_FOLDER [--backend ort|ort-int8|openvino|tensorrt] [--overlay DIR]\n\n"
        f"`{CARD_MD}` (and `{CARD_JSON}`) is the model card, generated from recorded facts only; "
        "`omsf2 trace THIS_FOLDER`\nverifies the chain from the training data to this bundle.\n\n"
        "`manifest.json` holds the sha256 of every other file here; a changed, added or removed file,\n"
        "a path leaving this folder, or a manifest that disagrees with its model files makes the runtime\n"
        "refuse the bundle. Where `manifest.sig` is present it is an Ed25519 signature over `manifest.json`:\n"
        "run with `--trust SIGNER.pub` (and `--expect-sha256 DIGEST`) to accept nothing else.\n"
    )


def make_bundle(spec: BundleSpec) -> Bundle:
    """Copy an export folder into a new bundle folder with its manifest and README, then verify it.

    The folder is assembled beside ``spec.out`` and renamed into place, so a failure leaves nothing.

    Raises:
        BundleError: the export folder is not valid or its artifacts do not match its report.
        ValueError: bad options or output path.
    """
    export = load_export(spec.export_dir)
    files = _files_to_copy(export, None if spec.plugin_library is None else Path(spec.plugin_library))
    report = export.metadata
    out = Path(spec.out)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": spec.name or "unnamed",
        "version": spec.version or "unversioned",
        "omsf2_version": __version__,
        "task": export.task,
        "description": "OMSF2 multi-scale feature-fusion CNN: stage, class probabilities and a class activation map.",
        "intended_use": spec.intended_use or default_intended_use(export.classes),
        "data_source": spec.data_source,
        "references": list(spec.references),
        "classes": list(export.classes),
        "preprocess": export.preprocess.to_dict(),
        "accepts": spec.accepts.to_dict(),
        "network_data_format": _network_data_format(export),
        "max_batch": spec.max_batch,
        "export": {
            k: report[k]
            for k in (
                "checkpoint",
                "opset",
                "plugins",
                "onnx_parity",
                "int8",
                "int8_cpu",
                "calibration",
                "calibration_sha256",
                "eval_data",
                "engine_gate",
            )
            if k in report
        },
        "artifacts": {t: p.name for t, p in export.artifacts.items()},
    }
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # mkdtemp makes 0700; a bundle gets what mkdir would give it, so a service account can read
        # a bundle another user built (as the export folder does).
        os.chmod(stage, default_mode(folder=True))
        for src in files:
            shutil.copy2(src, stage / src.name)
            os.chmod(stage / src.name, default_mode())
        (stage / README).write_text(_readme(meta))
        source = export.root.resolve()  # the chain from the data to this bundle, and the card (from records only)
        meta["trace"] = [*export_links(report, source), bundle_link(source, export.digest)]
        write_card(stage, build_card(meta, report, export.digest))
        meta["files"] = {p.name: sha256_file(p) for p in sorted(stage.iterdir())}
        manifest = (json.dumps(meta, indent=2, allow_nan=False) + "\n").encode()
        (stage / MANIFEST).write_bytes(manifest)
        if spec.sign is not None:
            try:
                (stage / SIGNATURE_FILE).write_bytes(sign_manifest(manifest, spec.sign))
            except TrustError as e:
                raise BundleError(str(e)) from None
        if out.is_dir():
            out.rmdir()  # empty (checked by the spec)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return load_bundle(out)
