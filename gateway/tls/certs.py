"""Reading certificate, key and CA files with cryptography, with operator-sized messages.

OpenSSL's own errors ("[SSL: KEY_VALUES_MISMATCH] key values mismatch (_ssl.c:3900)")
name neither the file nor the fix, so every file is first read and parsed here, and a
problem becomes a `CertFileError(field, message)`: `field` is the config key to fix
('cert_file', 'key_file', 'client_ca_file', 'ca_file'), which the callers prefix
with the config path. The ssl module then loads the same files into its contexts
(`context.py`); what only OpenSSL rejects (a key too weak for its security level)
is translated there.

A key matches its certificate when their SubjectPublicKeyInfo encodings are equal.
Encrypted keys are refused: a gateway restarting unattended cannot type a passphrase.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = [
    "CertFileError",
    "CertFileErrors",
    "CertInfo",
    "dns_names",
    "expiry_warning",
    "file_digest",
    "load_chain",
    "load_pair",
    "not_after",
    "read_ca_pem",
    "read_certificates",
    "read_file",
    "read_private_key",
]

EXPIRY_WARNING_S = 14 * 86400.0
"""Certificates expiring within this are reported by `gateway check` (issue 3: 14 days)."""


class CertFileError(ValueError):
    """A problem with one TLS file; `field` is the config key naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class CertFileErrors(CertFileError):
    """Several CertFileErrors at once (a pair whose cert and key both fail to read)."""

    def __init__(self, errors: list[CertFileError]) -> None:
        first = errors[0]
        super().__init__(first.field, first.message)
        self.errors = errors


@dataclass(frozen=True, slots=True)
class CertInfo:
    """A parsed certificate chain (leaf first) whose key was checked to match."""

    cert_file: str
    key_file: str
    chain: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def not_after(self) -> float:
        return not_after(self.leaf)

    @property
    def dns_names(self) -> list[str]:
        return dns_names(self.leaf)

    def __repr__(self) -> str:
        return (
            f"<CertInfo {self.cert_file} subject={self.leaf.subject.rfc4514_string()!r} "
            f"names={self.dns_names} chain={len(self.chain)}>"
        )


def read_file(path: str, field: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CertFileError(field, f"file not found: {path}") from None
    except OSError as e:
        raise CertFileError(field, f"cannot read {path}: {e.strerror}") from None


def file_digest(path: str | None) -> bytes | None:
    """sha256 of the file's bytes; None when absent or unreadable (a change too)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).digest()
    except OSError:
        return None


def read_certificates(path: str, field: str, data: bytes | None = None) -> list[x509.Certificate]:
    """Every PEM certificate in the file, in order; at least one."""
    data = read_file(path, field) if data is None else data
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        if b"PRIVATE KEY-----" in data and b"CERTIFICATE-----" not in data:
            raise CertFileError(field, f"{path} holds a private key, not a certificate") from None
        raise CertFileError(field, f"no PEM certificate in {path}") from None
    return certs


def read_private_key(path: str, field: str, data: bytes | None = None) -> PrivateKeyTypes:
    data = read_file(path, field) if data is None else data
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertFileError(
            field, f"the key in {path} is encrypted (passphrases are not supported)"
        ) from None
    except UnsupportedAlgorithm:
        raise CertFileError(field, f"unsupported key type in {path}") from None
    except ValueError:
        if b"CERTIFICATE-----" in data and b"PRIVATE KEY-----" not in data:
            raise CertFileError(field, f"{path} holds a certificate, not a private key") from None
        raise CertFileError(field, f"no PEM private key in {path}") from None


def _spki(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    encoded: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


def load_pair(
    cert_file: str, key_file: str, cert_data: bytes | None = None, key_data: bytes | None = None
) -> CertInfo:
    """Parse a certificate chain and its key; CertFileError unless the key matches the leaf.

    Both files are read (and both reported) before the match is checked.
    """
    problems: list[CertFileError] = []
    chain: list[x509.Certificate] = []
    key: PrivateKeyTypes | None = None
    try:
        chain = read_certificates(cert_file, "cert_file", cert_data)
    except CertFileError as e:
        problems.append(e)
    try:
        key = read_private_key(key_file, "key_file", key_data)
    except CertFileError as e:
        problems.append(e)
    if problems:
        raise CertFileErrors(problems)
    assert key is not None
    if _spki(key.public_key()) != _spki(chain[0].public_key()):
        raise CertFileError("key_file", "key does not match certificate")
    return CertInfo(cert_file, key_file, tuple(chain))


def load_chain(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """`ctx.load_cert_chain` with OpenSSL's errors turned into CertFileErrors."""
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise CertFileError("key_file", "key does not match certificate") from None
        raise CertFileError("cert_file", f"OpenSSL cannot load the pair: {e.reason}") from None
    except OSError as e:  # the files changed between our read and OpenSSL's
        raise CertFileError("cert_file", f"cannot read the pair: {e.strerror}") from None


def read_ca_pem(path: str, field: str) -> str:
    """The CA bundle as canonical PEM text (comments dropped), checked by OpenSSL too."""
    certs = read_certificates(path, field)
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=pem)
    except ssl.SSLError as e:
        raise CertFileError(field, f"OpenSSL cannot load {path}: {e.reason}") from None
    return pem


def dns_names(cert: x509.Certificate) -> list[str]:
    """The certificate's subjectAltName DNS names, lower-cased; [] without the extension."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName)]


def not_after(cert: x509.Certificate) -> float:
    """The certificate's notAfter as unix time."""
    return cert.not_valid_after_utc.timestamp()


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expiry_warning(
    cert: x509.Certificate, now: float, within_s: float = EXPIRY_WARNING_S, what: str = ""
) -> str | None:
    """'certificate expires in 5 days (...)', 'certificate expired on ...', or None."""
    what = what or "certificate"
    end = not_after(cert)
    if end <= now:
        return f"{what} expired on {_iso(end)}"
    if end - now <= within_s:
        days = int((end - now) // 86400)
        when = "within a day" if days == 0 else f"in {days} day{'' if days == 1 else 's'}"
        return f"{what} expires {when} ({_iso(end)})"
    start = cert.not_valid_before_utc.timestamp()
    if start > now:
        return f"{what} is not valid before {_iso(start)}"
    return None
