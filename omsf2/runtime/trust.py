"""Who may say which bundle runs: Ed25519 signatures over a bundle's manifest, and pinned digests.

A bundle's ``manifest.json`` holds the sha256 of every other file, so a check of the manifest is a
check of the whole bundle. The hashes alone catch corruption, not tampering: whoever can write the
folder can rewrite the manifest too. Two things close that gap, each optional, both allowed at once
(:class:`TrustPolicy`):

* **a signature**: ``omsf2 keygen`` makes an Ed25519 key pair (``PREFIX.key``, PKCS#8 PEM, mode
  0600; ``PREFIX.pub``, SubjectPublicKeyInfo PEM) and ``omsf2 bundle --sign PREFIX.key`` writes
  ``manifest.sig`` beside the manifest: a small JSON document with the signing key's id (the
  sha256 of its 32 raw bytes) and the signature over the manifest's exact bytes, in hex. A
  deployment passes the public keys it trusts (``--trust PUBKEY``, repeatable);
* **a pinned digest**: the manifest's sha256, the bundle's id that ``omsf2 bundle`` prints
  (``--expect-sha256``): this exact bundle and no other.

When a policy is configured the check runs on the manifest's bytes before any model file is read,
and an unsigned bundle, a key not trusted, a signature that does not verify or another digest is
one line (:class:`~omsf2.runtime.bundle.BundleError`). The C library checks the same file the same
way (``omsf2/runtime/cpp/trust.cpp``: the digest always, the signature where it was built with
OpenSSL's libcrypto). The trade-off: a signature covers the manifest, so it is made when the bundle
is (``omsf2 bundle --sign``); re-signing means rebuilding the bundle, which keeps one signer per
bundle and nothing to merge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

SIGNATURE_FILE = "manifest.sig"
SIGNATURE_FORMAT = "omsf2-signature"
SIGNATURE_FORMAT_VERSION = 1
ALGORITHM = "ed25519"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")

__all__ = [
    "SIGNATURE_FILE",
    "TrustError",
    "TrustPolicy",
    "generate_keypair",
    "key_id",
    "load_public_key",
    "sign_manifest",
    "verify_manifest",
]


class TrustError(ValueError):
    """A bundle the trust policy refuses, or a key that cannot be used (one line)."""


def key_id(raw_public_key: bytes) -> str:
    """A public key's id: the sha256 of its 32 raw bytes, in hex."""
    return hashlib.sha256(raw_public_key).hexdigest()


def _cryptography() -> Any:
    # cryptography is imported only where a signature is made or checked: a pinned digest needs none.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The 32 raw bytes of an Ed25519 public key in a PEM (``omsf2 keygen``'s ``.pub``) file.

    Raises:
        TrustError: the file is missing or holds no Ed25519 public key.
    """
    serialization, ed25519 = _cryptography()
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except OSError as e:
        raise TrustError(f"--trust '{p}': {e.strerror or e}") from None
    except ValueError:
        raise TrustError(f"--trust '{p}' is not a PEM public key (omsf2 keygen writes one: PREFIX.pub)") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise TrustError(f"--trust '{p}' is not an Ed25519 public key")
    return bytes(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@dataclasses.dataclass(frozen=True)
class TrustPolicy:
    """Which bundles may run: signed by one of ``keys``, and/or with manifest sha256 ``expect_sha256``.

    Attributes:
        keys: raw Ed25519 public keys (32 bytes each) of the signers trusted; empty: no signature needed.
        expect_sha256: the manifest's sha256 that must match (lower-case hex); None: any.
    """

    keys: tuple[bytes, ...] = ()
    expect_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.expect_sha256 is not None:
            digest = str(self.expect_sha256).strip().lower()
            if not _HEX64.match(digest):
                raise TrustError(f"--expect-sha256 must be 64 hex digits (a bundle's manifest sha256), got {digest!r}")
            object.__setattr__(self, "expect_sha256", digest)
        for k in self.keys:
            if not isinstance(k, bytes) or len(k) != 32:
                raise TrustError("a trusted key must be 32 raw Ed25519 public-key bytes")

    @classmethod
    def from_options(
        cls, trust: list[str] | tuple[str, ...] | None = None, expect_sha256: str | None = None
    ) -> TrustPolicy:
        """A policy from ``--trust PUBKEY`` paths and ``--expect-sha256``; the keys are read now.

        Raises:
            TrustError: a key file that is missing or not an Ed25519 public key, or a malformed digest.
        """
        return cls(tuple(load_public_key(p) for p in trust or ()), expect_sha256 or None)

    @property
    def configured(self) -> bool:
        """Whether the policy asks anything (a signature, a digest, or both)."""
        return bool(self.keys) or self.expect_sha256 is not None


def generate_keypair(prefix: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: ``PREFIX.key`` (private, PKCS#8 PEM, mode 0600) and ``PREFIX.pub``.

    The private key is created with ``O_EXCL`` and mode 0600 in one call, so it is never readable
    by others, not even for an instant, and an existing key is never overwritten.

    Returns:
        (private key path, public key path).

    Raises:
        TrustError: either file exists, or the folder cannot be written.
    """
    serialization, ed25519 = _cryptography()
    base = Path(prefix)
    key_path, pub_path = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for p in (key_path, pub_path):
        if p.exists():
            raise TrustError(f"'{p}' exists; keygen never overwrites a key (choose another --out)")
    if not base.parent.is_dir():
        raise TrustError(f"--out '{base}': folder '{base.parent}' does not exist")
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        from omsf2.fileio import atomic_path

        with atomic_path(pub_path) as tmp:
            tmp.write_bytes(pub)
    except OSError as e:
        key_path.unlink(missing_ok=True)
        raise TrustError(f"cannot write '{key_path}': {e.strerror or e}") from None
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return key_path, pub_path


def sign_manifest(manifest: bytes, private_key_path: str | os.PathLike[str]) -> bytes:
    """The ``manifest.sig`` document for ``manifest`` (the exact bytes), signed with the PEM private key.

    Raises:
        TrustError: the key file is missing or not an unencrypted Ed25519 private key.
    """
    serialization, ed25519 = _cryptography()
    p = Path(private_key_path)
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except OSError as e:
        raise TrustError(f"--sign '{p}': {e.strerror or e}") from None
    except (ValueError, TypeError):
        raise TrustError(f"--sign '{p}' is not an unencrypted PEM private key (omsf2 keygen writes one)") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise TrustError(f"--sign '{p}' is not an Ed25519 private key")
    raw_pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    doc = {
        "format": SIGNATURE_FORMAT,
        "format_version": SIGNATURE_FORMAT_VERSION,
        "algorithm": ALGORITHM,
        "key_id": key_id(raw_pub),
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "signature": key.sign(manifest).hex(),
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _read_signature(root: Path) -> dict[str, Any] | None:
    """The parsed ``manifest.sig`` of ``root``, None when there is none.

    Raises:
        TrustError: a signature file that is not a valid omsf2 signature document.
    """
    from omsf2.runtime.rules import ManifestJSONError, loads_json

    path = root / SIGNATURE_FILE
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise TrustError(f"bundle '{root}': {SIGNATURE_FILE} is not a plain file")
    if not path.exists():
        return None
    try:
        doc = loads_json(path.read_bytes())
    except (OSError, ManifestJSONError) as e:
        raise TrustError(f"bundle '{root}': {SIGNATURE_FILE} is not valid ({e})") from None
    ok = (
        isinstance(doc, dict)
        and doc.get("format") == SIGNATURE_FORMAT
        and doc.get("algorithm") == ALGORITHM
        and isinstance(doc.get("key_id"), str)
        and _HEX64.match(doc["key_id"])
        and isinstance(doc.get("signature"), str)
        and _HEX128.match(doc["signature"])
    )
    if not ok:
        raise TrustError(f"bundle '{root}': {SIGNATURE_FILE} is not an omsf2 Ed25519 signature")
    version = doc.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= SIGNATURE_FORMAT_VERSION:
        raise TrustError(f"bundle '{root}': {SIGNATURE_FILE} has format version {version!r}; this omsf2 reads 1")
    return doc


def verify_manifest(root: Path, manifest: bytes, policy: TrustPolicy) -> str | None:
    """Hold a bundle's manifest bytes to ``policy``; the signer's key id (None when unsigned).

    Without a configured policy a present signature is still read and reported (never trusted
    for anything); a malformed one is refused.

    Raises:
        TrustError: the digest is not the pinned one, the bundle is unsigned or signed by a key not
            trusted, or the signature does not verify (the manifest changed after signing).
    """
    digest = hashlib.sha256(manifest).hexdigest()
    if policy.expect_sha256 is not None and digest != policy.expect_sha256:
        raise TrustError(
            f"bundle '{root}': manifest sha256 {digest[:16]}... is not the pinned --expect-sha256 "
            f"{policy.expect_sha256[:16]}... (another bundle, or this one changed)"
        )
    doc = _read_signature(root)
    if not policy.keys:
        return None if doc is None else str(doc["key_id"])
    if doc is None:
        raise TrustError(f"bundle '{root}' is not signed (no {SIGNATURE_FILE}) and --trust requires a signature")
    trusted = {key_id(k): k for k in policy.keys}
    key = trusted.get(doc["key_id"])
    if key is None:
        ids = ", ".join(k[:16] for k in trusted)
        raise TrustError(
            f"bundle '{root}' is signed by key {doc['key_id'][:16]}..., which is not a --trust key ({ids}...)"
        )
    _, ed25519 = _cryptography()
    from cryptography.exceptions import InvalidSignature

    try:
        ed25519.Ed25519PublicKey.from_public_bytes(key).verify(bytes.fromhex(doc["signature"]), manifest)
    except InvalidSignature:
        raise TrustError(
            f"bundle '{root}': the signature does not verify against manifest.json (the manifest changed after signing)"
        ) from None
    return str(doc["key_id"])
