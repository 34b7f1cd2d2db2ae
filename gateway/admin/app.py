"""The admin listener's HTTP side: JSON API, Prometheus scrape, operator dashboard.

Every operation goes through one `Control` (control.py): in one process a
LocalControl on the worker, under the supervisor a FanoutControl over the workers'
control sockets, so this module is written once for both. The paths, their
parameters and answers are described in openapi.py (served at /api/openapi.json; a
test keeps the two in step). Answers are JSON; a refusal is `{"error": ...}` with its
status: 400 bad input, 401 no or wrong token, 404 unknown name, 409 a rollout move
the state does not allow, 422 a reload the config file failed, 501 a part this
listener cannot reach, 503 a store or every worker did not answer.

`/healthz` answers 200 while the process runs its event loop; `/readyz` 200 only when
a config is loaded and every worker is listening (503 during start-up and drain).
`/metrics` is the Prometheus exposition, every worker's metrics merged. The older
`/rollouts...` and `/bans...` paths stay as aliases of `/api/rollouts...`, `/api/bans...`
(the CLI and existing scripts use them).

Token (`admin.token` / `admin.token_file`): when one is configured, every request
must carry `Authorization: Bearer <token>` (compared in constant time), else 401.
Open even then: the probes (/healthz, /readyz: load balancers and orchestrators
probe without secrets, and they reveal only readiness) and the dashboard's static
files (the page holds no data; its script asks for the token and sends it on each
API call). The config refuses a non-loopback admin address without a token.

The dashboard (`/`, `/dashboard`) is one static page with plain JS and CSS from
static/, loaded into memory once, polling the JSON API every 2 seconds.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gateway.admin import stats
from gateway.admin.control import Control, LocalControl
from gateway.admin.openapi import OPENAPI
from gateway.admin.ops import ControlError, WorkerOps
from gateway.config.model import Admin
from gateway.errors import ConfigError, ConfigErrors
from gateway.observability.metrics import exposition
from gateway.rollout.controller import Rollouts
from gateway.store.bans import BanStore

log = logging.getLogger("gateway.admin")

StatusFn = Callable[[], dict[str, Any]]
RolloutsFn = Callable[[], Rollouts]
BansFn = Callable[[], BanStore | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/dashboard"})
OPEN_PREFIX = "/dashboard/"
STATIC = {  # served path -> (file in static/, content type)
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/style.css": ("style.css", "text/css; charset=utf-8"),
}


def make_admin_app(
    status: StatusFn,
    rollouts: RolloutsFn | None = None,
    bans: BansFn | None = None,
    *,
    control: Control | None = None,
    token: str | None = None,
) -> web.Application:
    """The admin app over `control` (default: a LocalControl over the given parts)."""
    ctl = control if control is not None else LocalControl(WorkerOps(rollouts=rollouts, bans=bans))
    expected = token.encode() if token else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if expected is not None and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIX):
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), expected
            ):
                log.warning(
                    "admin request %s %s from %s refused: %s",
                    request.method,
                    path,
                    request.remote,
                    "wrong token" if given else "no token",
                )
                return _json(
                    401,
                    {"error": "a bearer token is required"},
                    {"WWW-Authenticate": 'Bearer realm="gateway-admin"'},
                )
        try:
            return await handler(request)
        except ControlError as exc:
            if exc.status >= 500:
                log.warning("admin %s %s: %s %s", request.method, path, exc.status, exc.message)
            return _json(exc.status, exc.body())

    async def body_object(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise ControlError(400, "the body must be JSON") from None
        if not isinstance(data, dict):
            raise ControlError(400, "the body must be a JSON object")
        return data

    # -- probes and the scrape --------------------------------------------------------

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = await asyncio.to_thread(exposition)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        st = status()
        return _json(200 if st.get("ready") else 503, st)

    # -- reading ----------------------------------------------------------------------

    async def config_status(request: web.Request) -> web.Response:
        return _json(200, {**await ctl.status(), "process": status()})

    async def routes(request: web.Request) -> web.Response:
        return _json(200, await ctl.routes())

    async def upstreams(request: web.Request) -> web.Response:
        return _json(200, await ctl.upstreams())

    async def services(request: web.Request) -> web.Response:
        return _json(200, await ctl.services())

    async def route_stats(request: web.Request) -> web.Response:
        return _json(200, await asyncio.to_thread(stats.collect))

    async def blocks(request: web.Request) -> web.Response:
        return _json(200, await ctl.blocks())

    async def openapi(request: web.Request) -> web.Response:
        return _json(200, OPENAPI)

    # -- rollouts ---------------------------------------------------------------------

    async def list_rollouts(request: web.Request) -> web.Response:
        return _json(200, await ctl.rollouts())

    async def show_rollout(request: web.Request) -> web.Response:
        return _json(200, await ctl.rollout(request.match_info["name"]))

    async def act_rollout(request: web.Request) -> web.Response:
        m = request.match_info
        who = f"admin api ({request.remote})"
        return _json(200, await ctl.rollout_act(m["name"], m["action"], who))

    # -- bans -------------------------------------------------------------------------

    async def list_bans(request: web.Request) -> web.Response:
        return _json(200, await ctl.bans())

    async def lift_ban(request: web.Request) -> web.Response:
        try:
            ip = ipaddress.ip_address(request.match_info["ip"])
        except ValueError:
            raise ControlError(400, "not an IP address") from None
        return _json(200, await ctl.lift_ban(str(ip)))

    # -- actions ----------------------------------------------------------------------

    async def reload(request: web.Request) -> web.Response:
        return _json(200, await ctl.reload())

    async def reset_breakers(request: web.Request) -> web.Response:
        body = await body_object(request)
        endpoint = body.get("endpoint")
        if endpoint is not None and not isinstance(endpoint, str):
            raise ControlError(400, "endpoint must be a string (an endpoint URL)")
        if set(body) - {"endpoint"}:
            raise ControlError(
                400, "unknown fields: " + ", ".join(sorted(set(body) - {"endpoint"}))
            )
        return _json(200, await ctl.breaker_reset(request.match_info["name"], endpoint))

    async def purge_cache(request: web.Request) -> web.Response:
        body = await body_object(request)
        given = {k: v for k, v in body.items() if k in ("key", "prefix", "tag")}
        if len(given) != 1 or len(body) != 1:
            raise ControlError(400, "give exactly one of key, prefix, tag")
        ((kind, value),) = given.items()
        if not isinstance(value, str) or not value:
            raise ControlError(400, f"{kind} must be a non-empty string")
        args: dict[str, str | None] = {"key": None, "prefix": None, "tag": None, kind: value}
        return _json(200, await ctl.cache_purge(**args))

    # -- the dashboard ----------------------------------------------------------------

    files = resources.files("gateway.admin") / "static"
    page = (files / "index.html").read_bytes()
    static = {path: ((files / name).read_bytes(), ctype) for path, (name, ctype) in STATIC.items()}

    async def dashboard(request: web.Request) -> web.Response:
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    def static_file(path: str) -> Handler:
        body, ctype = static[path]

        async def serve(request: web.Request) -> web.Response:
            return web.Response(
                body=body, headers={"Content-Type": ctype, "Cache-Control": "no-cache"}
            )

        return serve

    table: list[tuple[str, str, Handler]] = [
        ("GET", "/healthz", healthz),
        ("GET", "/readyz", readyz),
        ("GET", "/metrics", metrics),
        ("GET", "/api/openapi.json", openapi),
        ("GET", "/api/status", config_status),
        ("GET", "/api/routes", routes),
        ("GET", "/api/stats", route_stats),
        ("GET", "/api/upstreams", upstreams),
        ("POST", "/api/upstreams/{name}/reset-breakers", reset_breakers),
        ("GET", "/api/services", services),
        ("GET", "/api/blocks", blocks),
        ("POST", "/api/reload", reload),
        ("POST", "/api/cache/purge", purge_cache),
        ("GET", "/", dashboard),
        ("GET", "/dashboard", dashboard),
        *(("GET", path, static_file(path)) for path in STATIC),
    ]
    for prefix in ("/api", ""):  # "": the older paths, kept as aliases
        table += [
            ("GET", f"{prefix}/rollouts", list_rollouts),
            ("GET", f"{prefix}/rollouts/{{name}}", show_rollout),
            ("POST", f"{prefix}/rollouts/{{name}}/{{action}}", act_rollout),
            ("GET", f"{prefix}/bans", list_bans),
            ("DELETE", f"{prefix}/bans/{{ip}}", lift_ban),
        ]
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    for method, path, handler in table:
        app.router.add_route(method, path, handler)

    async def close_control(app: web.Application) -> None:
        await ctl.close()

    app.on_cleanup.append(close_control)
    return app


def _json(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(payload) + b"\n",
        content_type="application/json",
        headers=headers,
    )


async def start_admin(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def resolve_token(admin: Admin, source: str = "config") -> str | None:
    """The admin bearer token: `token`, or `token_file`'s content (ConfigErrors if unusable)."""
    if admin.token_file is None:
        return admin.token
    try:
        token = Path(admin.token_file).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors(
            source, [ConfigError("admin.token_file", f"cannot read {admin.token_file!r}: {exc}")]
        ) from exc
    if len(token) < 16 or any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise ConfigErrors(
            source,
            [ConfigError("admin.token_file", "the token must be 16+ printable ASCII characters")],
        )
    return token
