"""Admin endpoints: liveness and readiness, metrics, rollouts, bans.

`/metrics`: the Prometheus exposition for the whole gateway, every worker process's
metrics merged (gateway/observability/metrics.py).

`/healthz` answers 200 while the process runs its event loop. `/readyz` answers 200
only when a config is loaded and every worker is listening, 503 otherwise (during
start-up and while draining on SIGTERM), so a load balancer stops sending first.

Rollouts (when the process serves them, `rollouts` given): `GET /rollouts`,
`GET /rollouts/{name}`, `POST /rollouts/{name}/{pause|resume|promote|abort}`.
Answers: 200 with the rollout's status, 404 unknown name or action, 409 an action
the rollout's state does not allow (the message says why), 503 the state store
could not record it. With several worker processes and no Redis there is no shared
state to act on: 501.

Bans (`bans` given): `GET /bans` lists active bans (ip, until as epoch seconds,
remaining_s, reason, count, shared); `DELETE /bans/{ip}` lifts one (200, 404 when not
banned, 400 not an address). With Redis the list is read from Redis and a lift deletes
the shared record: every process drops it within `bans.sync_interval`. 404 when the
config has no bans section, 503 when Redis cannot answer, 501 in multi-worker mode
without Redis (each worker's bans are its own; nothing here can reach them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.observability.metrics import exposition
from gateway.rollout.controller import Rollout, Rollouts
from gateway.rollout.machine import Event, RolloutStateError
from gateway.rollout.store import StoreUnavailable
from gateway.store.bans import BanStore, BansUnavailable

StatusFn = Callable[[], dict[str, Any]]
RolloutsFn = Callable[[], Rollouts]
BansFn = Callable[[], BanStore | None]
ACTIONS = {
    "pause": Event.PAUSE,
    "resume": Event.RESUME,
    "promote": Event.PROMOTE,
    "abort": Event.ABORT,
}


def make_admin_app(
    status: StatusFn, rollouts: RolloutsFn | None = None, bans: BansFn | None = None
) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        body, content_type = exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        st = status()
        return _json(200 if st.get("ready") else 503, st)

    def rollout(request: web.Request) -> Rollout | web.Response:
        if rollouts is None:
            return _json(501, {"error": "rollout control needs one worker process or redis"})
        r = rollouts().rollouts.get(request.match_info["name"])
        if r is None:
            return _json(404, {"error": f"no rollout {request.match_info['name']!r}"})
        return r

    async def list_rollouts(request: web.Request) -> web.Response:
        if rollouts is None:
            return _json(501, {"error": "rollout control needs one worker process or redis"})
        return _json(200, {"rollouts": rollouts().status()})

    async def show(request: web.Request) -> web.Response:
        r = rollout(request)
        return r if isinstance(r, web.Response) else _json(200, r.status())

    async def act(request: web.Request) -> web.Response:
        event = ACTIONS.get(request.match_info["action"])
        if event is None:
            return _json(404, {"error": f"no action {request.match_info['action']!r}"})
        r = rollout(request)
        if isinstance(r, web.Response):
            return r
        try:
            await r.act(event, who=f"admin api ({request.remote})")
        except RolloutStateError as exc:
            return _json(409, {"error": str(exc), **r.status()})
        except StoreUnavailable as exc:
            return _json(503, {"error": str(exc)})
        return _json(200, r.status())

    def ban_store() -> BanStore | web.Response:
        if bans is None:
            return _json(501, {"error": "bans are per worker process without redis"})
        store = bans()
        if store is None:
            return _json(404, {"error": "bans are not configured"})
        return store

    async def list_bans(request: web.Request) -> web.Response:
        store = ban_store()
        if isinstance(store, web.Response):
            return store
        try:
            return _json(200, {"bans": await store.listing()})
        except BansUnavailable as exc:
            return _json(503, {"error": str(exc)})

    async def lift_ban(request: web.Request) -> web.Response:
        store = ban_store()
        if isinstance(store, web.Response):
            return store
        try:
            ip = ipaddress.ip_address(request.match_info["ip"])
        except ValueError:
            return _json(400, {"error": "not an IP address"})
        try:
            lifted = await store.lift(str(ip))
        except BansUnavailable as exc:
            return _json(503, {"error": str(exc)})
        if not lifted:
            return _json(404, {"error": f"{ip} is not banned"})
        return _json(200, {"lifted": str(ip)})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/rollouts", list_rollouts)
    app.router.add_get("/rollouts/{name}", show)
    app.router.add_post("/rollouts/{name}/{action}", act)
    app.router.add_get("/bans", list_bans)
    app.router.add_delete("/bans/{ip}", lift_ban)
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
