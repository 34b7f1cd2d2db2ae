"""Redis faults under load: a redis-server to abuse, a gateway process using it, a load.

`FaultyRedis` wraps a dedicated `RedisServer` (tests/redis_server.py) with the faults
of issue 12: `kill` (SIGKILL, a crash; `start` brings it back empty on the same port),
`pause`/`resume` (SIGSTOP/SIGCONT: the kernel still accepts connections and buffers
requests, nothing is answered), `terminate` (SIGTERM, a clean shutdown that closes
every client connection) and `flushall`. It reads keys with its own short-timeout
client, so a test can tell a decision Redis made from one the memory fallback made.

`Gateway` is `python -m gateway run` (tests/support.py's GatewayProcess) with every
feature that keeps state in Redis: two rate-limited routes (`on_store_error: open`
and `closed`, keyed by client address), shared bans fed by screening blocks, a
service with a rollout whose state lives in Redis, two dedup routes (`open`,
`closed`) and a route cached in the Redis cache store. Client addresses come from
X-Forwarded-For (the test client is a trusted proxy), so a test can be many clients.
The probes (`limited_through_redis`, `dedup_through_redis`, `cached_through_redis`)
succeed only when Redis itself decided, not a memory fallback.

`Load` is closed-loop clients cycling over the routes, each answer recorded with its
start time, status and latency; a client gives up after `HUNG_S` (a hung request),
which the tests assert never happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from tests.redis_server import RedisServer
from tests.support import (
    GatewayProcess,
    free_port,
    gateway_config,
    serve_app,
    upstream_app,
    write_config,
)

HUNG_S = 10.0  # a request without an answer this long is hung
PREFIX = "rf:"
CACHE_PREFIX = "rfc:"
# Each route of `config` and what the load sends it. A new client address (and
# idempotency key) per request or three: far below every limit while Redis is healthy.
ROUTES = ("open", "closed", "svc", "api", "dopen", "dclosed", "cached")
RATE, BURST = "5/s", 10
ATTACK = "/api/items?id=1%27%20or%20%271%27%3D%271"  # 1' or '1'='1: a screening block
RECOVER_S = 10.0  # deadline for "enforced through Redis again" (breaker backoff <= 1 s)
TIMEOUT_MISSING = -1  # Answer.status of a request that hit HUNG_S
CONNECTION_ERROR = -2


class FaultyRedis:
    """A dedicated redis-server that tests crash, pause, restart and flush."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.url = server.url
        self.paused = False
        self._client = redis.Redis.from_url(
            server.url, socket_timeout=1.0, socket_connect_timeout=1.0
        )

    def kill(self) -> None:
        self.server.kill()
        self.paused = False

    def terminate(self) -> None:
        self.server.signal(signal.SIGTERM)
        assert self.server.proc is not None
        self.server.proc.wait(10)

    def start(self) -> None:
        self.server.start()

    def pause(self) -> None:
        self.server.pause()
        self.paused = True

    def resume(self) -> None:
        self.server.resume()
        self.paused = False

    def resume_if_paused(self) -> None:
        if self.paused and self.server.proc is not None and self.server.proc.poll() is None:
            self.resume()

    def flushall(self) -> None:
        self._client.flushall()

    def exists(self, key: str) -> bool:
        return bool(self._client.exists(key))

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"<FaultyRedis {self.server!r}>"


@pytest.fixture
def faulty_redis(redis_factory: Callable[[], RedisServer]) -> Iterator[FaultyRedis]:
    r = FaultyRedis(redis_factory())
    yield r
    r.close()


def config(up: int, port: int, admin: int, redis_url: str, version: int) -> dict[str, Any]:
    def limited(name: str, on_error: str) -> dict[str, Any]:
        policy = {"name": "per-ip", "rate": RATE, "burst": BURST, "key": ["client_ip"],
                  "store": "redis", "on_store_error": on_error}  # fmt: skip
        return {"name": name, "match": {"path": {"prefix": f"/{name}"}}, "upstream": "up",
                "rate_limits": [policy]}  # fmt: skip

    cfg = gateway_config(
        port=port,
        admin_port=admin,
        upstreams={"up": [f"http://127.0.0.1:{up}"], "up-canary": [f"http://127.0.0.1:{up}"]},
        routes=[
            limited("open", "open"),
            limited("closed", "closed"),
            {"name": "api", "match": {"path": {"prefix": "/api"}}, "upstream": "up",
             "screening": {}},
            {"name": "svc", "match": {"path": {"prefix": "/svc"}}, "upstream": "svc",
             "headers": {"response": {"set": {"X-Config-Version": str(version)}}}},
            {"name": "dopen", "match": {"path": {"prefix": "/dopen"}}, "upstream": "up",
             "dedup": {"on_store_error": "open"}},
            {"name": "dclosed", "match": {"path": {"prefix": "/dclosed"}}, "upstream": "up",
             "dedup": {"on_store_error": "closed"}},
            {"name": "cached", "match": {"path": {"prefix": "/cached"}}, "upstream": "up",
             "cache": {"default_ttl": "60s"}},
        ],
    )  # fmt: skip
    cfg["services"] = {
        "svc": {
            "versions": {"stable": {"upstream": "up"}, "canary": {"upstream": "up-canary"}},
            "sticky": {"key": "header", "name": "X-Client"},
            "rollout": {"steps": [{"weight": 50, "hold": "10m"}, {"weight": 100}],
                        "interval": "300ms", "gates": {"min_requests": 1_000_000}},
        }
    }  # fmt: skip
    cfg["trusted_proxies"] = ["127.0.0.1/32"]
    cfg["redis"] = {
        "url": redis_url,
        "timeout": "50ms",
        "key_prefix": PREFIX,
        "breaker": {"failures": 3, "open_for": "250ms", "max_open_for": "1s"},
    }
    cfg["bans"] = {"after_blocks": 2, "ban_for": "15m", "sync_interval": "200ms"}
    cfg["cache_store"] = {
        "backend": "redis",
        "redis": {"url": redis_url, "timeout": "50ms", "key_prefix": CACHE_PREFIX,
                  "breaker": {"failures": 3, "open_for": "250ms", "max_open_for": "1s"}},
    }  # fmt: skip
    return cfg


@dataclass
class Gateway:
    proc: GatewayProcess
    redis: FaultyRedis
    write: Callable[[int], None]  # rewrite the config file at this version (reload)

    @property
    def url(self) -> str:
        return self.proc.url

    def log(self) -> str:
        return self.proc.log()


StartGateway = Callable[[], Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(faulty_redis: FaultyRedis, tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Start the gateway (once) on `faulty_redis`, whatever state that is in."""
    procs: list[GatewayProcess] = []
    async with serve_app(upstream_app("up")) as up:
        port, admin = free_port(), free_port()
        path = tmp_path / "gateway.yaml"

        def write(version: int) -> None:
            write_config(path, config(up, port, admin, faulty_redis.url, version))

        async def start() -> Gateway:
            write(1)
            proc = GatewayProcess(path, port, admin)
            procs.append(proc)
            await proc.wait_ready()
            return Gateway(proc, faulty_redis, write)

        try:
            yield start
        finally:
            faulty_redis.resume_if_paused()
            for proc in procs:
                await asyncio.to_thread(proc.stop)


@pytest.fixture
async def gateway_on(start_gateway: StartGateway) -> Gateway:
    """The gateway, started while its Redis is healthy."""
    return await start_gateway()


# --- probes -----------------------------------------------------------------------------


async def get(s: aiohttp.ClientSession, url: str, ip: str) -> aiohttp.ClientResponse:
    async with s.get(url, headers={"X-Forwarded-For": ip}) as r:
        await r.read()
        return r


async def until(what: str, check: Callable[[], Awaitable[bool] | bool], gw: Gateway) -> float:
    """Poll `check` until true (other processes: no clock to move); seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVER_S:
        ok = check()
        if ok if isinstance(ok, bool) else await ok:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {RECOVER_S:g} s: {what}\n{gw.log()[-4000:]}")


_probe_clients = itertools.count(1)


async def limited_through_redis(s: aiohttp.ClientSession, gw: Gateway, route: str) -> bool:
    """A fresh client gets exactly its burst, then 429, and its bucket is in Redis."""
    n = next(_probe_clients)
    ip = f"192.0.{n // 250 % 250}.{n % 250}"
    codes = [(await get(s, f"{gw.url}/{route}/x", ip)).status for _ in range(BURST + 3)]
    return (
        codes[:BURST] == [200] * BURST
        and 429 in codes[BURST:]
        and gw.redis.exists(f"{PREFIX}{route}:per-ip:{ip}")
    )


async def dedup_through_redis(s: aiohttp.ClientSession, gw: Gateway, route: str) -> bool:
    """A repeat of a fresh idempotency key is replayed (the Redis store answered)."""
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    async with s.post(f"{gw.url}/{route}/x", headers=headers) as r:
        await r.read()
        if r.status != 200:
            return False
    return await replayed(s, gw, route, headers["Idempotency-Key"])


async def replayed(s: aiohttp.ClientSession, gw: Gateway, route: str, key: str) -> bool:
    async with s.post(f"{gw.url}/{route}/x", headers={"Idempotency-Key": key}) as r:
        await r.read()
        return r.status == 200 and r.headers.get("Idempotent-Replayed") == "true"


async def cached_through_redis(s: aiohttp.ClientSession, gw: Gateway) -> bool:
    """A fresh URL is stored and then hit (no in-process layer: the hit is Redis's)."""
    url = f"{gw.url}/cached/{uuid.uuid4().hex}"
    for _ in range(10):  # the first GET stores in the background
        async with s.get(url) as r:
            await r.read()
            if r.status == 200 and "hit" in r.headers.get("Cache-Status", ""):
                return True
        await asyncio.sleep(0.05)
    return False


# --- the load --------------------------------------------------------------------------


@dataclass
class Answer:
    route: str
    started: float  # time.monotonic()
    status: int  # TIMEOUT_MISSING / CONNECTION_ERROR when there was none
    latency_s: float


@dataclass
class Load:
    """Closed-loop clients over every route of ROUTES until `stop`."""

    url: str
    answers: list[Answer] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, s: aiohttp.ClientSession, i: int) -> None:
        n = 0
        tag = uuid.uuid4().int % 200
        while not self.stop.is_set():
            route = ROUTES[n % len(ROUTES)]
            # Rate limits: a new client address every 3 requests per route, far below the
            # burst, so every refusal seen comes from a fault, not from the limit.
            ip = f"10.{tag}.{i}.{n // (3 * len(ROUTES)) % 250}"
            headers = {"X-Forwarded-For": ip, "X-Client": f"c{i}-{n % 7}"}
            method, path = "GET", f"/{route}/items"
            if route in ("dopen", "dclosed"):
                method = "POST"
                headers["Idempotency-Key"] = uuid.uuid4().hex
            elif route == "cached":
                path = f"/cached/items?page={n % 20}"  # mostly hits while Redis answers
            await self.one(s, route, method, self.url + path, headers)
            n += 1

    async def one(
        self, s: aiohttp.ClientSession, route: str, method: str, url: str, headers: Any
    ) -> None:
        started = time.monotonic()
        try:
            async with s.request(method, url, headers=headers) as r:
                await r.read()
                status = r.status
        except TimeoutError:
            status = TIMEOUT_MISSING
        except aiohttp.ClientError:
            status = CONNECTION_ERROR
        self.answers.append(Answer(route, started, status, time.monotonic() - started))

    def during(self, route: str, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if a.route == route and start <= a.started < end]


@contextlib.asynccontextmanager
async def load(url: str, clients: int = 8) -> AsyncIterator[Load]:
    timeout = aiohttp.ClientTimeout(total=HUNG_S)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        lo = Load(url)
        tasks = [asyncio.create_task(lo.client(s, i)) for i in range(clients)]
        try:
            yield lo
        finally:
            lo.stop.set()
            await asyncio.gather(*tasks)


def statuses(answers: list[Answer]) -> dict[int, int]:
    out: dict[int, int] = {}
    for a in answers:
        out[a.status] = out.get(a.status, 0) + 1
    return dict(sorted(out.items()))
