"""Auth and CORS end to end: a real gateway (a `python -m gateway run` process, or a
Worker in the test's loop), a real upstream echoing what it received, real keys."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.auth.support import JwksServer, SigningKey, key_hash
from tests.conftest import GatewayFactory
from tests.support import GatewayProcess, free_port, gateway_config, write_config

GOLD, PLAIN = "k-gold-5d1e", "k-plain-a07c"
APP = "https://app.example.com"


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    async with JwksServer().serve() as s:
        yield s


def config(upstream: int, route: dict[str, Any], port: int = 0, admin: int = 0) -> dict[str, Any]:
    return gateway_config(
        port=port or free_port(),
        admin_port=admin or free_port(),
        upstreams={"up": [f"http://127.0.0.1:{upstream}"]},
        routes=[{"name": "api", "upstream": "up", **route}],
    )


async def test_api_key_tiers_reach_the_rate_limiter(upstream: int, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"partner {key_hash(GOLD)} gold\nhobby {key_hash(PLAIN)}\n")
    route = {
        "auth": {"api_keys": {"file": str(keys)}},
        "rate_limits": [
            {"name": "per-key", "rate": "2/min", "key": ["principal"], "store": "memory",
             "tiers": {"gold": "5/min"}},
        ],
    }  # fmt: skip
    port, admin = free_port(), free_port()
    path = tmp_path / "gw.yaml"
    write_config(path, config(upstream, route, port, admin))
    gw = GatewayProcess(path, port, admin)
    try:
        await gw.wait_ready()
        async with aiohttp.ClientSession() as s:

            async def statuses(key: str, n: int) -> tuple[list[int], str]:
                out = []
                policy = ""
                for _ in range(n):
                    async with s.get(f"{gw.url}/x", headers={"X-API-Key": key}) as r:
                        out.append(r.status)
                        if r.status == 200:
                            echoed = dict((await r.json())["headers"])
                            assert "X-API-Key" not in echoed  # stripped before the upstream
                            policy = r.headers["RateLimit-Policy"]
                return out, policy

            assert await statuses(GOLD, 6) == ([200] * 5 + [429], '"per-key";q=5;w=60')
            assert await statuses(PLAIN, 3) == ([200] * 2 + [429], '"per-key";q=2;w=60')
            async with s.get(f"{gw.url}/x", headers={"X-API-Key": "k-wrong"}) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == 'ApiKey realm="gateway"'
            async with s.get(f"http://127.0.0.1:{admin}/metrics") as r:
                text = await r.text()
        line = 'gateway_auth_failures_total{reason="key_invalid",route="api"} 1.0'
        assert line in text
        assert "k-wrong" not in gw.log()
    finally:
        gw.stop()


async def test_jwt_claims_reach_the_upstream(
    gateway: GatewayFactory, upstream: int, jwks: JwksServer, keys: dict[str, SigningKey]
) -> None:
    jwks.doc = {"keys": [k.jwk() for k in keys.values()]}
    route = {
        "auth": {
            "jwt": {
                "jwks_url": jwks.url,
                "audiences": "orders",
                "claims_to_headers": {"sub": "X-User-Id", "email": "X-User-Email"},
            }
        }
    }
    gw = await gateway(config(upstream, route))
    now = time.time()
    claims = {"sub": "alice", "aud": "orders", "email": "a@example.com", "exp": now + 60}
    async with aiohttp.ClientSession() as s:
        for alg in ("RS256", "ES256", "EdDSA"):
            headers = {"Authorization": f"Bearer {keys[alg].token(claims)}", "X-User-Id": "root"}
            async with s.get(f"{gw.url}/orders", headers=headers) as r:
                assert r.status == 200, await r.text()
                echoed = [(k.lower(), v) for k, v in (await r.json())["headers"]]
            assert ("x-user-id", "alice") in echoed and ("x-user-id", "root") not in echoed
            assert ("x-user-email", "a@example.com") in echoed
            assert not [k for k, _ in echoed if k == "authorization"]
        expired = keys["RS256"].token({**claims, "exp": now - 120})
        async with s.get(f"{gw.url}/orders", headers={"Authorization": f"Bearer {expired}"}) as r:
            assert r.status == 401
            assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert jwks.hits == 1  # one fetch served every key; the cache answered the rest


async def test_webhook_body_reaches_the_upstream_exactly(
    gateway: GatewayFactory, upstream: int, tmp_path: Path
) -> None:
    secret = b"whsec_integration_6b1f"
    (tmp_path / "secrets.txt").write_bytes(secret + b"\n")
    route = {
        "auth": {
            "webhook": {
                "header": "X-Hub-Signature-256",
                "prefix": "sha256=",
                "secrets_file": str(tmp_path / "secrets.txt"),
                "max_body_bytes": "1MiB",
            }
        }
    }
    gw = await gateway(config(upstream, route))
    body = bytes(range(256)) * 1000  # 256 kB, sent chunked

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 16384):
            yield data[i : i + 16384]

    sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    async with aiohttp.ClientSession() as s:
        headers = {"X-Hub-Signature-256": sig}
        async with s.post(f"{gw.url}/upload", data=chunks(body), headers=headers) as r:
            assert r.status == 200
            got = await r.json()
        assert got == {"body_bytes": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
        tampered = body[:-1] + b"\x00"
        async with s.post(f"{gw.url}/upload", data=tampered, headers=headers) as r:
            assert r.status == 401
            assert json.loads(await r.read())["error"] == "unauthorized"
        too_big = b"x" * ((1 << 20) + 1)
        async with s.post(f"{gw.url}/upload", data=too_big, headers=headers) as r:
            assert r.status == 413


async def test_cors_preflight_is_answered_by_the_gateway(
    gateway: GatewayFactory, upstream: int
) -> None:
    route = {
        "cors": {"origins": ["https://*.example.com"], "methods": ["GET", "PUT"],
                 "headers": ["X-API-Key"], "credentials": True},
        "auth": {"api_keys": {"keys": [{"name": "web", "hash": key_hash("k-web")}]}},
    }  # fmt: skip
    gw = await gateway(config(upstream, route))
    async with aiohttp.ClientSession() as s:
        pre = {"Origin": APP, "Access-Control-Request-Method": "PUT",
               "Access-Control-Request-Headers": "x-api-key"}  # fmt: skip
        async with s.options(f"{gw.url}/items", headers=pre) as r:
            assert r.status == 204 and await r.read() == b""  # the echo upstream never saw it
            assert r.headers["Access-Control-Allow-Origin"] == APP
            assert r.headers["Access-Control-Allow-Credentials"] == "true"
            assert r.headers["Access-Control-Allow-Headers"] == "x-api-key"
        async with s.options(f"{gw.url}/items", headers={**pre, "Origin": "https://evil.com"}) as r:
            assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
        async with s.put(f"{gw.url}/items", headers={"Origin": APP}) as r:
            assert r.status == 401  # no key: refused, and the page can read why
            assert r.headers["Access-Control-Allow-Origin"] == APP
            assert r.headers["Vary"] == "Origin"
        async with s.put(f"{gw.url}/items", headers={"Origin": APP, "X-API-Key": "k-web"}) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == APP
