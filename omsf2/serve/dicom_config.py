"""What a DICOM node is told: its options (validated where they are built) and what it accepts.

:class:`NodeConfig` and :class:`Destination` check every option when constructed, so bad input is
one ``ValueError`` naming what is valid before a model is loaded or a port bound;
:func:`pixel_problem` is the receipt check of an instance (cheap: the attributes a result needs,
the header and the payload length; a compressed payload that does not decode is caught later, when
the node reads it). Whether an image is one the model may analyse (modality, body part, view,
photometric interpretation ...) is not decided here: the node stores it and the clinical gating
(:mod:`omsf2.runtime.gating`) declines it with its reason.

Secure defaults: the node listens on 127.0.0.1; another address needs ``allow_ae`` (a node open
to every caller on a network is refused), the largest PDU it accepts is bounded, and so are the
pixels of one instance and the bytes the spool may hold (past either, the caller gets status
0xA700, out of resources).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path
from typing import Any

from omsf2.runtime.trust import TrustPolicy
from omsf2.serve.dicom_spool import valid_uid
from omsf2.serve.int8_monitor import MonitorSpec

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


#: Largest P-DATA PDU the node accepts (PS3.8 9.3.1): bounds what one read of a peer allocates.
DEFAULT_MAX_PDU = 262_144
#: Most pixels (rows x columns x frames) of one instance: 50 M, ten times a large chest radiograph.
DEFAULT_MAX_PIXELS = 50_000_000
#: Most bytes the spool may hold (received, results waiting, rejected) before new instances are refused.
DEFAULT_MAX_SPOOL_BYTES = 20 * 2**30
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def parse_size(text: str | int, what: str) -> int:
    """Bytes of ``"20G"``, ``"512M"``, ``"1048576"`` (K, M, G, T are powers of 1024).

    Raises:
        ValueError: not a size (the message names the option).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{what} must be a size such as 20G, 512M or 1048576 (bytes), got {text!r}")
    return int(float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper()))


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (127.0.0.0/8, ::1 or ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


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
class TlsConfig:
    """TLS of the node: its certificate and key, and the CA that vouches for its peers.

    Attributes:
        cert: the node's certificate (PEM), presented to callers and, forwarding, to the PACS.
        key: its private key (PEM).
        ca: CA certificates (PEM): with it, intake requires and verifies a client certificate
            (mutual TLS), and forwarding verifies the PACS against it.
    """

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        for flag, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-ca", self.ca)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{flag} '{path}' is not a file")


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    """What ``omsf2 serve dicom`` runs.

    Attributes:
        model: bundle folder (an export folder only with ``allow_unsigned``).
        forward: C-STORE destination of the results (``--forward``); this and/or ``forward_stow``.
        forward_stow: STOW-RS base URL of a DICOMweb server (``--forward-stow``), e.g.
            ``http://pacs:8042/dicom-web``.
        results: what each analysed image produces, from ``sr``, ``pm``, ``sc`` (the SR always).
        allow_missing: attributes the clinical gating lets be absent (``body-part``, ``view``).
        reanalyse: at start, run every kept source not yet analysed by this bundle and backend again.
        keep_sources: keep analysed images in the spool (``sources/``) for ``reanalyse``, evicted oldest
            first when the spool needs room.
        triton_url: the ``triton`` backend's server (``HOST:PORT`` gRPC, or ``http://HOST:PORT``).
        triton_model: the model name on that server (``omsf2 serve triton --model-name``).
        decode_workers: threads that gate, read and preprocess received images.
        result_workers: processes that build and encode the result objects (0: one thread in the node).
        monitor: the live INT8 monitor's settings (:class:`~omsf2.serve.int8_monitor.MonitorSpec`);
            None: no monitor.
        ae_title: the node's AE title.
        host: address to bind (127.0.0.1 unless another is chosen explicitly; another needs ``allow_ae``).
        port: plain DICOM port (0: any free port, logged in the ``listening`` event).
        allow_ae: calling AE titles accepted; empty accepts any (on a loopback host only).
        spool: spool folder.
        backend: runtime backend (see ``omsf2.runtime.BACKEND_NAMES``).
        threads: CPU threads for the backend (0: its default).
        retries: delivery attempts per result before it is reported as failing (it is still retried).
        retry_delay: seconds before the first retry; doubles per attempt up to ``max_retry_delay``.
        max_retry_delay: cap of the backoff in seconds (delivery and prediction).
        batch_window: seconds the predictor waits for more images once one has arrived.
        drain_timeout: seconds a stopping node spends predicting and delivering what it holds.
        tls: the node's certificate, key and CA (:class:`TlsConfig`).
        tls_port: TLS DICOM port (None: no TLS listener; 0: any free port).
        plain: listen on ``port`` without TLS too (False: TLS only).
        forward_tls: forward over TLS, verifying the PACS against ``tls.ca``.
        max_pdu: largest PDU accepted, in bytes.
        max_pixels: most rows x columns x frames of one instance.
        max_spool_bytes: most bytes the spool may hold before new instances are refused.
        trust: signing keys and/or a pinned manifest digest the bundle must satisfy.
        allow_unsigned: accept an export folder (not a bundle) as the model; logged and audited.
        audit: append the audit trail (JSON lines) here; None: no audit file.
        audit_phi: let patient names and IDs into the audit trail.
        audit_syslog: also send each audit event to ``udp://HOST:PORT`` or ``tcp://HOST:PORT`` (RFC 5424).
    """

    model: str
    forward: Destination | None = None
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
    tls: TlsConfig = dataclasses.field(default_factory=TlsConfig)
    tls_port: int | None = None
    plain: bool = True
    forward_tls: bool = False
    max_pdu: int = DEFAULT_MAX_PDU
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES
    trust: TrustPolicy | None = None
    allow_unsigned: bool = False
    audit: str | None = None
    audit_phi: bool = False
    audit_syslog: str | None = None
    forward_stow: str | None = None
    results: tuple[str, ...] = ("sr", "pm")
    allow_missing: tuple[str, ...] = ()
    reanalyse: bool = False
    keep_sources: bool = True
    triton_url: str | None = None
    triton_model: str = "omsf2"
    decode_workers: int = 2
    result_workers: int = 1
    monitor: MonitorSpec | None = None

    def __post_init__(self) -> None:
        _check_ae(self.ae_title, "--ae-title")
        self._check_outputs()
        _check_port(self.port, "--port")
        for ae in self.allow_ae:
            _check_ae(ae, "--allow-ae")
        if not is_loopback(self.host) and not self.allow_ae:
            raise ValueError(
                f"--host {self.host} reaches other machines: name the callers allowed with --allow-ae AE (repeat), "
                "or keep the default 127.0.0.1"
            )
        if not isinstance(self.retries, int) or self.retries < 1:
            raise ValueError(f"--retries must be an integer >= 1, got {self.retries!r}")
        for name in ("retry_delay", "max_retry_delay", "batch_window", "drain_timeout"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v < 1e6:
                raise ValueError(f"{name.replace('_', '-')} must be a number of seconds >= 0, got {v!r}")
        self._check_transport()
        bounds = (("--max-pdu", self.max_pdu, 4096, 2**26), ("--max-pixels", self.max_pixels, 64, 2**40))
        for flag, v, lo, hi in (*bounds, ("--max-spool", self.max_spool_bytes, 2**20, 2**50)):
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"{flag} must be an integer in [{lo}, {hi}], got {v!r}")
        if self.audit_syslog is not None:
            parse_syslog_url(self.audit_syslog)
        if self.monitor is not None and self.backend == "triton":
            raise ValueError(
                "--monitor compares a local INT8 model with FP32; with --backend triton the model runs "
                "on the server: run the monitor on a node with a local backend"
            )

    def _check_outputs(self) -> None:
        from omsf2.runtime.gating import GatePolicy
        from omsf2.serve.dicom_build import RESULT_KINDS

        if self.forward is None and self.forward_stow is None:
            raise ValueError("give --forward AE@HOST:PORT and/or --forward-stow URL: where results go")
        if self.forward_stow is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", self.forward_stow):
            raise ValueError(f"--forward-stow must be an http:// or https:// URL, got {self.forward_stow!r}")
        kinds = tuple(self.results)
        if not kinds or set(kinds) - set(RESULT_KINDS) or "sr" not in kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"--results takes sr and any of pm, sc (comma-separated), got {','.join(kinds)!r}")
        GatePolicy(allow_missing=frozenset(self.allow_missing))  # names what is valid
        if (self.backend == "triton") != (self.triton_url is not None):
            raise ValueError("--backend triton and --triton-url HOST:PORT go together")
        for name, v, hi in (
            ("--decode-workers", self.decode_workers, 64),
            ("--result-workers", self.result_workers, 64),
        ):
            low = 1 if name == "--decode-workers" else 0
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= hi:
                raise ValueError(f"{name} must be an integer in [{low}, {hi}], got {v!r}")

    def _check_transport(self) -> None:
        if self.tls_port is not None:
            _check_port(self.tls_port, "--tls-port")
            if self.tls.cert is None:
                raise ValueError("--tls-port needs --tls-cert and --tls-key (the node's certificate)")
        elif self.tls.cert is not None:
            raise ValueError("--tls-cert is given but no --tls-port: say which port listens with TLS")
        if not self.plain and self.tls_port is None:
            raise ValueError("--no-plain leaves no listener: add --tls-port")
        if self.forward_tls and self.tls.ca is None:
            raise ValueError("--forward-tls needs --tls-ca, the CA that vouches for the PACS's certificate")


def parse_syslog_url(url: str) -> tuple[str, str, int]:
    """(``udp`` or ``tcp``, host, port) of ``udp://HOST:PORT`` / ``tcp://HOST:PORT``.

    Raises:
        ValueError: any other form (TLS syslog, RFC 5425, is not supported).
    """
    m = re.match(r"^(udp|tcp)://(\[[^]]+\]|[^:/]+):(\d{1,5})$", url or "")
    if not m or not 1 <= int(m.group(3)) <= 65535:
        raise ValueError(f"--audit-syslog must be udp://HOST:PORT or tcp://HOST:PORT, got {url!r}")
    return m.group(1), m.group(2).strip("[]"), int(m.group(3))


def pixel_count(ds: Any) -> int:
    """Rows x columns x frames x samples of a dataset's header (0 when it has none readable)."""
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return int(ds.Rows) * int(ds.Columns) * max(1, frames) * max(1, int(ds.get("SamplesPerPixel", 1)))
    except (AttributeError, TypeError, ValueError):
        return 0


def pixel_problem(ds: Any, transfer_syntax: str) -> str | None:
    """Why a received dataset cannot be stored for analysis, or None.

    Checks the identifying UIDs and the attributes a result needs
    (:data:`omsf2.runtime.gating.REQUIRED_AT_INTAKE`: a missing Modality is refused here, never
    found while a result is encoded), a readable image pixel module, and for native (uncompressed)
    transfer syntaxes that the pixel payload is as long as the header says.
    """
    from omsf2.runtime.gating import missing_required

    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not valid_uid(str(ds.get(kw, ""))):
            return f"missing or invalid {kw}"
    why = missing_required(ds)
    if why is not None:
        return why
    if "PixelData" not in ds:
        return "no pixel data"
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits, spp = int(ds.BitsAllocated), int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        str(ds.PhotometricInterpretation)
    except (AttributeError, TypeError, ValueError) as e:
        return f"incomplete image pixel module ({e})"
    if rows < 1 or cols < 1 or not 1 <= bits <= 64 or not 1 <= spp <= 4:
        return f"unsupported image size {rows}x{cols}, BitsAllocated {bits} or SamplesPerPixel {spp}"
    if transfer_syntax in _NATIVE_SYNTAXES:
        expected = rows * cols * frames * spp * bits // 8
        got = len(ds.PixelData)
        if got < expected:
            return f"pixel data has {got} bytes, the header needs {expected}"
    return None
