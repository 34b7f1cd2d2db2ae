"""`gateway cert dev DIR`: a local CA and certificates for trying TLS on a laptop.

Writes, in DIR: ca.pem / ca-key.pem (a CA valid 10 years), server.pem /
server-key.pem (for the given names; those that parse as IP addresses become IP
SANs; default localhost, 127.0.0.1 and ::1) and client.pem / client-key.pem (a client
certificate from the same CA, for mTLS trials). Run again with other names, and the
existing CA is reused, so a browser or system store that trusts it keeps working.

Keys are EC P-256 (fast handshakes) and written 0600 through a temporary file and a
rename: a watching gateway never reads half a key. Leaf certificates last 825 days,
the longest that Apple platforms accept for TLS server certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.tls.certs import CertFileError, read_certificates, read_private_key

__all__ = ["DEFAULT_NAMES", "cert_dev_command", "write_dev_certs"]

DEFAULT_NAMES = ["localhost", "127.0.0.1", "::1"]
_DNS = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_FILES = {
    "ca": "ca.pem",
    "ca_key": "ca-key.pem",
    "cert": "server.pem",
    "key": "server-key.pem",
    "client_cert": "client.pem",
    "client_key": "client-key.pem",
}
_DAY = datetime.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gateway development"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if not _DNS.fullmatch(name.lower()):
                msg = f"invalid name {name!r}: expected a host name or IP address"
                raise ValueError(msg) from None
            entries.append(x509.DNSName(name.lower()))
    return x509.SubjectAlternativeName(entries)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"gateway development CA {now:%Y-%m-%d}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 3650 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    ca_file, key_file = directory / _FILES["ca"], directory / _FILES["ca_key"]
    if not (ca_file.exists() and key_file.exists()):
        return None
    cert = read_certificates(str(ca_file), "ca")[0]
    key = read_private_key(str(key_file), "ca_key")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertFileError("ca_key", f"{key_file} is not the EC key this command writes")
    return cert, key


def _issue(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    cn: str,
    now: datetime.datetime,
    *,
    san: x509.SubjectAlternativeName | None,
    usage: x509.ObjectIdentifier,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 825 * _DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode does not apply to an existing file
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_dev_certs(directory: Path, names: list[str]) -> dict[str, Path]:
    """Write the CA, server and client files; their paths by role.

    Roles: 'ca', 'ca_key', 'cert', 'key', 'client_cert', 'client_key'. An existing
    ca.pem + ca-key.pem pair is reused. ValueError for a name that is neither a host
    name nor an IP address.
    """
    names = names or DEFAULT_NAMES
    san = _san(names)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    paths = {role: directory / file for role, file in _FILES.items()}
    loaded = _load_ca(directory)
    ca, ca_key = loaded if loaded is not None else _make_ca(now)
    if loaded is None:
        _write(paths["ca_key"], _key_pem(ca_key), 0o600)
        _write(paths["ca"], _pem(ca), 0o644)
    server, server_key = _issue(
        ca, ca_key, names[0], now, san=san, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    _write(paths["key"], _key_pem(server_key), 0o600)
    _write(paths["cert"], _pem(server), 0o644)
    client, client_key = _issue(
        ca, ca_key, "gateway development client", now, san=None,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )  # fmt: skip
    _write(paths["client_key"], _key_pem(client_key), 0o600)
    _write(paths["client_cert"], _pem(client), 0o644)
    return paths


def cert_dev_command(directory: str, names: list[str] | None = None) -> int:
    """`gateway cert dev DIR [NAME...]`: write the files and say how to use them."""
    try:
        paths = write_dev_certs(Path(directory), list(names or DEFAULT_NAMES))
    except (OSError, ValueError) as e:
        print(f"gateway cert dev: {e}")
        return 1
    print(f"wrote to {directory}:")
    notes = {
        "ca": "the CA: trust it (curl --cacert, browser) to accept the server certificate",
        "ca_key": "the CA's key (0600): keep it private, it signs for any name",
        "cert": f"server certificate for {', '.join(names or DEFAULT_NAMES)}",
        "key": "server key (0600)",
        "client_cert": "client certificate for mTLS trials (curl --cert)",
        "client_key": "client key (0600) (curl --key)",
    }
    for role, path in paths.items():
        print(f"  {path.name:<16} {notes[role]}")
    print(
        "\nlisteners:\n"
        "  - address: 127.0.0.1:8443\n"
        "    tls:\n"
        "      certificates:\n"
        f"        - cert_file: {paths['cert']}\n"
        f"          key_file: {paths['key']}\n"
        f"\ncurl --cacert {paths['ca']} https://localhost:8443/"
    )
    return 0
