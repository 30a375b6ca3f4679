"""Signed reports: an Ed25519 signature over a report's canonical JSON, so a report can be trusted
by whoever holds the signer's public key, not only checked for accidents.

The signature covers everything in the report but the signature itself: the verdict and every
result, the profile, the suite's version and git revision, the plugin distribution's name, version
and file hashes (the sha256 of its RECORD, and the files whose bytes no longer match it), and the
environment. ``rlport conformance keygen KEY`` writes a key pair; ``rlport conformance --sign KEY``
signs the report it writes; ``rlport conformance verify --key KEY.pub REPORT`` checks it.

Keys are the standard PEM encodings (PKCS#8 private, SubjectPublicKeyInfo public) through the
``cryptography`` package, so ``openssl pkey -in KEY -pubout`` gives the same public key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError
from rlport_conformance.report import canonical

ALGORITHM = "ed25519"
INSTALL = 'pip install "rlport-conformance[sign]"   (or: pip install cryptography)'


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ModuleNotFoundError as exc:
        raise ConfigError("signing and checking signatures needs the cryptography package", INSTALL) from exc
    return serialization, ed25519


def signed_bytes(report: dict[str, Any]) -> bytes:
    """What the signature covers: the canonical JSON of the report without its signature."""
    return canonical({k: v for k, v in report.items() if k != "signature"})


def fingerprint(public_raw: bytes) -> str:
    """A short, stable name for a public key: sha256 of its 32 raw bytes, first 16 hex digits."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def keygen(path: Path | str) -> tuple[Path, Path]:
    """Write a new Ed25519 private key to ``path`` (mode 0600) and its public key to ``path.pub``."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{str(path)!r} exists; rlport will not overwrite a key", "choose another path")
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    pub = path.with_name(path.name + ".pub")
    pub.write_bytes(public)
    return path, pub


def _load(path: Path | str, private: bool) -> Any:
    serialization, ed25519 = _crypto()
    kind = "private" if private else "public"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the {kind} key {str(path)!r}: {exc}", "pass an existing key file"
        ) from exc
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{str(path)!r} is not a PEM {kind} key: {exc}",
            "make a key pair with `rlport conformance keygen KEY` (KEY and KEY.pub)",
        ) from exc
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise ConfigError(
            f"{str(path)!r} holds a {type(key).__name__}; reports are signed with Ed25519 keys",
            "make a key pair with `rlport conformance keygen KEY`",
        )
    return key


def _raw_public(public_key: Any) -> bytes:
    serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(report: dict[str, Any], private_key: Path | str) -> dict[str, Any]:
    """Add a ``signature`` to ``report`` (in place, and returned) with the key in ``private_key``."""
    key = _load(private_key, private=True)
    report.pop("signature", None)
    value = key.sign(signed_bytes(report))
    raw = _raw_public(key.public_key())
    report["signature"] = {
        "algorithm": ALGORITHM,
        "public_key": base64.b64encode(raw).decode(),
        "key_fingerprint": fingerprint(raw),
        "value": base64.b64encode(value).decode(),
    }
    return report


def check(report: dict[str, Any], public_key: Path | str | None) -> tuple[list[str], str]:
    """Problems with ``report``'s signature, and a line saying what was proved.

    With ``public_key`` the report must be signed by that key. Without it a present signature is
    checked against the key it names (that proves the report is unchanged since it was signed, not
    who signed it), and an unsigned report is only noted."""
    signature = report.get("signature")
    if signature is None:
        if public_key is not None:
            return [f"the report is not signed, but --key {public_key} asks for a signature by that key"], ""
        return [], "unsigned (anyone can recompute a checksum; sign with --sign KEY)"
    if not isinstance(signature, dict) or signature.get("algorithm") != ALGORITHM:
        return [f"signature {signature!r} is not an {ALGORITHM} signature"], ""
    _, ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    try:
        embedded = base64.b64decode(signature["public_key"], validate=True)
        value = base64.b64decode(signature["value"], validate=True)
        key = ed25519.Ed25519PublicKey.from_public_bytes(embedded)
    except (KeyError, ValueError, TypeError) as exc:
        return [f"the signature block cannot be read: {exc}"], ""
    problems: list[str] = []
    if public_key is not None:
        trusted = _raw_public(_load(public_key, private=False))
        if trusted != embedded:
            problems.append(
                f"the report is signed by key {fingerprint(embedded)}, not by {public_key} "
                f"(key {fingerprint(trusted)})"
            )
            return problems, ""
    try:
        key.verify(value, signed_bytes(report))
    except InvalidSignature:
        return [
            f"the signature by key {fingerprint(embedded)} does not match the report's content "
            "(the report was changed after it was signed)"
        ], ""
    who = f"key {fingerprint(embedded)}"
    if public_key is None:
        return [], f"signed by {who}; pass --key PUB to check it is the key you trust"
    return [], f"signed by {who} ({public_key})"


def distribution_files(distribution: str | None) -> dict[str, Any]:
    """The file hashes of an installed distribution: sha256 of its RECORD, how many files RECORD
    hashes, and which of those no longer match their bytes on disk (edited after install)."""
    from importlib import metadata

    if not distribution:
        return {"record_sha256": None, "hashed_files": 0, "modified": []}
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return {"record_sha256": None, "hashed_files": 0, "modified": []}
    record = dist.read_text("RECORD") or ""
    modified: list[str] = []
    hashed = 0
    for file in dist.files or ():
        if file.hash is None or file.hash.mode != "sha256":
            continue
        hashed += 1
        try:
            data = file.locate().read_bytes()
        except OSError:
            modified.append(str(file))
            continue
        actual = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if actual != file.hash.value:
            modified.append(str(file))
    return {
        "record_sha256": hashlib.sha256(record.encode()).hexdigest() if record else None,
        "hashed_files": hashed,
        "modified": sorted(modified),
    }
