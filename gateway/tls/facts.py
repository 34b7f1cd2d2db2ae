"""Facts about a client's verified certificate: RFC 9440 headers and convenience values.

Where the bytes come from. A peer certificate on an established connection has been
verified: with client_auth 'optional' or 'required' OpenSSL fails the handshake on a
certificate it cannot verify, and with 'off' the server never asks for one. The leaf
comes from `getpeercert(binary_form=True)`. The verified chain needs
`SSLObject.get_verified_chain()`, new in Python 3.13; on 3.11 and 3.12 only the leaf
is available, so `client_cert_chain_header` is None and Client-Cert-Chain is omitted.

RFC 9440 section 2: Client-Cert is a Structured Field Byte Sequence, `:` base64(DER)
`:`; Client-Cert-Chain is a List of them, the issuer of the leaf first, never the leaf
itself (the trust anchor may be present or not; we pass what OpenSSL verified).

Subject and issuer are RFC 4514 strings with every character outside printable ASCII
escaped as UTF-8 hex pairs (`\\C3\\A9`, RFC 4514 section 2.4), so they are safe as
HTTP field values: no CR/LF, no obs-text. `serial` is upper-case hex as in nginx's
$ssl_client_serial; `not_after` is ISO 8601 in UTC ('2030-01-31T12:00:00Z').

Parsing costs tens of microseconds, so facts are cached per (leaf, chain) DER in an
LRU of 1024 entries: a keep-alive client, or a fleet of clients sharing few
certificates, is parsed once. A certificate OpenSSL accepted but cryptography refuses
(it is stricter about DER) still gets its Client-Cert value and fingerprint; the
parsed fields are then empty strings.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

__all__ = ["ClientCertFacts", "client_cert_facts", "facts_from_ssl_object", "sf_binary"]

log = logging.getLogger("gateway.tls")

CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True, repr=False)
class ClientCertFacts:
    """What the upstream may learn about a verified client certificate."""

    der: bytes
    subject: str
    issuer: str
    sha256_fingerprint: str
    not_after: str
    serial: str
    client_cert_header: str
    client_cert_chain_header: str | None
    chain: tuple[bytes, ...] = ()

    def __repr__(self) -> str:
        chain = "none" if self.client_cert_chain_header is None else str(len(self.chain))
        return (
            f"<ClientCertFacts subject={self.subject!r} issuer={self.issuer!r} "
            f"sha256={self.sha256_fingerprint[:16]}... not_after={self.not_after} "
            f"serial={self.serial} chain={chain}>"
        )


def sf_binary(data: bytes) -> str:
    """RFC 8941 section 3.3.5 Byte Sequence: ':' base64 ':'."""
    return f":{base64.b64encode(data).decode('ascii')}:"


def _ascii_dn(name: x509.Name) -> str:
    text = name.rfc4514_string()
    if text.isascii() and text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        if " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _facts(der: bytes, chain: tuple[bytes, ...]) -> ClientCertFacts:
    chain_header = ", ".join(sf_binary(c) for c in chain) if chain else None
    fingerprint = hashlib.sha256(der).hexdigest()
    try:
        cert = x509.load_der_x509_certificate(der)
        subject, issuer = _ascii_dn(cert.subject), _ascii_dn(cert.issuer)
        not_after = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        serial = format(cert.serial_number, "X")
    except ValueError as e:
        log.warning("client certificate %s not parsable by cryptography: %s", fingerprint, e)
        subject = issuer = not_after = serial = ""
    return ClientCertFacts(
        der=der,
        subject=subject,
        issuer=issuer,
        sha256_fingerprint=fingerprint,
        not_after=not_after,
        serial=serial,
        client_cert_header=sf_binary(der),
        client_cert_chain_header=chain_header,
        chain=chain,
    )


def client_cert_facts(der: bytes, chain: Sequence[bytes] = ()) -> ClientCertFacts:
    """Facts of the certificate `der` (DER); `chain` is its verified issuers, leaf excluded."""
    return _facts(bytes(der), tuple(chain))


def facts_from_ssl_object(sslobj: ssl.SSLObject | ssl.SSLSocket | None) -> ClientCertFacts | None:
    """The client certificate's facts on this connection; None without TLS or certificate.

    For a server transport: `transport.get_extra_info("ssl_object")`.
    """
    if sslobj is None:
        return None
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return None
    chain: tuple[bytes, ...] = ()
    get_chain = getattr(sslobj, "get_verified_chain", None)  # Python 3.13+
    if get_chain is not None:
        # The verified chain starts with the leaf itself; Client-Cert-Chain excludes it.
        chain = tuple(ssl.PEM_cert_to_DER_cert(c.public_bytes()) for c in get_chain()[1:])
    return _facts(der, chain)
