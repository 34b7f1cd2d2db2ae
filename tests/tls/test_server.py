"""ServerTLS over real handshakes: SNI choice, policy (versions, ALPN), mTLS modes.

Server: `build_server_context` + asyncio.start_server on loopback; client: a real
`ssl` context. Each case says what the client sends and what it must get back.
"""

from __future__ import annotations

import base64
import socket
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from gateway.config import ListenerTLS
from gateway.errors import ConfigErrors
from gateway.tls import build_server_context
from tests.tls.certs import CA, Issued, PemFiles
from tests.tls.handshake import TLSServer, client_context, handshake

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


def listener_tls(pairs: list[PemFiles], **kw: Any) -> ListenerTLS:
    certificates = [{"cert_file": p.cert_file, "key_file": p.key_file} for p in pairs]
    return ListenerTLS.model_validate({"certificates": certificates, **kw})


@pytest.fixture(scope="module")
def sni_certs(ca: CA) -> dict[str, Issued]:
    return {
        "default": ca.issue("default", dns=("default.example.com",)),
        "a": ca.issue("a", dns=("a.example.com", "a2.example.com")),
        "b": ca.issue("b", dns=("*.b.example.com",)),
    }


# (id, SNI sent, the certificate served, hostname checked by the client)
SNI = [
    ("exact-name", "a.example.com", "a", True),
    ("second-san-name", "a2.example.com", "a", True),
    ("wildcard", "x.b.example.com", "b", True),
    ("upper-case-sni", "A.Example.COM", "a", True),
    ("wildcard-is-one-label", "y.x.b.example.com", "default", False),
    ("wildcard-not-apex", "b.example.com", "default", False),
    ("unknown-name", "other.example.org", "default", False),
    ("no-sni", "", "default", False),
]  # fmt: skip


@pytest.mark.parametrize(("sni", "served", "check"), [c[1:] for c in SNI], ids=[c[0] for c in SNI])
async def test_sni_picks_the_certificate(
    tmp_path: Path, ca: CA, sni_certs: dict[str, Issued], sni: str, served: str, check: bool
) -> None:
    pairs = [cert.write(tmp_path, stem) for stem, cert in sni_certs.items()]
    server_tls = build_server_context(listener_tls(pairs))
    client = client_context(ca.write_ca(tmp_path), check_hostname=check)
    async with TLSServer(server_tls.context) as server:
        outcome = await handshake(server.port, client, sni)
    assert outcome.ok, outcome.error
    assert outcome.peer_der == sni_certs[served].der
    assert server_tls.certificate_for(sni or None) == pairs[list(sni_certs).index(served)].cert_file


async def test_explicit_server_names_replace_the_certificate_names(
    tmp_path: Path, ca: CA, sni_certs: dict[str, Issued]
) -> None:
    default = sni_certs["default"].write(tmp_path, "default")
    a = sni_certs["a"].write(tmp_path, "a")
    tls = ListenerTLS.model_validate(
        {
            "certificates": [
                {"cert_file": default.cert_file, "key_file": default.key_file},
                {"cert_file": a.cert_file, "key_file": a.key_file, "server_names": "a.example.com"},
            ]
        }
    )
    server_tls = build_server_context(tls)
    client = client_context(ca.write_ca(tmp_path))
    async with TLSServer(server_tls.context) as server:
        assert (await handshake(server.port, client, "a.example.com")).peer_der == sni_certs[
            "a"
        ].der
        # a2.example.com is in the certificate but not in server_names: the default answers
        assert (await handshake(server.port, client, "a2.example.com")).peer_der == sni_certs[
            "default"
        ].der


# (id, listener settings, client's max version, client ALPN, ok, version seen, ALPN seen)
POLICY = [
    ("default-negotiates-1.3", {}, None, ["h2", "http/1.1"], True, "TLSv1.3", "http/1.1"),
    ("default-accepts-1.2", {}, TLS12, ["http/1.1"], True, "TLSv1.2", "http/1.1"),
    ("min-1.3-refuses-1.2", {"min_version": "1.3"}, TLS12, None, False, None, None),
    ("min-1.3-accepts-1.3", {"min_version": "1.3"}, None, None, True, "TLSv1.3", None),
    # No overlap is not fatal in Python's ALPN callback (no ALPN, HTTP/1.1 spoken anyway)
    ("h2-only-client-gets-no-alpn", {}, None, ["h2"], True, "TLSv1.3", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "max_version", "alpn", "ok", "version", "selected"),
    [c[1:] for c in POLICY],
    ids=[c[0] for c in POLICY],
)
async def test_versions_and_alpn(
    tmp_path: Path,
    ca: CA,
    settings: dict[str, str],
    max_version: ssl.TLSVersion | None,
    alpn: list[str] | None,
    ok: bool,
    version: str | None,
    selected: str | None,
) -> None:
    pair = ca.issue(dns=("localhost",)).write(tmp_path, "server")
    server_tls = build_server_context(listener_tls([pair], **settings))
    client = client_context(ca.write_ca(tmp_path), max_version=max_version, alpn=alpn)
    async with TLSServer(server_tls.context) as server:
        outcome = await handshake(server.port, client, "localhost")
    assert outcome.ok is ok, outcome.error
    if ok:
        assert [(s.version, s.alpn) for s in server.seen] == [(version, selected)]
    else:
        assert server.seen == []


@pytest.fixture(scope="module")
def clients(ca: CA, other_ca: CA) -> dict[str, Issued]:
    return {
        "good": ca.issue("client one", client=True),
        "untrusted": other_ca.issue("client one", client=True),
        "expired": ca.issue("client one", client=True, days=-1),
    }


# (id, client_auth, client certificate sent, handshake ok, facts reach the server)
MTLS = [
    ("required-good", "required", "good", True, True),
    ("required-untrusted", "required", "untrusted", False, False),
    ("required-expired", "required", "expired", False, False),
    ("required-missing", "required", None, False, False),
    ("optional-good", "optional", "good", True, True),
    ("optional-missing", "optional", None, True, False),
    ("optional-untrusted", "optional", "untrusted", False, False),
    ("optional-expired", "optional", "expired", False, False),
    ("off-not-asked", "off", "good", True, False),
]  # fmt: skip


@pytest.mark.parametrize("max_version", [TLS12, TLS13], ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize(
    ("client_auth", "sent", "ok", "has_facts"), [c[1:] for c in MTLS], ids=[c[0] for c in MTLS]
)
async def test_client_certificates(
    tmp_path: Path,
    ca: CA,
    clients: dict[str, Issued],
    client_auth: str,
    sent: str | None,
    ok: bool,
    has_facts: bool,
    max_version: ssl.TLSVersion,
) -> None:
    pair = ca.issue(dns=("localhost",)).write(tmp_path, "server")
    ca_file = ca.write_ca(tmp_path)
    settings = {"client_auth": client_auth}
    if client_auth != "off":
        settings["client_ca_file"] = ca_file
    server_tls = build_server_context(listener_tls([pair], **settings))
    cert = clients[sent].write(tmp_path, "client") if sent else None
    client = client_context(ca_file, cert=cert, check_hostname=True, max_version=max_version)
    async with TLSServer(server_tls.context) as server:
        outcome = await handshake(server.port, client, "localhost")
    assert outcome.ok is ok, outcome.error
    assert len(server.seen) == (1 if ok else 0)
    if ok:
        facts = server.seen[0].facts
        assert (facts is not None) is has_facts
        if facts is not None:
            assert facts.der == clients["good"].der


async def test_client_certificate_facts(tmp_path: Path, ca: CA, clients: dict[str, Issued]) -> None:
    pair = ca.issue(dns=("localhost",)).write(tmp_path, "server")
    ca_file = ca.write_ca(tmp_path)
    tls = listener_tls([pair], client_auth="required", client_ca_file=ca_file)
    good = clients["good"]
    client = client_context(ca_file, cert=good.write(tmp_path, "client"))
    async with TLSServer(build_server_context(tls).context) as server:
        assert (await handshake(server.port, client, "localhost")).ok
    facts = server.seen[0].facts
    assert facts is not None
    value = facts.client_cert_header
    assert value.startswith(":") and value.endswith(":")
    assert base64.b64decode(value[1:-1], validate=True) == good.der
    assert facts.subject == "CN=client one"
    assert facts.issuer == "CN=gateway test CA"
    assert facts.sha256_fingerprint == good.cert.fingerprint(hashes.SHA256()).hex()
    assert facts.serial == format(good.cert.serial_number, "X")
    assert facts.not_after == good.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    if sys.version_info < (3, 13):  # no verified chain from the ssl module: header omitted
        assert facts.client_cert_chain_header is None
    else:
        assert facts.client_cert_chain_header == f":{base64.b64encode(ca.der).decode()}:"


# (id, what is wrong, "path: message" expected; {} is replaced with the file's path)
BUILD_ERRORS = [
    ("missing-cert", "missing-cert", "tls.certificates[0].cert_file: file not found: {cert}"),
    ("key-mismatch", "key-mismatch",
     "tls.certificates[0].key_file: key does not match certificate"),
    ("key-is-cert", "key-is-cert", "tls.certificates[0].key_file: {key} holds a certificate, not a "
     "private key"),
    ("missing-ca", "missing-ca", "tls.client_ca_file: file not found: {ca}"),
]  # fmt: skip


@pytest.mark.parametrize(("wrong", "expected"), [c[1:] for c in BUILD_ERRORS],
                         ids=[c[0] for c in BUILD_ERRORS])  # fmt: skip
def test_build_reports_every_file_problem(
    tmp_path: Path, ca: CA, wrong: str, expected: str
) -> None:
    pair = ca.issue(dns=("localhost",)).write(tmp_path, "server")
    ca_file = ca.write_ca(tmp_path)
    if wrong == "missing-cert":
        Path(pair.cert_file).unlink()
    elif wrong == "key-mismatch":
        Path(pair.key_file).write_bytes(
            Path(ca.issue().write(tmp_path, "other").key_file).read_bytes()
        )
    elif wrong == "key-is-cert":
        Path(pair.key_file).write_bytes(Path(pair.cert_file).read_bytes())
    elif wrong == "missing-ca":
        Path(ca_file).unlink()
    tls = listener_tls([pair], client_auth="optional", client_ca_file=ca_file)
    with pytest.raises(ConfigErrors) as info:
        build_server_context(tls)
    expected = expected.format(cert=pair.cert_file, key=pair.key_file, ca=ca_file)
    assert [str(e) for e in info.value.errors] == [expected]


def test_build_error_paths_carry_the_listener(tmp_path: Path, ca: CA) -> None:
    good = ca.issue(dns=("localhost",)).write(tmp_path, "good")
    tls = listener_tls([good, PemFiles(str(tmp_path / "no.pem"), str(tmp_path / "no-key.pem"))])
    with pytest.raises(ConfigErrors) as info:
        build_server_context(tls, at="listeners[1].tls")
    assert [str(e) for e in info.value.errors] == [
        f"listeners[1].tls.certificates[1].cert_file: file not found: {tmp_path / 'no.pem'}",
        f"listeners[1].tls.certificates[1].key_file: file not found: {tmp_path / 'no-key.pem'}",
    ]


def test_repr_and_expiries(tmp_path: Path, ca: CA, sni_certs: dict[str, Issued]) -> None:
    pairs = [cert.write(tmp_path, stem) for stem, cert in sni_certs.items()]
    server_tls = build_server_context(listener_tls(pairs, min_version="1.3"), at="listeners[0].tls")
    assert repr(server_tls) == (
        "<ServerTLS listeners[0].tls certificates=3 names=['*.b.example.com', 'a.example.com', "
        "'a2.example.com', 'default.example.com'] min_version=1.3 client_auth=off reloads=0 "
        "errors=0>"
    )
    assert server_tls.expiries() == {
        p.cert_file: c.cert.not_valid_after_utc.timestamp()
        for p, c in zip(pairs, sni_certs.values(), strict=True)
    }


def _serve_once(ctx: ssl.SSLContext, listener: socket.socket, result: list[str]) -> None:
    conn, _ = listener.accept()
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok\n")
            result.append("ok")
    except ssl.SSLError as e:
        result.append(str(e.reason))
    finally:
        conn.close()


# (id, client certificate, TLS version, server's reason, alert the client receives)
ALERTS = [
    ("untrusted-1.2", "untrusted", TLS12, "CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA"),
    ("untrusted-1.3", "untrusted", TLS13, "CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA"),
    ("expired-1.2", "expired", TLS12, "CERTIFICATE_VERIFY_FAILED",
     "SSLV3_ALERT_CERTIFICATE_EXPIRED"),
    ("missing-1.2", None, TLS12, "PEER_DID_NOT_RETURN_A_CERTIFICATE",
     "SSLV3_ALERT_HANDSHAKE_FAILURE"),
    ("missing-1.3", None, TLS13, "PEER_DID_NOT_RETURN_A_CERTIFICATE",
     "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sent", "version", "server_reason", "alert"), [c[1:] for c in ALERTS],
    ids=[c[0] for c in ALERTS],
)  # fmt: skip
def test_refused_client_certificates_get_a_tls_alert(
    tmp_path: Path,
    ca: CA,
    clients: dict[str, Issued],
    sent: str | None,
    version: ssl.TLSVersion,
    server_reason: str,
    alert: str,
) -> None:
    """Blocking sockets: the client must read the alert that names the reason.

    (asyncio's SSL transport aborts a failed handshake without flushing the alert, so
    the async tests above only see a reset or EOF; this pins down what the contexts do.)
    """
    pair = ca.issue(dns=("localhost",)).write(tmp_path, "server")
    ca_file = ca.write_ca(tmp_path)
    server_tls = build_server_context(
        listener_tls([pair], client_auth="required", client_ca_file=ca_file)
    )
    cert = clients[sent].write(tmp_path, "client") if sent else None
    client = client_context(ca_file, cert=cert, max_version=version)
    result: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=_serve_once, args=(server_tls.context, listener, result))
        thread.start()
        try:
            with (
                pytest.raises(ssl.SSLError) as info,
                socket.create_connection(listener.getsockname(), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.recv(16)  # TLS 1.3: the alert arrives after the client's handshake
        finally:
            thread.join(5)
    assert result == [server_reason]
    assert info.value.reason == alert
