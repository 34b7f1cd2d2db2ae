"""Deduplication stores: who holds an idempotency key, and the response stored for it.

A key is in one of two states: PENDING (claimed by the request being processed, with
its request fingerprint and a lease) or DONE (the fingerprint and the stored
response, until the window ends). `claim` is atomic: it either makes the caller the
holder (CLAIMED, with a token) or returns what is there. `complete(token)` turns a
claim into DONE for `window_s`, `release(token)` drops it (the response was not
stored: too large, a 5xx, a failure), both only while the token still holds the key.
`wait` returns when a PENDING key changed (or the timeout passed); the caller then
claims again.

Memory (`MemoryDedup`, per worker): a dict on the injected clock (fake in tests);
expired entries are dropped when touched and swept from the oldest end as new ones
come; the stored bodies are bounded by MEMORY_MAX_BYTES (oldest evicted first).
Waiters wait on the claim's future.

Redis (`RedisDedup`): one string key per idempotency key, so every gateway process
sees the same keys. PENDING is `P<fingerprint>:<nonce>` set with SET NX PX lease
(CLAIM_SCRIPT answers the current value in the same round trip when the key is
taken); DONE is `D<fingerprint>\\n<json [status, reason, headers]>\\n<body>` with PX
window: one value, one GET to replay. COMPLETE/RELEASE are compare-and-set scripts on
the token, so a holder whose lease ran out cannot overwrite a successor. Waiters
poll (GET every POLL_MIN_S, doubling to POLL_MAX_S): concurrent repeats are rare,
and polling needs no connection held per waiter (BLPOP would) nor a subscriber per
process (pub/sub would). Every call is bounded by `redis.timeout`; a breaker (as
the rate limiter's) makes an outage cost nothing per request while open. Failures
raise DedupUnavailable; the filter applies the route's on_store_error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import orjson
from redis.exceptions import RedisError

from gateway.config.model import Config
from gateway.config.ratelimit_model import RedisSettings
from gateway.store.breaker import Breaker, State
from gateway.store.redis_store import AnyRedis, make_client

__all__ = [
    "CLAIMED",
    "DONE",
    "MEMORY_MAX_BYTES",
    "PENDING",
    "Claim",
    "DedupStores",
    "DedupUnavailable",
    "MemoryDedup",
    "RedisDedup",
    "Stored",
]

log = logging.getLogger("gateway.dedup")

CLAIMED, PENDING, DONE = "claimed", "pending", "done"
MEMORY_MAX_BYTES = 64 << 20
POLL_MIN_S, POLL_MAX_S = 0.01, 0.2

CLAIM_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return '' end
return redis.call('GET', KEYS[1])
"""
COMPLETE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Stored:
    """A stored response: status, reason, headers (framing removed) and body."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def encode(self) -> bytes:
        return orjson.dumps([self.status, self.reason, self.headers]) + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> Stored:
        head, _, body = data.partition(b"\n")  # JSON text holds no raw newline
        status, reason, headers = orjson.loads(head)
        return cls(int(status), str(reason), [(str(k), str(v)) for k, v in headers], body)

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + 64

    def __repr__(self) -> str:
        return f"<Stored {self.status} {len(self.body)} bytes>"


class Claim(NamedTuple):
    kind: str  # CLAIMED | PENDING | DONE
    fingerprint: str  # the request fingerprint holding the key ("" when CLAIMED)
    token: str = ""  # CLAIMED: what complete/release need
    stored: Stored | None = None  # DONE: the response


class DedupUnavailable(Exception):
    """The store could not answer (Redis down, slow, breaker open)."""


class _Entry:
    __slots__ = ("expires", "fingerprint", "future", "stored", "token")

    def __init__(self, fingerprint: str, token: str, expires: float) -> None:
        self.fingerprint = fingerprint
        self.token = token
        self.expires = expires
        self.stored: Stored | None = None
        self.future: asyncio.Future[None] | None = None


def _wake(entry: _Entry) -> None:
    if entry.future is not None and not entry.future.done():
        entry.future.set_result(None)


class MemoryDedup:
    """One worker's keys (see the module note)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_bytes: int = MEMORY_MAX_BYTES
    ) -> None:
        self.clock = clock
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._seq = 0

    def _get(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= now:
            self._drop(key, entry)
            return None
        return entry

    def _drop(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        if entry.stored is not None:
            self.bytes -= entry.stored.size
        _wake(entry)

    async def claim(self, key: str, fingerprint: str, lease_s: float) -> Claim:
        now = self.clock()
        entry = self._get(key, now)
        if entry is not None:
            kind = DONE if entry.stored is not None else PENDING
            return Claim(kind, entry.fingerprint, stored=entry.stored)
        self._seq += 1
        token = f"{fingerprint}:{self._seq}"
        self._entries[key] = _Entry(fingerprint, token, now + lease_s)
        self._sweep(now)
        return Claim(CLAIMED, "", token)

    def complete_soon(self, key: str, token: str, stored: Stored, window_s: float) -> None:
        now = self.clock()
        entry = self._get(key, now)
        if entry is None or entry.token != token:
            return
        entry.stored = stored
        entry.expires = now + window_s
        self.bytes += stored.size
        self._entries.move_to_end(key)
        _wake(entry)
        while self.bytes > self.max_bytes and self._entries:
            old_key, old = next(iter(self._entries.items()))
            self._drop(old_key, old)

    def release_soon(self, key: str, token: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.token == token:
            self._drop(key, entry)

    async def wait(self, key: str, timeout_s: float) -> None:
        entry = self._get(key, self.clock())
        if entry is None or entry.stored is not None:
            return
        if entry.future is None:
            entry.future = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(entry.future), timeout_s)

    def _sweep(self, now: float) -> None:
        """Drop expired entries from the oldest end (amortised over claims)."""
        for _ in range(2):
            if not self._entries:
                return
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                return
            self._drop(key, entry)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def waiting(self) -> int:
        """Keys in flight that repeats are waiting on."""
        return sum(
            1
            for e in self._entries.values()
            if e.future is not None and not e.future.done() and e.stored is None
        )

    def __repr__(self) -> str:
        return (
            f"<MemoryDedup keys={len(self._entries)} waiting={self.waiting}"
            f" bytes={self.bytes}/{self.max_bytes}>"
        )


def _text(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


class RedisDedup:
    """The shared store (see the module note)."""

    def __init__(self, client: AnyRedis, breaker: Breaker, *, timeout_s: float) -> None:
        self.client = client
        self.breaker = breaker
        self.timeout_s = timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors = 0

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisDedup:
        b = settings.breaker
        return cls(
            make_client(settings),
            Breaker(b.failures, b.open_for, b.max_open_for),
            timeout_s=settings.timeout,
        )

    async def _call(self, fn: Callable[[Any], Any]) -> Any:
        if not self.breaker.allow():
            raise DedupUnavailable("redis circuit open")
        probe = self.breaker.state is State.HALF_OPEN
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await fn(cast(Any, self.client))
        except (RedisError, OSError, TimeoutError) as e:
            self.errors += 1
            self.breaker.record_failure(probe)
            raise DedupUnavailable(f"redis: {type(e).__name__}: {e}") from None
        self.breaker.record_success(probe)
        return result

    async def claim(self, key: str, fingerprint: str, lease_s: float) -> Claim:
        token = f"{fingerprint}:{os.urandom(8).hex()}"
        value = b"P" + token.encode()
        ms = max(1, int(lease_s * 1000))
        got = await self._call(lambda c: c.eval(CLAIM_SCRIPT, 1, key, value, ms))
        if not got:
            return Claim(CLAIMED, "", token)
        return _parse(_text(got))

    def complete_soon(self, key: str, token: str, stored: Stored, window_s: float) -> None:
        value = b"D" + token.partition(":")[0].encode() + b"\n" + stored.encode()
        ms = max(1, int(window_s * 1000))
        self._background(
            lambda c: c.eval(COMPLETE_SCRIPT, 1, key, b"P" + token.encode(), value, ms), key
        )

    def release_soon(self, key: str, token: str) -> None:
        self._background(lambda c: c.eval(RELEASE_SCRIPT, 1, key, b"P" + token.encode()), key)

    def _background(self, fn: Callable[[Any], Any], key: str) -> None:
        async def run() -> None:
            try:
                await self._call(fn)
            except DedupUnavailable as e:  # the claim's lease ends it
                log.warning("dedup: could not update %s in redis: %s", key, e)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, key: str, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pause = POLL_MIN_S
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(pause, left))
            pause = min(POLL_MAX_S, pause * 2)
            got = await self._call(lambda c: c.get(key))
            if got is None or not _text(got).startswith(b"P"):
                return

    async def close(self) -> None:
        if self._tasks:  # let the last completions land
            await asyncio.wait(list(self._tasks), timeout=self.timeout_s * 2)
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"<RedisDedup {self.breaker.state.value} errors={self.errors}>"


def _parse(value: bytes) -> Claim:
    try:
        if value.startswith(b"P"):
            return Claim(PENDING, value[1:].partition(b":")[0].decode())
        if value.startswith(b"D"):
            fingerprint, _, rest = value[1:].partition(b"\n")
            return Claim(DONE, fingerprint.decode(), stored=Stored.decode(rest))
    except (ValueError, TypeError) as e:  # orjson.JSONDecodeError is a ValueError
        raise DedupUnavailable(f"malformed dedup value in redis: {e}") from None
    raise DedupUnavailable("malformed dedup value in redis")


DedupStore = MemoryDedup | RedisDedup


class DedupStores:
    """One config's dedup stores: the worker's memory store, Redis when configured.

    `for_config` returns `previous` while the redis settings are unchanged; otherwise a
    new object keeping the memory store, and the caller closes the old one (its Redis
    client) after the swap, as with the rate-limit stores."""

    def __init__(self, redis: RedisSettings | None, memory: MemoryDedup) -> None:
        self.redis_settings = redis
        self.memory = memory
        self.redis = RedisDedup.from_settings(redis) if redis is not None else None
        self.key_prefix = redis.key_prefix if redis is not None else ""

    @classmethod
    def for_config(
        cls,
        config: Config,
        previous: DedupStores | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> DedupStores:
        used = any(r.dedup is not None for r in config.routes)
        redis = config.redis if used else None
        if previous is not None and previous.redis_settings == redis:
            return previous
        memory = previous.memory if previous is not None else MemoryDedup(clock)
        return cls(redis, memory)

    @property
    def store(self) -> DedupStore:
        return self.redis if self.redis is not None else self.memory

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()

    def __repr__(self) -> str:
        return f"<DedupStores {self.memory!r} redis={self.redis!r}>"
