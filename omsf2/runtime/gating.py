"""Clinical input gating: the one rule set that decides whether a DICOM image may be analysed at all.

``omsf2 predict``, the DICOM node (:mod:`omsf2.serve.dicom_intake`) and the C library
(``omsf2_check_input`` in ``cpp/omsf2_runtime.h``, used by ``examples/scanner/scanner_host.cpp``)
apply these rules, in this order, and give the same reason word for word
(``tests/runtime/test_rules_parity.py`` holds the C++ side to :func:`not_applicable`):

1. Modality must be one the bundle accepts (default CR, DR, DX).
2. BodyPartExamined must be one the bundle accepts (default CHEST); absent, only where the site
   allows it (``--allow-missing body-part``).
3. ViewPosition must be one the bundle accepts (default PA, AP; a lateral only when the bundle
   lists it); absent, only where the site allows it (``--allow-missing view``).
4. Photometric interpretation, samples per pixel and bits must be what a radiograph has.

What a bundle accepts (modalities, body parts, views) is declared in its manifest (``accepts``,
written by ``omsf2 bundle --accept-view ...``); a bundle without it accepts the defaults below.
A PNG or JPEG carries none of these attributes and is not gated.

Separately, :func:`missing_required` names the attributes the node needs to build and route a result
(the identifying UIDs and Modality): an instance without one is refused at C-STORE, so the sender is
told, instead of failing later while the result is encoded.

The trade-off: the attributes are trusted as written by the modality. A tibia labelled CHEST passes;
the rules catch mislabelled or misrouted studies, not a wrong label.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omsf2.data.io import is_dicom_file

#: Modalities of projection radiographs (CR computed, DX digital radiography; DR as some devices write it).
DEFAULT_MODALITIES: tuple[str, ...] = ("CR", "DR", "DX")
DEFAULT_BODY_PARTS: tuple[str, ...] = ("CHEST",)
#: Frontal views; a bundle that handles laterals lists LL / RL too.
DEFAULT_VIEWS: tuple[str, ...] = ("AP", "PA")
#: What a radiograph's pixels are.
PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
SAMPLES_PER_PIXEL = 1
BITS_ALLOCATED = (8, 16)
#: Attributes that the site may allow to be absent (``--allow-missing NAME``), and their DICOM keywords.
OPTIONAL_ATTRIBUTES = {"body-part": "BodyPartExamined", "view": "ViewPosition"}
#: What the node needs to build and route a result; an instance without one is refused at C-STORE.
REQUIRED_AT_INTAKE = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "Modality")
#: C ABI flag bits (omsf2_runtime.h) of the options below.
FLAG_ANY_MODALITY = 1
FLAG_ALLOW_MISSING_BODY_PART = 2
FLAG_ALLOW_MISSING_VIEW = 4

__all__ = [
    "Accepts",
    "GatePolicy",
    "InputAttributes",
    "dicom_not_applicable",
    "missing_required",
    "not_applicable",
    "table",
]


def _norm(value: Any) -> str:
    """A code string as compared: surrounding spaces dropped, ASCII upper case (DICOM defined terms)."""
    text = "" if value is None else str(value)
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in text.strip(" \t\r\n\f\v"))


_CODE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ ")


def _terms(values: Iterable[Any], what: str) -> tuple[str, ...]:
    """Normalised, sorted, unique code strings (``cpp/rules.cpp``'s ``accepted_terms`` does the same)."""
    items = list(values)
    out = tuple(sorted({_norm(v) for v in items if isinstance(v, str)}))
    bad = len(out) == 0 or any(not isinstance(v, str) for v in items)
    if bad or any(not v or len(v) > 16 or not set(v) <= _CODE_CHARS for v in out):
        raise ValueError(f"{what} must be a non-empty list of DICOM code strings (letters, digits, '_')")
    return out


@dataclasses.dataclass(frozen=True)
class Accepts:
    """What a bundle's model accepts, from its manifest's ``accepts`` (sorted, upper case).

    Attributes:
        modalities: Modality values (0008,0060).
        body_parts: BodyPartExamined values (0018,0015).
        views: ViewPosition values (0018,5101).
    """

    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    body_parts: tuple[str, ...] = DEFAULT_BODY_PARTS
    views: tuple[str, ...] = DEFAULT_VIEWS

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", _terms(self.modalities, "accepts.modalities"))
        object.__setattr__(self, "body_parts", _terms(self.body_parts, "accepts.body_parts"))
        object.__setattr__(self, "views", _terms(self.views, "accepts.views"))

    @classmethod
    def from_manifest(cls, meta: dict[str, Any]) -> Accepts:
        """The ``accepts`` block of a manifest (the defaults where it has none).

        Raises:
            ValueError: ``accepts`` is not an object of three lists of code strings.
        """
        block = meta.get("accepts")
        if block is None:
            return cls()
        keys = {"modalities", "body_parts", "views"}
        if (
            not isinstance(block, dict)
            or set(block) - keys
            or not all(isinstance(block.get(k, []), list) for k in keys)
        ):
            raise ValueError(f"'accepts' must be an object with lists {', '.join(sorted(keys))}")
        defaults = cls()
        return cls(**{k: tuple(block.get(k) or getattr(defaults, k)) for k in keys})

    def to_dict(self) -> dict[str, list[str]]:
        """The manifest's ``accepts`` block."""
        return {"modalities": list(self.modalities), "body_parts": list(self.body_parts), "views": list(self.views)}


@dataclasses.dataclass(frozen=True)
class GatePolicy:
    """The rules as one deployment applies them: the bundle's accepts and the site's settings.

    Attributes:
        accepts: what the bundle declares.
        allow_missing: keys of :data:`OPTIONAL_ATTRIBUTES` that may be absent (``body-part``, ``view``).
        any_modality: skip rule 1 (``omsf2 predict --any-modality``; research only).
    """

    accepts: Accepts = dataclasses.field(default_factory=Accepts)
    allow_missing: frozenset[str] = frozenset()
    any_modality: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.allow_missing) - set(OPTIONAL_ATTRIBUTES)
        if unknown:
            raise ValueError(
                f"--allow-missing takes {', '.join(OPTIONAL_ATTRIBUTES)}; got {', '.join(sorted(unknown))}"
            )
        object.__setattr__(self, "allow_missing", frozenset(self.allow_missing))

    @property
    def flags(self) -> int:
        """The C ABI's flag bits (``OMSF2_GATE_*``) of this policy."""
        return (
            (FLAG_ANY_MODALITY if self.any_modality else 0)
            | (FLAG_ALLOW_MISSING_BODY_PART if "body-part" in self.allow_missing else 0)
            | (FLAG_ALLOW_MISSING_VIEW if "view" in self.allow_missing else 0)
        )


@dataclasses.dataclass(frozen=True)
class InputAttributes:
    """The attributes the rules read; None (or 0 for numbers) where the header has none.

    Attributes:
        modality: Modality.
        body_part: BodyPartExamined.
        view: ViewPosition.
        photometric: PhotometricInterpretation.
        samples_per_pixel: SamplesPerPixel (0: absent, read as 1).
        bits_allocated: BitsAllocated (0: absent).
        bits_stored: BitsStored (0: absent, read as bits_allocated).
    """

    modality: str | None = None
    body_part: str | None = None
    view: str | None = None
    photometric: str | None = None
    samples_per_pixel: int = 0
    bits_allocated: int = 0
    bits_stored: int = 0

    @classmethod
    def from_dataset(cls, ds: Any) -> InputAttributes:
        """Read the attributes from a pydicom Dataset (a value that does not parse counts as absent)."""

        def text(kw: str) -> str | None:
            try:
                value = ds.get(kw)
            except Exception:  # a malformed element: absent
                return None
            return None if value in (None, "") else str(value)

        def number(kw: str) -> int:
            try:
                return int(ds.get(kw) or 0)
            except Exception:
                return 0

        return cls(
            text("Modality"),
            text("BodyPartExamined"),
            text("ViewPosition"),
            text("PhotometricInterpretation"),
            number("SamplesPerPixel"),
            number("BitsAllocated"),
            number("BitsStored"),
        )


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def _coded_rule(value: str | None, allowed: tuple[str, ...], what: str, keyword: str, missing_ok: bool) -> str | None:
    """Rules 1-3: ``value`` must be one of ``allowed``; absent only when ``missing_ok``."""
    v = _norm(value)
    if not v:
        if missing_ok:
            return None
        return f"not applicable: no {keyword} (this bundle accepts {_listed(allowed)})"
    if v not in allowed:
        return f"not applicable: {what} {v} (this bundle accepts {_listed(allowed)})"
    return None


def not_applicable(attrs: InputAttributes, policy: GatePolicy | None = None) -> str | None:
    """Why an image must not be analysed under ``policy`` (the first rule it breaks), or None.

    The reason is one line starting ``not applicable:``; the C library's ``omsf2_check_input``
    returns the same line for the same attributes.
    """
    p = policy or GatePolicy()
    a = p.accepts
    why = None
    if not p.any_modality:
        why = _coded_rule(attrs.modality, a.modalities, "modality", "Modality", False)
    why = why or _coded_rule(
        attrs.body_part, a.body_parts, "body part", "BodyPartExamined", "body-part" in p.allow_missing
    )
    why = why or _coded_rule(attrs.view, a.views, "view", "ViewPosition", "view" in p.allow_missing)
    return why or _pixel_rule(attrs)


def _pixel_rule(attrs: InputAttributes) -> str | None:
    """Rule 4: a one-sample grayscale image of 8 or 16 bits."""
    photometric = _norm(attrs.photometric)
    if photometric not in PHOTOMETRIC:
        return (
            f"not applicable: photometric interpretation {photometric or 'missing'} "
            f"(a radiograph is {' or '.join(PHOTOMETRIC)})"
        )
    samples = attrs.samples_per_pixel or 1
    if samples != SAMPLES_PER_PIXEL:
        return f"not applicable: {samples} samples per pixel (a radiograph has {SAMPLES_PER_PIXEL})"
    if attrs.bits_allocated not in BITS_ALLOCATED:
        return (
            f"not applicable: {attrs.bits_allocated or 'no'} bits allocated "
            f"(a radiograph has {' or '.join(map(str, BITS_ALLOCATED))})"
        )
    stored = attrs.bits_stored or attrs.bits_allocated
    if not 1 <= stored <= attrs.bits_allocated:
        return f"not applicable: {stored} bits stored in {attrs.bits_allocated} allocated"
    return None


def missing_required(ds: Any) -> str | None:
    """The first of :data:`REQUIRED_AT_INTAKE` that ``ds`` lacks (or holds empty), as a reason; None if none."""
    for kw in REQUIRED_AT_INTAKE:
        try:
            value = ds.get(kw)
        except Exception:
            value = None
        if value in (None, "") or not str(value).strip():
            return f"missing required attribute {kw}"
    return None


def dicom_not_applicable(path: str | os.PathLike[str], policy: GatePolicy | None = None) -> str | None:
    """:func:`not_applicable` of a file's DICOM header; None for a PNG/JPEG (not gated) or a file read_image rejects.

    Only the header is read (no pixel data).
    """
    p = Path(path)
    if not p.is_file() or not is_dicom_file(p):
        return None
    try:
        import pydicom

        ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
    except Exception:
        return None  # a corrupt file: read_image says why
    return not_applicable(InputAttributes.from_dataset(ds), policy)


def table() -> dict[str, Any]:
    """The rules as JSON types, in the layout of the ``gating`` entry of ``omsf2_rules_json()``."""
    return {
        "modalities": list(DEFAULT_MODALITIES),
        "body_parts": list(DEFAULT_BODY_PARTS),
        "views": list(DEFAULT_VIEWS),
        "photometric": list(PHOTOMETRIC),
        "samples_per_pixel": SAMPLES_PER_PIXEL,
        "bits_allocated": list(BITS_ALLOCATED),
        "optional_attributes": dict(OPTIONAL_ATTRIBUTES),
        "flags": {"any_modality": FLAG_ANY_MODALITY, "allow_missing_body_part": FLAG_ALLOW_MISSING_BODY_PART,
                  "allow_missing_view": FLAG_ALLOW_MISSING_VIEW},
    }  # fmt: skip
