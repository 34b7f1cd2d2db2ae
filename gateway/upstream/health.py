"""Active health checks: a GET on a path per endpoint, every interval.

`HealthState` is one endpoint's verdict: `up` flips to False after
`unhealthy_threshold` failed checks in a row and back after `healthy_threshold`
passing ones. Endpoints start up (a fresh gateway serves at once; the breaker covers
the first failures), and an upstream without a `health_check` uses `ALWAYS_UP`.

`HealthChecker` runs the checks of one upstream: `check_once()` checks every
endpoint concurrently (tests call it directly; no sleeping to reach a state), and
`start()` runs it every `interval_s` in a task until `stop()`. Checks go through the
endpoint's own connection pool (a check is an ordinary keep-alive request, so it
also proves the pool's path works) with `timeout_s` as connect, read and total time.

Every worker process runs the checks for its own endpoints: with N workers an
endpoint sees N checks per interval, and each worker acts on its own view (no
cross-process coordination, as with nginx's and Envoy's per-worker checks). An
endpoint out by health or by its breaker is out of rotation (`Member.available`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import GatewayError
from gateway.upstream.pool import ConnectionPool

log = logging.getLogger("gateway.health")


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    path: str = "/health"
    expected_statuses: frozenset[int] = frozenset({200})
    interval_s: float = 5.0
    timeout_s: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    host: str | None = None  # Host header; None: the endpoint's host[:port]

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be > 0")
        if self.healthy_threshold < 1 or self.unhealthy_threshold < 1:
            raise ValueError("thresholds must be >= 1")


def _nothing() -> None:
    pass


class HealthState:
    __slots__ = (
        "_streak",
        "checks_failed",
        "checks_passed",
        "last_error",
        "name",
        "on_change",
        "policy",
        "transitions",
        "up",
    )

    def __init__(self, policy: HealthPolicy | None, name: str = "") -> None:
        self.policy = policy
        self.name = name
        self.up = True
        self._streak = 0  # consecutive results against the current verdict
        self.checks_passed = 0
        self.checks_failed = 0
        self.transitions = 0
        self.last_error = ""
        self.on_change: Callable[[], None] = _nothing

    def record(self, ok: bool, error: str = "") -> None:
        policy = self.policy
        if policy is None:
            return
        if ok:
            self.checks_passed += 1
        else:
            self.checks_failed += 1
            self.last_error = error
        if ok == self.up:
            self._streak = 0
            return
        self._streak += 1
        needed = policy.healthy_threshold if ok else policy.unhealthy_threshold
        if self._streak >= needed:
            self.up = ok
            self._streak = 0
            self.transitions += 1
            log.warning("endpoint %s is %s by health check", self.name, "up" if ok else "down")
            self.on_change()

    def __repr__(self) -> str:
        return (
            f"<HealthState {self.name} {'up' if self.up else 'down'} streak={self._streak} "
            f"passed={self.checks_passed} failed={self.checks_failed}>"
        )


ALWAYS_UP = HealthState(None, "always-up")
"""The shared state of endpoints without health checks: never recorded, always up."""


class HealthChecker:
    __slots__ = ("_round", "_task", "name", "policy", "rounds", "targets")

    def __init__(
        self, name: str, policy: HealthPolicy, targets: list[tuple[ConnectionPool, HealthState]]
    ) -> None:
        self.name = name
        self.policy = policy
        self.targets = tuple(targets)
        self.rounds = 0
        self._round: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def check_once(self) -> None:
        await asyncio.gather(*(self._check(pool, state) for pool, state in self.targets))
        self.rounds += 1
        if self._round is not None:
            self._round.set()
            self._round = None

    async def next_round(self) -> None:
        """Wait until the running loop finishes its next round of checks."""
        if self._round is None:
            self._round = asyncio.Event()
        await self._round.wait()

    async def _check(self, pool: ConnectionPool, state: HealthState) -> None:
        p = self.policy
        loop = asyncio.get_running_loop()
        host = p.host or pool.spec.host_header
        headers = [("Host", host), ("User-Agent", "gateway-health-check"), ("Accept", "*/*")]
        try:
            async with asyncio.timeout(p.timeout_s):
                resp = await pool.request(
                    "GET",
                    p.path,
                    headers,
                    None,
                    content_length=None,
                    connect_timeout_s=p.timeout_s,
                    read_timeout_s=p.timeout_s,
                    deadline=loop.time() + p.timeout_s,
                    retry_stale=True,
                )
                try:
                    await resp.read_all()
                finally:
                    resp.release()
        except (GatewayError, TimeoutError, OSError) as e:
            state.record(False, f"{type(e).__name__}: {e}")
            return
        ok = resp.status in p.expected_statuses
        state.record(ok, "" if ok else f"status {resp.status}")

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # a bug must not stop the checks for good
                log.exception("health checks of upstream %s failed", self.name)
            await asyncio.sleep(self.policy.interval_s)

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __repr__(self) -> str:
        states = ", ".join(f"{s.name}={'up' if s.up else 'down'}" for _, s in self.targets)
        return f"<HealthChecker {self.name} rounds={self.rounds} running={self.running} [{states}]>"
