"""The observability tests' gateway: two workers, every feature on (see conftest.py),
and helpers to scrape and read its metrics."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.support import GatewayProcess, free_port, upstream_app

Samples = list[tuple[str, dict[str, str], float]]


class ThreadedUpstream:
    """The test upstream app served from a thread of its own (it outlives test loops)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._runner = web.AppRunner(upstream_app(), access_log=None)  # /health: 200
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def __enter__(self) -> ThreadedUpstream:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def stack_config(
    up: int, dead: int, port: int, admin: int, log: Path, certs: Path
) -> dict[str, Any]:
    """Two workers, every feature on; a second listener with TLS (certificate expiry).
    `dead` is a port nothing listens on (the canary and the broken route's upstream)."""

    def route(name: str, prefix: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "match": {"path": {"prefix": prefix}},
            "upstream": "up",
            "bans": False,
            **extra,
        }

    return {
        "listeners": [
            {"address": f"127.0.0.1:{port}"},
            {
                "address": f"127.0.0.1:{free_port()}",
                "tls": {
                    "certificates": [
                        {
                            "cert_file": str(certs / "server.pem"),
                            "key_file": str(certs / "server-key.pem"),
                        }
                    ]
                },
            },
        ],
        "admin": {"address": f"127.0.0.1:{admin}"},
        "workers": 2,
        "region": "eu",
        "server": {"watch_config": False},
        "trusted_proxies": ["127.0.0.1"],
        "access_log": {"mode": "full", "output": str(log)},
        "upstreams": {
            "up": {
                "endpoints": [{"url": f"http://127.0.0.1:{up}", "region": "eu"}],
                "health_check": {"path": "/health", "interval": "200ms", "timeout": "200ms"},
            },
            "sick": {
                "endpoints": [f"http://localhost:{up}"],
                "health_check": {"path": "/status/503", "interval": "200ms", "timeout": "200ms"},
            },
            "down": {
                "endpoints": [f"http://127.0.0.1:{dead}"],
                "breaker": {"consecutive_failures": 2, "base_ejection": "1m"},
            },
        },
        "services": {
            "svc": {
                "versions": {"stable": {"upstream": "up"}, "canary": {"upstream": "down"}},
                "override": {"header": "X-Canary"},
                "rollout": {
                    "steps": [{"weight": 10, "hold": "1h"}, {"weight": 100}],
                    "gates": {"max_5xx_ratio": 0.1, "min_requests": 3},
                    "interval": "200ms",
                },
            }
        },
        "bans": {"after_blocks": 1, "window": "1m"},
        "routes": [
            route("limited", "/limited", rate_limits=[{"name": "tight", "rate": "1/min"}]),
            route(
                "shadowlimited",
                "/shadowlimited",
                rate_limits=[{"name": "soft", "rate": "1/min", "mode": "shadow"}],
            ),
            route("screened", "/screened", screening={"mode": "block"}, bans=True),
            route("screenshadow", "/screenshadow", screening={"mode": "shadow"}),
            route("cached", "/cached", cache={"default_ttl": "1m"}),
            route("compressed", "/compressed", compression={"min_size": 1}),
            {**route("broken", "/broken"), "upstream": "down"},
            {"name": "svc", "match": {"path": {"prefix": "/svc"}}, "upstream": "svc"},
            route("all", "/"),
        ],
    }


@dataclass
class Stack:
    gw: GatewayProcess
    log: Path


async def scrape(gw: GatewayProcess) -> Samples:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{gw.admin_port}/metrics") as r,
    ):
        assert r.status == 200
        text = await r.text()
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and labels.items() <= lab.items())


def exists(samples: Samples, name: str, **labels: str) -> bool:
    return any(n == name and labels.items() <= lab.items() for n, lab, _ in samples)
