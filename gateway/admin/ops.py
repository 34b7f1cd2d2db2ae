"""What one worker process answers about itself: the admin operations on its Runtime.

`WorkerOps.call(op, args)` runs one named operation against the worker's current
Runtime and returns a JSON-able dict; expected refusals raise `ControlError(status)`
(404 unknown name, 409 illegal rollout move, 503 a store could not answer, 501 the
part is not reachable from here). Nothing here merges: with N workers each worker
answers for itself (over its control socket, fanout.py) and control.py merges the
answers; in one process the same merge runs over a single answer.

`WorkerOps` reads through getters, never a captured Runtime, so a reload's swap is
seen at once. It is built from a Worker (everything) or, for tests and embedders, from
just the parts they have (`rollouts`, `bans` getters): operations on a missing part
answer 501.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

import gateway
from gateway.rollout.controller import Rollout, Rollouts
from gateway.rollout.machine import Event, RolloutStateError
from gateway.rollout.store import StoreUnavailable
from gateway.store.bans import BanStore, BansUnavailable
from gateway.upstream.member import Member

if TYPE_CHECKING:
    from gateway.runtime import Runtime
    from gateway.worker import Worker

ACTIONS = {
    "pause": Event.PAUSE,
    "resume": Event.RESUME,
    "promote": Event.PROMOTE,
    "abort": Event.ABORT,
}
ROUTE_FILTERS = ("headers", "limits", "screening", "rate_limits", "cache", "compression")


class ControlError(Exception):
    """An operation refused: the HTTP status to answer with, why, and more fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}

    def __repr__(self) -> str:
        return f"<ControlError {self.status} {self.message!r}>"


def _endpoint(m: Member, now: float) -> dict[str, Any]:
    b, h, p = m.breaker, m.health, m.pool
    return {
        "endpoint": m.key,
        "weight": m.weight,
        "available": m.available,
        "health": {
            "checked": h.policy is not None,
            "up": h.up,
            "checks_passed": h.checks_passed,
            "checks_failed": h.checks_failed,
            "last_error": h.last_error,
        },
        "breaker": {
            "state": b.state.value,
            "ejections": b.ejections,
            "ejections_total": b.ejections_total,
            "open_for_s": round(max(b.open_until - now, 0.0), 3) if not b.admits else 0.0,
            "suppressed": b.suppressed,
        },
        "in_flight": p.in_flight,
        "pool": {"open": p.open, "idle": p.idle, "waiting": p.waiting, "connects": p.connects},
    }


class WorkerOps:
    def __init__(
        self,
        worker: Worker | None = None,
        *,
        rollouts: Callable[[], Rollouts] | None = None,
        bans: Callable[[], BanStore | None] | None = None,
    ) -> None:
        self.worker = worker
        if worker is not None:
            rollouts = rollouts or (lambda: worker.runtime.rollouts)
            bans = bans or (lambda: worker.runtime.bans)
        self._rollouts = rollouts
        self._bans = bans
        self.ops: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "status": self.status,
            "routes": self.routes,
            "upstreams": self.upstreams,
            "services": self.services,
            "rollouts": self.rollouts,
            "rollout": self.rollout,
            "rollout_act": self.rollout_act,
            "rollout_sync": self.rollout_sync,
            "bans": self.bans,
            "ban_lift": self.ban_lift,
            "blocks": self.blocks,
            "reload": self.reload,
            "breaker_reset": self.breaker_reset,
            "cache_purge": self.cache_purge,
        }

    @property
    def worker_id(self) -> int:
        return self.worker.worker_id if self.worker is not None else 0

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        fn = self.ops.get(op)
        if fn is None:
            raise ControlError(404, f"no operation {op!r}")
        return await fn(args)

    def _runtime(self) -> Runtime:
        if self.worker is None or not self.worker.handlers:
            raise ControlError(501, "this admin listener has no worker to ask")
        return self.worker.runtime

    # -- reading ----------------------------------------------------------------------

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        w = self.worker
        if w is None or not w.handlers:
            raise ControlError(501, "this admin listener has no worker to ask")
        r = w.reloads
        return {
            "version": gateway.__version__,
            "config_path": str(w.path.resolve()),
            "config_hash": w.runtime.config_hash,
            "loaded_at": r.loaded_at,
            "ready": w.ready,
            "reloads": {"ok": r.ok, "failed": r.failed},
            "last_reload": {
                "result": r.last_result,
                "at": r.last_at,
                "errors": _error_items(r.last_errors),
            },
        }

    async def routes(self, args: dict[str, Any]) -> dict[str, Any]:
        rt = self._runtime()
        out = []
        for route in rt.table.routes:
            c = route.config
            filters = [f for f in ROUTE_FILTERS if getattr(c, f, None)]
            if rt.bans is not None and c.bans:
                filters.insert(0, "bans")
            out.append(
                {
                    "name": c.name,
                    "match": c.match.model_dump(mode="json", exclude_defaults=True),
                    "upstream": c.upstream,
                    "service": c.upstream in rt.splits,
                    "filters": filters,
                }
            )
        return {"routes": out}

    async def upstreams(self, args: dict[str, Any]) -> dict[str, Any]:
        rt = self._runtime()
        now = rt.clock()
        out = []
        for name, up in rt.upstreams.items():
            out.append(
                {
                    "name": name,
                    "balancing": rt.config.upstreams[name].balancing.policy,
                    "health_checked": up.checker is not None,
                    "endpoints": [_endpoint(m, now) for m in up.members],
                }
            )
        return {"upstreams": out}

    async def services(self, args: dict[str, Any]) -> dict[str, Any]:
        rt = self._runtime()
        out = []
        for name, split in rt.splits.items():
            versions = [
                {
                    "name": v.name,
                    "upstream": v.upstream.name,
                    "weight": v.weight,
                    "baseline": v is split.baseline,
                }
                for v in split.versions
            ]
            out.append(
                {"name": name, "rollout": name in rt.rollouts.rollouts, "versions": versions}
            )
        return {"services": out}

    # -- rollouts ---------------------------------------------------------------------

    def _all_rollouts(self) -> Rollouts:
        if self._rollouts is None:
            raise ControlError(501, "rollout control needs a worker to act on")
        return self._rollouts()

    def _rollout(self, args: dict[str, Any]) -> Rollout:
        name = str(args.get("name", ""))
        r = self._all_rollouts().rollouts.get(name)
        if r is None:
            raise ControlError(404, f"no rollout {name!r}")
        return r

    async def rollouts(self, args: dict[str, Any]) -> dict[str, Any]:
        rs = self._all_rollouts()
        return {"rollouts": rs.status(), "shared": rs.redis is not None}

    async def rollout(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._rollout(args).status()

    async def rollout_act(self, args: dict[str, Any]) -> dict[str, Any]:
        event = ACTIONS.get(str(args.get("action", "")))
        if event is None:
            raise ControlError(404, f"no action {args.get('action')!r}")
        r = self._rollout(args)
        try:
            await r.act(event, who=str(args.get("who") or "admin api"))
        except RolloutStateError as exc:
            raise ControlError(409, str(exc), **r.status()) from exc
        except StoreUnavailable as exc:
            raise ControlError(503, str(exc)) from exc
        return {**r.status(), "shared": self._all_rollouts().redis is not None}

    async def rollout_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        r = self._rollout(args)
        await r.sync()
        return r.status()

    # -- bans -------------------------------------------------------------------------

    def _ban_store(self) -> BanStore:
        if self._bans is None:
            raise ControlError(501, "bans are per worker process; none is reachable here")
        store = self._bans()
        if store is None:
            raise ControlError(404, "bans are not configured")
        return store

    async def bans(self, args: dict[str, Any]) -> dict[str, Any]:
        store = self._ban_store()
        try:
            return {"bans": await store.listing()}
        except BansUnavailable as exc:
            raise ControlError(503, str(exc)) from exc

    async def ban_lift(self, args: dict[str, Any]) -> dict[str, Any]:
        store = self._ban_store()
        try:
            ip = ipaddress.ip_address(str(args.get("ip", "")))
        except ValueError:
            raise ControlError(400, "not an IP address") from None
        try:
            return {"ip": str(ip), "lifted": await store.lift(str(ip))}
        except BansUnavailable as exc:
            raise ControlError(503, str(exc)) from exc

    async def blocks(self, args: dict[str, Any]) -> dict[str, Any]:
        """Clients blocked recently (the bans section's per-address block windows)."""
        store = self._bans() if self._bans is not None else None
        if store is None:
            return {"blocks": []}
        state = store.state
        now = state.clock()
        rows = []
        for ip, times in reversed(state.blocks.items()):  # most recently blocked first
            recent = [t for t in times if t > now - store.rules.window]
            if recent:
                rows.append(
                    {"ip": ip, "blocks": len(recent), "last_s_ago": round(now - recent[-1], 3)}
                )
            if len(rows) >= 50:
                break
        return {"blocks": rows}

    # -- actions ----------------------------------------------------------------------

    async def reload(self, args: dict[str, Any]) -> dict[str, Any]:
        w = self.worker
        if w is None or not w.handlers:
            raise ControlError(501, "this admin listener has no worker to reload")
        ok = await w.reload()
        if not ok:
            errors = _error_items(w.reloads.last_errors)
            raise ControlError(422, "reload rejected; the running config is kept", errors=errors)
        return {"ok": True, "config_hash": w.runtime.config_hash}

    async def breaker_reset(self, args: dict[str, Any]) -> dict[str, Any]:
        rt = self._runtime()
        name = str(args.get("upstream", ""))
        up = rt.upstreams.get(name)
        if up is None:
            raise ControlError(404, f"no upstream {name!r}")
        endpoint = args.get("endpoint")
        members = [m for m in up.members if endpoint is None or m.key == endpoint]
        if not members:
            raise ControlError(404, f"upstream {name!r} has no endpoint {endpoint!r}")
        now = rt.clock()
        for m in members:
            m.breaker.reset(now)
        up.group.changed()
        return {"upstream": name, "reset": [m.key for m in members]}

    async def cache_purge(self, args: dict[str, Any]) -> dict[str, Any]:
        rt = self._runtime()
        try:
            n = await rt.cache.purge(
                key=args.get("key"), prefix=args.get("prefix"), tag=args.get("tag")
            )
        except ValueError as exc:  # not exactly one target, or an empty one
            raise ControlError(400, str(exc)) from exc
        except (RedisError, OSError, TimeoutError) as exc:  # the shared (Redis) store
            raise ControlError(503, f"cache store: {type(exc).__name__}: {exc}") from exc
        return {"purged": int(n)}

    def __repr__(self) -> str:
        parts = "worker" if self.worker is not None else "parts"
        return (
            f"<WorkerOps {parts} id={self.worker_id} pid={os.getpid()}"
            f" rollouts={self._rollouts is not None} bans={self._bans is not None}>"
        )


def _error_items(errors: list[str]) -> list[dict[str, str]]:
    """Reload errors ('path: message') as {path, message}."""
    out = []
    for e in errors:
        path, sep, message = e.partition(": ")
        if not sep or " " in path:
            path, message = "", e
        out.append({"path": path, "message": message})
    return out
