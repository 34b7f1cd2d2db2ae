"""Certificates for TLS tests, made with cryptography: CAs, server and client leaves.

`make_ca()` gives a CA; `ca.issue(...)` a leaf for DNS names and IPs (server) or a
client certificate, valid from an hour ago for `days` (negative `days` gives an
expired one). `write(dir, stem)` stores PEM files (stem.pem, stem-key.pem) and
returns their paths. EC P-256 keys keep generation and handshakes fast.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@dataclass(frozen=True)
class PemFiles:
    cert_file: str
    key_file: str


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, stem: str, *, chain: bytes = b"") -> PemFiles:
        """Write stem.pem (the certificate, then `chain`) and stem-key.pem."""
        cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
        cert_file.write_bytes(self.pem + chain)
        key_file.write_bytes(key_pem(self.key))
        return PemFiles(str(cert_file), str(key_file))


@dataclass
class CA(Issued):
    def write_ca(self, directory: Path, stem: str = "ca") -> str:
        path = directory / f"{stem}.pem"
        path.write_bytes(self.pem)
        return str(path)

    def issue(
        self,
        cn: str = "localhost",
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        client: bool = False,
        days: float = 30,
        ca: bool = False,
        subject: x509.Name | None = None,
    ) -> Issued:
        """A certificate signed by this CA, valid from an hour ago until `days` from now
        (negative: it expired). Server certificates get the SANs; `client` a clientAuth
        EKU; `ca` makes an intermediate CA."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        end = now + datetime.timedelta(days=days)
        start = min(now - HOUR, end - DAY)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject or name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        if not ca:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)

    def issue_ca(self, cn: str) -> CA:
        """An intermediate CA signed by this one."""
        issued = self.issue(cn, ca=True)
        return CA(issued.cert, issued.key)


def make_ca(cn: str = "gateway test CA", days: float = 365) -> CA:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - HOUR)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CA(cert, key)
