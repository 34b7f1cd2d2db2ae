"""The shared Redis bucket store: one atomic Lua script per batch of checks.

The script. `TAKE_SCRIPT` takes N keys, each with its own (rate per ms, burst, cost)
in ARGV[1] (one space-separated string), and answers one string of four integers per
key: allowed, remaining, retry_after_ms (-1: never), reset_ms. Flat strings both ways
because redis-py's pure-Python RESP parser pays a readline per array element, which
made parsing, not Redis, the cost of a nested reply. The script is
`bucket.take` transcribed, on `redis.call('TIME')`: the Redis server's clock, so
gateway hosts with skewed clocks agree and no gateway timestamp is trusted. A bucket
is a hash {t: tokens, ts: ms}; each write sets PEXPIRE to the time until the bucket
is full again, when an absent key means the same thing, so keys expire on their own.
The whole batch runs atomically; the same key twice in one batch is checked twice in
order. Script effects replication (the default since Redis 5) makes TIME safe.

Batching (DESIGN.md, "The hot path": one EVALSHA per decision caps a process at
17k decisions/s; one multi-key call per batch reaches 82k at 50). `take` queues its
checks and returns a future; the first check queued schedules `_flush` with
`call_soon`, so every request that reaches the limiter within the same event-loop
tick joins the same call. A flush sends batches of at most `max_batch` keys (one
request's checks are never split) while fewer than `max_in_flight` calls are out;
when a call returns, what queued meanwhile is flushed at once (group commit). So
under load a batch holds what arrived during one round trip, and idle latency is one
round trip plus one tick. No request waits on another request's round trip in series.
EVALSHA answered NOSCRIPT (a restarted or flushed Redis) loads the script and retries
once, inside the same timeout.

Timeouts and failure. `timeout_s` bounds each request's wait, not each call's: a
check's deadline is set when it is queued, and a call runs under
`asyncio.timeout_at` of its batch's earliest deadline (the oldest check, the queue
being FIFO), connecting included. A check that waited for a free call slot (all
`max_in_flight` calls out, e.g. to a paused server) thus gets only what is left of
its timeout instead of a full one more, and one whose timeout ran out in the queue
fails without a call (and without a breaker event: it never reached Redis). So a
request is decided within `timeout_s` plus event-loop lag, never twice that. (The
client's own retries are off: a retry would double the wait.) A failed or timed-out
call fails its whole batch with `StoreUnavailable` and counts as one
breaker failure; the callers decide what that means (fall back to memory or 503).
While the breaker is open `take` fails at once without touching the network; the
first batch after the backoff is the probe that closes it again. A cancelled call
makes redis-py drop that connection, so a paused (SIGSTOPped) server leaves no
half-read reply behind; reconnecting is the pool's job on the next call.
A call that timed out may still run later (a paused server reads it on SIGCONT): its
tokens are spent though its requests were decided elsewhere, an error on the
protective side.

Cluster. Keys in one script must share a slot. Each key gets a hash tag
`{<crc32(key) % 64>}` after the prefix, so a batch is split into at most 64
single-slot calls run concurrently (64 tags spread evenly over any number of shards;
a batch of 256 keys still makes few calls). Non-cluster keys carry no tag.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.config.ratelimit_model import RedisSettings, sentinel_parts
from gateway.store.breaker import Breaker, State
from gateway.store.bucket import Decision, Limit

__all__ = [
    "CLUSTER_TAGS",
    "TAKE_SCRIPT",
    "Check",
    "RedisStore",
    "StoreUnavailable",
    "make_client",
]

CLUSTER_TAGS = 64

TAKE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local args = {}
for word in string.gmatch(ARGV[1], '%S+') do
  args[#args + 1] = tonumber(word)
end
local out = {}
for i, key in ipairs(KEYS) do
  local j = (i - 1) * 3
  local rate = args[j + 1]
  local burst = args[j + 2]
  local cost = args[j + 3]
  local state = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(state[1])
  local last = tonumber(state[2])
  if tokens == nil or last == nil then
    tokens = burst
    last = now
  elseif now > last then
    tokens = math.min(burst, tokens + (now - last) * rate)
    last = now
  end
  local allowed = 0
  local retry = 0
  if tokens + 1e-9 >= cost then
    tokens = math.max(0, tokens - cost)
    allowed = 1
  elseif cost > burst then
    retry = -1
  else
    retry = math.ceil((cost - tokens) / rate)
  end
  local reset = math.ceil((burst - tokens) / rate)
  if reset > 0 then
    redis.call('HSET', key, 't', tostring(tokens), 'ts', tostring(last))
    redis.call('PEXPIRE', key, reset)
  else
    redis.call('DEL', key)
  end
  out[i] = string.format('%d %d %d %d', allowed, math.floor(tokens + 1e-9), retry, reset)
end
return table.concat(out, ' ')
"""


class Check(NamedTuple):
    """One bucket check: spend `cost` tokens of `key`'s bucket shaped by `limit`."""

    key: str  # logical key, without the store's prefix
    limit: Limit
    cost: int


class StoreUnavailable(Exception):
    """Redis could not answer (down, slow, breaker open); the caller applies its policy."""


AnyRedis = Redis | RedisCluster


def make_client(settings: RedisSettings) -> AnyRedis:
    """A redis-py asyncio client for `settings`: single server, Sentinel or Cluster."""
    timeout = settings.timeout
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.url.lower().startswith("redis+sentinel://"):
        addresses, service, db, password = sentinel_parts(settings.url)
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            addresses,
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
            **common,
        )
        return cast(Redis, sentinel.master_for(service, db=db, password=password))
    if settings.cluster:
        return RedisCluster.from_url(settings.url, **common)
    return Redis.from_url(settings.url, **common)


def _cluster_key(prefix: str, key: str) -> str:
    return f"{prefix}{{{zlib.crc32(key.encode()) % CLUSTER_TAGS}}}{key}"


class _Pending(NamedTuple):
    checks: Sequence[Check]
    future: asyncio.Future[list[Decision]]
    deadline: float  # loop time by which the checks are decided, or failed


class RedisStore:
    """Batched, timed, circuit-broken bucket checks against one Redis deployment."""

    def __init__(
        self,
        client: AnyRedis,
        breaker: Breaker,
        *,
        key_prefix: str = "gw:rl:",
        timeout_s: float = 0.05,
        max_batch: int = 256,
        max_in_flight: int = 1,
        cluster: bool = False,
    ) -> None:
        self.client = client
        self.breaker = breaker
        self.key_prefix = key_prefix
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.cluster = cluster
        self.sha: str | None = None
        self._pending: deque[_Pending] = deque()
        self._queued_keys = 0
        self._scheduled = False
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Counters (plain ints; the metrics module exports them).
        self.calls = 0  # script calls sent (a cluster batch split by slot counts once)
        self.keys = 0  # bucket checks sent
        self.errors = 0  # calls that failed or timed out
        self.rejected = 0  # checks refused at once while the breaker was open
        self.expired = 0  # checks whose timeout ran out while queued for a call slot

    @classmethod
    def from_settings(cls, settings: RedisSettings, breaker: Breaker) -> RedisStore:
        return cls(
            make_client(settings),
            breaker,
            key_prefix=settings.key_prefix,
            timeout_s=settings.timeout,
            max_batch=settings.max_batch,
            max_in_flight=settings.max_in_flight,
            cluster=settings.cluster,
        )

    def redis_key(self, key: str) -> str:
        return _cluster_key(self.key_prefix, key) if self.cluster else self.key_prefix + key

    def take(self, checks: Sequence[Check]) -> asyncio.Future[list[Decision]]:
        """Queue `checks` for the next batch; the future fails with StoreUnavailable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Decision]] = loop.create_future()
        if self._blocked():
            self.rejected += len(checks)
            future.set_exception(StoreUnavailable("redis circuit open"))
            return future
        self._pending.append(_Pending(checks, future, loop.time() + self.timeout_s))
        self._queued_keys += len(checks)
        if not self._scheduled and self._in_flight < self.max_in_flight:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _blocked(self) -> bool:
        b = self.breaker
        if b.state is State.CLOSED:
            return False
        if b.state is State.OPEN:
            return b.clock() < b.open_until
        return True  # HALF_OPEN: the probe is out

    def _flush(self) -> None:
        self._scheduled = False
        now = asyncio.get_running_loop().time()
        while self._pending and self._pending[0].deadline <= now:
            # Its timeout ran out waiting for a call slot: no doomed call, no breaker event.
            item = self._pending.popleft()
            self._queued_keys -= len(item.checks)
            self.expired += len(item.checks)
            _fail([item], StoreUnavailable("redis: no call slot within the timeout"))
        while self._pending and self._in_flight < self.max_in_flight:
            batch: list[_Pending] = []
            size = 0
            while self._pending and (
                not batch or size + len(self._pending[0].checks) <= self.max_batch
            ):
                item = self._pending.popleft()
                batch.append(item)
                size += len(item.checks)
            self._queued_keys -= size
            if not self.breaker.allow():
                self.rejected += size
                _fail(batch, StoreUnavailable("redis circuit open"))
                continue
            probe = self.breaker.state is State.HALF_OPEN
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch, probe))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending], probe: bool) -> None:
        checks = [c for item in batch for c in item.checks]
        self.calls += 1
        self.keys += len(checks)
        try:
            async with asyncio.timeout_at(batch[0].deadline):
                rows = await self._run(checks)
        except (RedisError, OSError, TimeoutError) as e:
            self.errors += 1
            self.breaker.record_failure(probe)
            _fail(batch, StoreUnavailable(f"redis: {type(e).__name__}: {e}"))
        except asyncio.CancelledError:  # close(): no request may wait on this batch forever
            _fail(batch, StoreUnavailable("store closed"))
            raise
        else:
            self.breaker.record_success(probe)
            i = 0
            for item in batch:
                n = len(item.checks)
                if not item.future.done():
                    item.future.set_result([_decision(r) for r in rows[i : i + n]])
                i += n
        finally:
            self._in_flight -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    async def _run(self, checks: list[Check]) -> list[list[int]]:
        if not self.cluster:
            return await self._eval(checks)
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(checks):
            groups.setdefault(zlib.crc32(c.key.encode()) % CLUSTER_TAGS, []).append(i)
        parts = await asyncio.gather(
            *(self._eval([checks[i] for i in idx]) for idx in groups.values())
        )
        rows: list[list[int]] = [[] for _ in checks]
        for idx, part in zip(groups.values(), parts, strict=True):
            for i, row in zip(idx, part, strict=True):
                rows[i] = row
        return rows

    async def _eval(self, checks: list[Check]) -> list[list[int]]:
        keys = [self.redis_key(c.key) for c in checks]
        args = " ".join(f"{c.limit.rate / 1000.0!r} {c.limit.burst} {c.cost}" for c in checks)
        client = cast(Any, self.client)
        reply: bytes | str
        if self.sha is not None:
            try:
                reply = await client.evalsha(self.sha, len(keys), *keys, args)
                return _rows(reply)
            except NoScriptError:
                pass
        self.sha = cast(str, await client.script_load(TAKE_SCRIPT))
        reply = await client.evalsha(self.sha, len(keys), *keys, args)
        return _rows(reply)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        _fail(self._pending, StoreUnavailable("store closed"))
        self._pending.clear()
        await self.client.aclose()

    def __repr__(self) -> str:
        return (
            f"<RedisStore {self.breaker.state.value} calls={self.calls} keys={self.keys}"
            f" errors={self.errors} rejected={self.rejected} expired={self.expired}"
            f" in_flight={self._in_flight} queued={self._queued_keys}>"
        )


def _rows(reply: bytes | str) -> list[list[int]]:
    numbers = [int(x) for x in reply.split()]
    return [numbers[i : i + 4] for i in range(0, len(numbers), 4)]


def _decision(row: list[int]) -> Decision:
    allowed, remaining, retry_ms, reset_ms = row
    retry = float("inf") if retry_ms < 0 else retry_ms / 1000.0
    return Decision(allowed == 1, remaining, retry, reset_ms / 1000.0)


def _fail(batch: Sequence[_Pending], error: StoreUnavailable) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)
