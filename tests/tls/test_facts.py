"""ClientCertFacts from DER: RFC 9440 values, header-safe names, the cache, bad DER."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from gateway.tls import client_cert_facts
from gateway.tls.facts import sf_binary
from tests.tls.certs import CA


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_fields_and_rfc_9440_values(ca: CA) -> None:
    leaf = ca.issue("client one", client=True)
    intermediate = ca.issue_ca("intermediate")
    facts = client_cert_facts(leaf.der, [intermediate.der, ca.der])
    assert facts.client_cert_header == f":{b64(leaf.der)}:"
    assert facts.client_cert_chain_header == f":{b64(intermediate.der)}:, :{b64(ca.der)}:"
    assert facts.chain == (intermediate.der, ca.der)
    assert (facts.subject, facts.issuer) == ("CN=client one", "CN=gateway test CA")
    assert facts.sha256_fingerprint == leaf.cert.fingerprint(hashes.SHA256()).hex()
    assert facts.serial == format(leaf.cert.serial_number, "X")
    assert facts.not_after == leaf.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert repr(facts) == (
        f"<ClientCertFacts subject='CN=client one' issuer='CN=gateway test CA' "
        f"sha256={facts.sha256_fingerprint[:16]}... not_after={facts.not_after} "
        f"serial={facts.serial} chain=2>"
    )


def test_without_chain_the_chain_header_is_none(ca: CA) -> None:
    facts = client_cert_facts(ca.issue("c", client=True).der)
    assert (facts.client_cert_chain_header, facts.chain) == (None, ())


def test_names_are_ascii_with_rfc_4514_escapes(ca: CA) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Zoë, Inc"),
            x509.NameAttribute(NameOID.COMMON_NAME, "line\nbreak"),
        ]
    )
    facts = client_cert_facts(ca.issue(subject=subject, client=True).der)
    assert facts.subject == "CN=line\\0Abreak,O=Zo\\C3\\AB\\, Inc"
    assert facts.subject.isascii() and facts.subject.isprintable()


def test_facts_are_cached_per_certificate(ca: CA) -> None:
    der = ca.issue("c", client=True).der
    assert client_cert_facts(der) is client_cert_facts(bytes(bytearray(der)))
    assert client_cert_facts(der) is not client_cert_facts(der, [ca.der])


def test_der_that_cryptography_refuses_still_gets_the_header() -> None:
    junk = b"\x30\x03\x02\x01\x01"
    facts = client_cert_facts(junk)
    assert facts.client_cert_header == sf_binary(junk) == ":MAMCAQE=:"
    assert facts.subject == facts.issuer == facts.not_after == facts.serial == ""
    assert len(facts.sha256_fingerprint) == 64
