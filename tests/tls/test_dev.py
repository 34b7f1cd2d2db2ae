"""`gateway cert dev`: the files it writes make a working TLS (and mTLS) setup."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.config import ListenerTLS
from gateway.tls import build_server_context, cert_dev_command, write_dev_certs
from tests.tls.certs import PemFiles
from tests.tls.handshake import TLSServer, client_context, handshake


@pytest.mark.parametrize("sni", ["localhost", "127.0.0.1", "::1"])
async def test_dev_certificates_verify_with_the_dev_ca(tmp_path: Path, sni: str) -> None:
    paths = write_dev_certs(tmp_path / "dev", [])
    tls = ListenerTLS.model_validate(
        {
            "certificates": [{"cert_file": str(paths["cert"]), "key_file": str(paths["key"])}],
            "client_auth": "required",
            "client_ca_file": str(paths["ca"]),
        }
    )
    client = client_context(
        str(paths["ca"]),
        cert=PemFiles(str(paths["client_cert"]), str(paths["client_key"])),
        check_hostname=True,
    )
    async with TLSServer(build_server_context(tls).context) as server:
        outcome = await handshake(server.port, client, sni)
    assert outcome.ok, outcome.error
    facts = server.seen[0].facts
    assert facts is not None
    assert facts.subject == "CN=gateway development client,O=gateway development"


def test_files_and_modes(tmp_path: Path) -> None:
    paths = write_dev_certs(tmp_path, ["api.test"])
    assert {role: p.name for role, p in paths.items()} == {
        "ca": "ca.pem",
        "ca_key": "ca-key.pem",
        "cert": "server.pem",
        "key": "server-key.pem",
        "client_cert": "client.pem",
        "client_key": "client-key.pem",
    }
    for role, path in paths.items():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if role.endswith("key") else 0o644), role
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_running_again_keeps_the_ca(tmp_path: Path) -> None:
    first = write_dev_certs(tmp_path, ["localhost"])
    ca, server = first["ca"].read_bytes(), first["cert"].read_bytes()
    second = write_dev_certs(tmp_path, ["localhost", "app.test"])
    assert second["ca"].read_bytes() == ca
    assert second["cert"].read_bytes() != server


def test_command_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cert_dev_command(str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote to {tmp_path}:\n  ca.pem ")
    assert f"cert_file: {tmp_path / 'server.pem'}" in out
    assert "server certificate for localhost, 127.0.0.1, ::1" in out


def test_command_rejects_a_bad_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cert_dev_command(str(tmp_path / "x"), ["not a name"]) == 1
    assert capsys.readouterr().out == (
        "gateway cert dev: invalid name 'not a name': expected a host name or IP address\n"
    )
    assert not (tmp_path / "x").exists()
