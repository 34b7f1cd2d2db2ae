"""Admin endpoints: liveness and readiness.

`/healthz` answers 200 while the process runs its event loop. `/readyz` answers 200
only when a config is loaded and every worker is listening, 503 otherwise (during
start-up and while draining on SIGTERM), so a load balancer stops sending first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

StatusFn = Callable[[], dict[str, Any]]


def make_admin_app(status: StatusFn) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        st = status()
        return _json(200 if st.get("ready") else 503, st)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def _json(status: int, payload: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload) + b"\n", content_type="application/json"
    )


async def start_admin(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
