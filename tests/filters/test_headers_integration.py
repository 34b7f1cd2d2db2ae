"""Header rules end to end: a real gateway, a real upstream, a real HTTP client."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import GatewayFactory
from tests.support import free_port, gateway_config
from tests.tls.certs import make_ca

HEADERS = {
    "request": {
        "remove": ["X-Internal"],
        "set": {"X-Env": "prod", "X-Client": "${client_ip}:${client_port}"},
        "add": {"X-Trace": "${request_id}"},
    },
    "response": {
        "remove": ["X-Kept"],
        "set": {"X-Served-By": "${route}/${upstream}"},
        "add": {"X-Scheme": "${scheme}"},
    },
    "security": {"preset": "strict"},
}


def config(upstream_port: int) -> dict[str, Any]:
    down = {"prefix": "/down"}
    return gateway_config(
        port=0,
        admin_port=free_port(),
        upstreams={"up": [f"http://127.0.0.1:{upstream_port}"], "dead": [f"http://127.0.0.1:{free_port()}"]},
        routes=[
            {"name": "down", "match": {"path": down}, "upstream": "dead", "headers": HEADERS},
            {"name": "api", "upstream": "up", "headers": HEADERS},
        ],
    )  # fmt: skip


async def test_request_rules_reach_upstream_response_rules_reach_client(
    gateway: GatewayFactory, upstream: int
) -> None:
    gw = await gateway(config(upstream))
    async with aiohttp.ClientSession() as s:
        async with s.get(
            gw.url + "/echo", headers={"X-Internal": "secret", "X-Env": "dev", "X-Trace": "client"}
        ) as r:
            assert r.status == 200
            body = await r.json()
            seen = body["headers"]
            headers = r.headers
        async with s.get(gw.url + "/hop") as hop:
            assert hop.status == 200
            assert "X-Kept" not in hop.headers  # the upstream sent it; the route removes it
            assert hop.headers["X-Served-By"] == "api/up"
        async with s.get(gw.url + "/down/x") as down:
            assert down.status == 502
            assert (await down.json())["error"] == "upstream_connect_failed"
            error_headers = down.headers

    names = [k.lower() for k, _ in seen]
    assert "x-internal" not in names
    upstream_saw = dict(seen)
    assert upstream_saw["X-Env"] == "prod" and names.count("x-env") == 1
    assert re.fullmatch(r"127\.0\.0\.1:\d+", upstream_saw["X-Client"])
    rid = headers["X-Request-ID"]
    assert [v for k, v in seen if k == "X-Trace"] == ["client", rid]

    assert headers["X-Served-By"] == "api/up"
    assert headers["X-Scheme"] == "http"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert "Strict-Transport-Security" not in headers  # plain HTTP: never (RFC 6797 7.2)

    # A gateway-made error carries the route's response and security headers too.
    assert error_headers["X-Served-By"] == "down/dead"
    assert error_headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in error_headers


async def test_hsts_over_tls_only_and_tls_variables_reach_upstream(
    gateway: GatewayFactory, upstream: int, tmp_path: Path
) -> None:
    ca = make_ca("headers e2e CA")
    server = ca.issue("gw", dns=("api.example.test",), ips=("127.0.0.1",)).write(tmp_path, "gw")
    client = ca.issue("alice", client=True).write(tmp_path, "alice")
    ca_file = ca.write_ca(tmp_path)
    cfg = config(upstream)
    cfg["listeners"] = [
        {"address": "127.0.0.1:0"},
        {
            "address": "127.0.0.1:0",
            "tls": {
                "certificates": [{"cert_file": server.cert_file, "key_file": server.key_file}],
                "client_auth": "optional",
                "client_ca_file": ca_file,
            },
        },
    ]
    cfg["routes"][1]["headers"] = {
        **HEADERS,
        "request": {"set": {"X-TLS": "${tls_version}|${sni}|${client_cert_subject}"}},
    }
    gw = await gateway(cfg)
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.load_cert_chain(client.cert_file, client.key_file)
    tls_url = f"https://127.0.0.1:{gw.worker.bound[1][1]}/echo"
    async with aiohttp.ClientSession() as s:
        async with s.get(tls_url, ssl=ctx, server_hostname="api.example.test") as r:
            assert r.status == 200
            seen = dict((await r.json())["headers"])
            assert r.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
            assert r.headers["X-Scheme"] == "https"
        async with s.get(gw.url + "/echo") as plain:
            assert plain.status == 200
            assert "Strict-Transport-Security" not in plain.headers
            plain_seen = dict((await plain.json())["headers"])
    assert re.fullmatch(r"TLSv1\.[23]\|api\.example\.test\|CN=alice", seen["X-TLS"])
    assert plain_seen["X-TLS"] == "||"  # no values over plain HTTP: empty strings
