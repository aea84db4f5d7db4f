"""Ed25519 signatures of checkpoints and seals (the optional ``sign`` extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._format import JournalError

__all__ = ["SigningKey", "VerifyKey", "generate_keypair", "load_private_key", "load_public_key"]

_NEEDS_EXTRA = (
    "journal signatures need the 'cryptography' package: install the 'sign' extra "
    "(pip install 'ringbus[sign]')"
)


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise JournalError(_NEEDS_EXTRA) from None
    return ed25519


def _serialization() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:  # pragma: no cover - same package as above
        raise JournalError(_NEEDS_EXTRA) from None
    return serialization


class SigningKey:
    """An Ed25519 private key that signs a journal's checkpoints and seal.

    Parameters
    ----------
    key
        A ``cryptography`` ``Ed25519PrivateKey``; use :func:`load_private_key`
        to read one from PEM.
    """

    def __init__(self, key: Any) -> None:
        self._key = key

    def sign(self, message: bytes) -> str:
        """Return the signature of ``message`` as hex."""
        return str(self._key.sign(message).hex())

    def public(self) -> VerifyKey:
        """The matching public key."""
        return VerifyKey(self._key.public_key())


class VerifyKey:
    """An Ed25519 public key that checks a journal's signatures.

    Parameters
    ----------
    key
        A ``cryptography`` ``Ed25519PublicKey``; use :func:`load_public_key`
        to read one from PEM.
    """

    def __init__(self, key: Any) -> None:
        self._key = key

    def verify(self, message: bytes, signature: object) -> bool:
        """Whether ``signature`` (hex) is this key's signature of ``message``."""
        if not isinstance(signature, str) or len(signature) != 128:
            return False
        try:
            raw = bytes.fromhex(signature)
        except ValueError:
            return False
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(raw, message)
        except InvalidSignature:
            return False
        return True


def _read(source: str | os.PathLike[str] | bytes, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as error:
        raise JournalError(f"cannot read the {what} {path}: {error.strerror or error}") from None


def load_private_key(source: str | os.PathLike[str] | bytes | SigningKey) -> SigningKey:
    """Load an Ed25519 private key (PEM file or bytes) for signing.

    Parameters
    ----------
    source
        A PEM file path, PEM bytes, or a :class:`SigningKey` (returned as is).

    Returns
    -------
    SigningKey

    Raises
    ------
    JournalError
        The file cannot be read, is not an unencrypted Ed25519 PEM key, or
        the ``sign`` extra (``cryptography``) is not installed.
    """
    if isinstance(source, SigningKey):
        return source
    ed25519 = _ed25519()
    data = _read(source, "private key")
    try:
        key = _serialization().load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise JournalError(f"not a PEM private key without password: {error}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise JournalError("the private key is not an Ed25519 key")
    return SigningKey(key)


def load_public_key(source: str | os.PathLike[str] | bytes | VerifyKey) -> VerifyKey:
    """Load an Ed25519 public key (PEM file or bytes) for verifying.

    Parameters
    ----------
    source
        A PEM file path, PEM bytes, or a :class:`VerifyKey` (returned as is).

    Returns
    -------
    VerifyKey

    Raises
    ------
    JournalError
        The file cannot be read, is not an Ed25519 PEM public key, or the
        ``sign`` extra (``cryptography``) is not installed.
    """
    if isinstance(source, VerifyKey):
        return source
    ed25519 = _ed25519()
    data = _read(source, "public key")
    try:
        key = _serialization().load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        raise JournalError(f"not a PEM public key: {error}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise JournalError("the public key is not an Ed25519 key")
    return VerifyKey(key)


def generate_keypair(
    private_path: str | os.PathLike[str], public_path: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair as PEM files; return their paths.

    Parameters
    ----------
    private_path
        Where the private key goes (created with mode 0600; must not exist).
    public_path
        Where the public key goes; default ``private_path`` + ``".pub"``.

    Returns
    -------
    tuple of Path
        The private and the public key's paths.

    Raises
    ------
    JournalError
        The private key file exists already, a file cannot be written, or
        the ``sign`` extra (``cryptography``) is not installed.
    """
    ed25519 = _ed25519()
    serialization = _serialization()
    private = Path(private_path)
    public = Path(public_path) if public_path is not None else Path(f"{private}.pub")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise JournalError(f"cannot create {private}: {error.strerror or error}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(private_pem)
    try:
        public.write_bytes(public_pem)
    except OSError as error:
        raise JournalError(f"cannot write {public}: {error.strerror or error}") from None
    return private, public
