"""What a DICOM node is told: its options (validated where they are built) and what it accepts.

:class:`NodeConfig` and :class:`Destination` check every option when constructed, so bad input is
one ``ValueError`` naming what is valid before a model is loaded or a port bound;
:func:`pixel_problem` is the receipt check of an instance (cheap: header and payload length only,
a compressed payload that does not decode is caught later, when the node reads it).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from omsf2.serve.dicom_spool import valid_uid

#: Image storage SOP classes the node accepts: CR, and DX for presentation and for processing.
RADIOGRAPH_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
)
_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
ACCEPTED_TRANSFER_SYNTAXES = (
    *_NATIVE_SYNTAXES,
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
)
_AE = re.compile(r"^[ -~]{1,16}$")
# DICOM status codes the SCP returns (PS3.4 Annex B / PS3.7 C.4.2).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000


def _check_ae(value: str, what: str) -> str:
    if not isinstance(value, str) or not _AE.match(value) or value.strip() != value or "\\" in value:
        raise ValueError(f"{what} must be 1-16 printable ASCII characters, no leading/trailing spaces; got {value!r}")
    return value


def _check_port(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{what} must be a port number 0-65535, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Destination:
    """Where results go: ``AE@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AE@HOST:PORT``.

        Raises:
            ValueError: ``text`` is not of that form (the message says what is valid).
        """
        m = re.match(r"^([^@]+)@(.+):(\d+)$", text or "")
        if not m:
            raise ValueError(f"--forward must be AE@HOST:PORT (e.g. ORTHANC@127.0.0.1:4242), got {text!r}")
        port = int(m.group(3))
        if not 1 <= port <= 65535:
            raise ValueError(f"--forward port must be 1-65535, got {port}")
        return cls(_check_ae(m.group(1), "--forward AE title"), m.group(2), port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    """What ``omsf2 serve dicom`` runs.

    Attributes:
        model: bundle (or export) folder.
        forward: destination of the results.
        ae_title: the node's AE title.
        host: address to bind (127.0.0.1 unless another is chosen explicitly).
        port: DICOM port (0: any free port, logged in the ``listening`` event).
        allow_ae: calling AE titles accepted; empty accepts any.
        spool: spool folder.
        backend: runtime backend (see ``omsf2.runtime.BACKEND_NAMES``).
        threads: CPU threads for the backend (0: its default).
        retries: delivery attempts per result before it is marked failed.
        retry_delay: seconds before the first retry; doubles per attempt up to ``max_retry_delay``.
        max_retry_delay: cap of the backoff in seconds.
        batch_window: seconds the predictor waits for more images once one has arrived.
        drain_timeout: seconds a stopping node spends predicting and delivering what it holds.
    """

    model: str
    forward: Destination
    ae_title: str = "OMSF2"
    host: str = "127.0.0.1"
    port: int = 11112
    allow_ae: tuple[str, ...] = ()
    spool: str = "dicom-spool"
    backend: str = "auto"
    threads: int = 0
    retries: int = 8
    retry_delay: float = 2.0
    max_retry_delay: float = 300.0
    batch_window: float = 0.05
    drain_timeout: float = 30.0

    def __post_init__(self) -> None:
        _check_ae(self.ae_title, "--ae-title")
        _check_port(self.port, "--port")
        for ae in self.allow_ae:
            _check_ae(ae, "--allow-ae")
        if not isinstance(self.retries, int) or self.retries < 1:
            raise ValueError(f"--retries must be an integer >= 1, got {self.retries!r}")
        for name in ("retry_delay", "max_retry_delay", "batch_window", "drain_timeout"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v < 1e6:
                raise ValueError(f"{name.replace('_', '-')} must be a number of seconds >= 0, got {v!r}")


def pixel_problem(ds: Any, transfer_syntax: str) -> str | None:
    """Why a received dataset cannot be a radiograph to predict, or None.

    Checks the identifying UIDs, a one-sample grayscale header, and for native (uncompressed)
    transfer syntaxes that the pixel payload is as long as the header says.
    """
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not valid_uid(str(ds.get(kw, ""))):
            return f"missing or invalid {kw}"
    if "PixelData" not in ds:
        return "no pixel data"
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits, spp = int(ds.BitsAllocated), int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        photometric = str(ds.PhotometricInterpretation).strip()
    except (AttributeError, TypeError, ValueError) as e:
        return f"incomplete image pixel module ({e})"
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or spp != 1:
        return f"not a grayscale radiograph (PhotometricInterpretation {photometric}, SamplesPerPixel {spp})"
    if rows < 1 or cols < 1 or bits not in (8, 16):
        return f"unsupported image size {rows}x{cols} or BitsAllocated {bits}"
    if transfer_syntax in _NATIVE_SYNTAXES:
        expected = rows * cols * frames * bits // 8
        got = len(ds.PixelData)
        if got < expected:
            return f"pixel data has {got} bytes, the header needs {expected}"
    return None
