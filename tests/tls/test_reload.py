"""Certificate hot reload: rewritten files reach new handshakes; broken files change nothing.

Files are rewritten in place (same paths) between real handshakes; no sleeps, since
reload compares contents, not mtimes.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gateway.tls import ServerTLS, build_server_context
from tests.tls.certs import CA, Issued, PemFiles, key_pem
from tests.tls.handshake import TLSServer, client_context, handshake
from tests.tls.test_server import listener_tls


def put(path: str, data: bytes | None) -> None:
    """Write `data` to `path`, or remove the file for None."""
    if data is None:
        Path(path).unlink()
    else:
        Path(path).write_bytes(data)


def rewrite(files: PemFiles, cert: Issued, *, key: bool = True, cert_too: bool = True) -> None:
    if cert_too:
        Path(files.cert_file).write_bytes(cert.pem)
    if key:
        Path(files.key_file).write_bytes(key_pem(cert.key))


async def served(server_tls: ServerTLS, ca_file: str, sni: str = "localhost") -> bytes | None:
    async with TLSServer(server_tls.context) as server:
        outcome = await handshake(server.port, client_context(ca_file), sni)
    assert outcome.ok, outcome.error
    return outcome.peer_der


async def test_new_handshakes_get_the_new_certificate(tmp_path: Path, ca: CA) -> None:
    v1, v2 = ca.issue(dns=("localhost",)), ca.issue(dns=("localhost",))
    files = v1.write(tmp_path, "server")
    ca_file = ca.write_ca(tmp_path)
    server_tls = build_server_context(listener_tls([files]))
    assert server_tls.reload_if_changed() is False  # nothing changed yet
    assert await served(server_tls, ca_file) == v1.der

    rewrite(files, v2)
    assert server_tls.reload_if_changed() is True
    assert await served(server_tls, ca_file) == v2.der
    assert server_tls.reload_if_changed() is False
    assert server_tls.reloads == 1
    assert server_tls.expiries() == {files.cert_file: v2.cert.not_valid_after_utc.timestamp()}


async def test_connection_made_before_a_reload_keeps_its_certificate(
    tmp_path: Path, ca: CA
) -> None:
    v1, v2 = ca.issue(dns=("localhost",)), ca.issue(dns=("localhost",))
    files = v1.write(tmp_path, "server")
    server_tls = build_server_context(listener_tls([files]))
    async with TLSServer(server_tls.context) as server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=client_context(ca.write_ca(tmp_path)),
            server_hostname="localhost",
        )  # fmt: skip
        rewrite(files, v2)
        assert server_tls.reload_if_changed()
        assert await reader.readline() == b"ok\n"
        assert writer.get_extra_info("ssl_object").getpeercert(binary_form=True) == v1.der
        writer.close()


async def test_a_broken_reload_keeps_the_old_certificate(
    tmp_path: Path, ca: CA, caplog: pytest.LogCaptureFixture
) -> None:
    v1, v2 = ca.issue(dns=("localhost",)), ca.issue(dns=("localhost",))
    files = v1.write(tmp_path, "server")
    ca_file = ca.write_ca(tmp_path)
    server_tls = build_server_context(listener_tls([files]), at="listeners[0].tls")

    put(files.key_file, b"-----BEGIN PRIVATE KEY-----\ngarbage\n")
    with caplog.at_level(logging.ERROR, logger="gateway.tls"):
        assert server_tls.reload_if_changed() is False
        assert server_tls.reload_if_changed() is False  # same broken content: logged once
    expected = f"listeners[0].tls.certificates[0].key_file: no PEM private key in {files.key_file}"
    assert [str(e) for e in server_tls.errors] == [expected]
    assert [r.getMessage() for r in caplog.records] == [
        f"TLS reload failed, keeping the old certificate: {expected}"
    ]
    assert "errors=1" in repr(server_tls)
    assert await served(server_tls, ca_file) == v1.der

    rewrite(files, v2)
    assert server_tls.reload_if_changed() is True
    assert server_tls.errors == []
    assert await served(server_tls, ca_file) == v2.der


async def test_certificate_then_key_written_one_at_a_time(tmp_path: Path, ca: CA) -> None:
    v1, v2 = ca.issue(dns=("localhost",)), ca.issue(dns=("localhost",))
    files = v1.write(tmp_path, "server")
    ca_file = ca.write_ca(tmp_path)
    server_tls = build_server_context(listener_tls([files]))

    rewrite(files, v2, key=False)  # a poll lands between the two writes
    assert server_tls.reload_if_changed() is False
    assert [e.message for e in server_tls.errors] == ["key does not match certificate"]
    assert await served(server_tls, ca_file) == v1.der

    rewrite(files, v2, cert_too=False)
    assert server_tls.reload_if_changed() is True
    assert await served(server_tls, ca_file) == v2.der


async def test_files_restored_after_a_failed_reload_clear_the_error(tmp_path: Path, ca: CA) -> None:
    v1 = ca.issue(dns=("localhost",))
    files = v1.write(tmp_path, "server")
    server_tls = build_server_context(listener_tls([files]))
    put(files.cert_file, None)
    assert server_tls.reload_if_changed() is False
    assert [e.message for e in server_tls.errors] == [f"file not found: {files.cert_file}"]
    put(files.cert_file, v1.pem)
    assert server_tls.reload_if_changed() is False  # the served content again
    assert server_tls.errors == []


async def test_reload_updates_sni_names_from_the_new_certificate(tmp_path: Path, ca: CA) -> None:
    default = ca.issue(dns=("default.example.com",)).write(tmp_path, "default")
    old, new = ca.issue(dns=("a.example.com",)), ca.issue(dns=("a.example.com", "c.example.com"))
    files = old.write(tmp_path, "a")
    ca_file = ca.write_ca(tmp_path)
    server_tls = build_server_context(listener_tls([default, files]))
    assert server_tls.certificate_for("c.example.com") == default.cert_file

    rewrite(files, new)
    assert server_tls.reload_if_changed() is True
    assert await served(server_tls, ca_file, "c.example.com") == new.der


async def test_a_new_client_ca_is_trusted_after_reload(
    tmp_path: Path, ca: CA, other_ca: CA
) -> None:
    files = ca.issue(dns=("localhost",)).write(tmp_path, "server")
    server_ca = ca.write_ca(tmp_path, "clients-ca")
    server_tls = build_server_context(
        listener_tls([files], client_auth="required", client_ca_file=server_ca)
    )
    client = client_context(
        ca.write_ca(tmp_path), cert=other_ca.issue("c", client=True).write(tmp_path, "client")
    )
    async with TLSServer(server_tls.context) as server:
        assert not (await handshake(server.port, client, "localhost")).ok

        other_ca.write_ca(tmp_path, "clients-ca")
        assert server_tls.reload_if_changed() is True
        assert (await handshake(server.port, client, "localhost")).ok

        put(server_ca, b"not a CA\n")  # broken: the current CA stays
        assert server_tls.reload_if_changed() is False
        assert [str(e) for e in server_tls.errors] == [
            f"tls.client_ca_file: no PEM certificate in {server_ca}"
        ]
        assert (await handshake(server.port, client, "localhost")).ok
