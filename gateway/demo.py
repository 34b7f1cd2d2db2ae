"""Demo upstreams for the quick start: `gateway run CONFIG --demo`.

Starts a small HTTP server on every plain-http loopback endpoint the config names
(127.0.0.1, ::1, localhost), so a newcomer can `curl` through the gateway and see
which upstream answered and what the gateway added on the way (X-Forwarded-*, Via,
X-Request-ID). Endpoints whose port is already taken are left alone.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from gateway.config.model import Config

log = logging.getLogger("gateway.demo")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
SHOWN_HEADERS = (
    "Host",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "Via",
    "X-Request-ID",
)


def _app(upstream: str, endpoint: str) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        payload = {
            "upstream": upstream,
            "endpoint": endpoint,
            "method": request.method,
            "path": request.path_qs,
            "headers": {h: request.headers[h] for h in SHOWN_HEADERS if h in request.headers},
            "body_bytes": len(body),
        }
        return web.Response(
            body=orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n",
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def start_demo_upstreams(config: Config) -> list[web.AppRunner]:
    runners: list[web.AppRunner] = []
    seen: set[tuple[str, int]] = set()
    for name, upstream in config.upstreams.items():
        for ep in upstream.endpoints:
            if ep.scheme != "http" or ep.host not in LOOPBACK or (ep.host, ep.port) in seen:
                continue
            seen.add((ep.host, ep.port))
            runner = web.AppRunner(_app(name, ep.url), access_log=None, handle_signals=False)
            await runner.setup()
            try:
                await web.TCPSite(runner, ep.host, ep.port).start()
            except OSError as exc:
                log.warning("demo upstream %s not started on %s: %s", name, ep.url, exc)
                await runner.cleanup()
                continue
            log.info("demo upstream %s listening on %s", name, ep.url)
            runners.append(runner)
    return runners
