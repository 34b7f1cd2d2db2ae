"""The admin token: required off loopback (the gateway refuses to start without one),
required everywhere once configured, compared in constant time; probes and the
dashboard's static files stay open (the page asks for the token)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import TOKEN, StartGateway, admin_config
from tests.support import ROOT, free_port, write_config


def token_file(path: Path) -> Any:
    def edit(cfg: dict[str, Any]) -> None:
        path.write_text(f"  {TOKEN}\n")
        cfg["admin"] = {
            "address": cfg["admin"]["address"].replace("127.0.0.1", "0.0.0.0"),
            "token_file": str(path),
        }

    return edit


def loopback_token(cfg: dict[str, Any]) -> None:
    cfg["admin"] = {
        "address": cfg["admin"]["address"].replace("127.0.0.1", "127.0.0.2"),
        "token": TOKEN,
    }


# (id, workers, config edit, host the admin listener is reached at)
CASES = [
    ("any-address-token-file-two-workers", 2, "file", "127.0.0.1"),
    ("loopback-127.0.0.2-with-token", 1, "inline", "127.0.0.2"),
]


@pytest.mark.parametrize(
    ("workers", "kind", "host"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_token_required(
    start_gateway: StartGateway, tmp_path: Path, workers: int, kind: str, host: str
) -> None:
    edit = token_file(tmp_path / "token") if kind == "file" else loopback_token
    gw = await start_gateway(workers, edit=edit, admin_host=host)
    admin = gw.admin
    for path in ("/api/status", "/api/rollouts", "/metrics", "/bans", "/api/openapi.json"):
        status, body = await admin.call("GET", path)
        assert status == 401 and body == {"error": "a bearer token is required"}, path
        assert (await admin.call("GET", path, token="x" * len(TOKEN)))[0] == 401, path
        assert (await admin.call("GET", path, token=TOKEN))[0] in (200, 404), path
    assert (await admin.call("POST", "/api/rollouts/users/pause"))[0] == 401
    assert (await admin.call("POST", "/api/reload", token=TOKEN[:-1]))[0] == 401
    status, body = await admin.call("GET", "/api/status", token=TOKEN)
    assert status == 200 and len(body["workers"]) == workers
    for path in ("/healthz", "/readyz", "/", "/dashboard/app.js"):  # probes, static page
        assert (await admin.call("GET", path))[0] == 200, path
    async with admin.session.get(admin.base + "/api/status") as r:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def run_gateway(path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *command, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


# (id, admin section, exit code of `run`, expected line)
REFUSALS = [
    (
        "any-address-without-token",
        {"address": "0.0.0.0:{port}"},
        2,
        "admin: address '0.0.0.0:{port}' is not loopback: set admin.token or admin.token_file",
    ),
    (
        "unreadable-token-file",
        {"token_file": "/nonexistent/token"},
        2,
        "admin.token_file: cannot read '/nonexistent/token'",
    ),
    (
        "short-token",
        {"address": "0.0.0.0:{port}", "token": "short"},
        2,
        "admin.token: String should have at least 16 characters",
    ),
]


@pytest.mark.parametrize(
    ("admin", "code", "line"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS]
)
async def test_refuses_to_start(
    tmp_path: Path, admin: dict[str, str], code: int, line: str
) -> None:
    port = free_port()
    cfg = admin_config(free_port(), port, free_port(), 1)
    cfg["admin"] = {k: v.format(port=port) for k, v in admin.items()}
    path = tmp_path / "gateway.yaml"
    write_config(path, cfg)
    run = await asyncio.to_thread(run_gateway, path, "run")
    assert run.returncode == code and line.format(port=port) in run.stdout + run.stderr
    if "token_file" not in admin:  # `check` validates the model; files are read at start
        check = await asyncio.to_thread(run_gateway, path, "check")
        assert check.returncode == 1 and line.format(port=port) in check.stdout
