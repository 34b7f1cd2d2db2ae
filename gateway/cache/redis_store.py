"""The Redis store: cached responses shared by every gateway instance.

Key layout (P = `key_prefix`, names as in entry.py):

    P e:<entry key>   the entry (entry.encode(): header JSON, newline, body), EX = keep
    P v:<primary>     the Vary names of the primary key's responses, EX = longest keep
    P t:<tag>         SET of the `P e:` names tagged so, EX = longest keep of a member

Entry keys start with the URL form (`host/path?query` + NUL), so purge by key is a
SCAN MATCH of `P e:<url>\\x00*` and purge by prefix `P e:<prefix>*` (glob characters
escaped), across every instance. Purge by tag reads the tag's SET and deletes its
members in one script. Tag sets are only appended to; a member that expired or was
replaced costs a no-op DEL at purge time, and the set itself expires with its
longest-lived member, so nothing in Redis outlives the entries it names.

Keep time (EX): freshness left + the longest stale window the entry may be served in
(stale-while-revalidate / stale-if-error, none under must-revalidate) + `keep_stale`
(so an expired entry with a validator can still be revalidated with a 304).

Lookup is one round trip (MGET of `v:` and the `e:` key the Vary names last seen
for this primary key predict); a second GET only when the names changed. Concurrent
lookups of the same keys share one MGET (single flight). There is no
in-process hot layer: every hit is read from Redis, so a purge or a refreshed entry is
seen by every instance at once and nothing is served beyond its policy. Times inside
entries are wall-clock (`clock`, default time.time) since instances share them.

Failure: every call runs under `timeout_s` and a breaker (gateway/store/breaker.py).
A failed lookup is a miss (the upstream answers), a failed write is dropped; each
failure counts in `errors` and is logged at most once per LOG_EVERY_S with the count
since the last line; while the breaker is open Redis is not called at all (`bypassed`).
Collapsed misses (request collapsing) stay per process: instances do not wait on each
other's upstream requests.

Known gaps: Redis Cluster is not supported (the put and tag scripts name keys of many
slots); Redis's own memory bound is the operator's (`maxmemory` with an LRU policy):
each entry is bounded by the route's max_entry_bytes, the store as a whole is not.
A purge by key or prefix SCANs the keyspace (admin operation, O(keys)).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from multidict import MultiMapping
from redis.exceptions import RedisError

from gateway.cache.entry import Entry, secondary_key
from gateway.cache.store import purge_target
from gateway.config.cache_model import CacheRedis
from gateway.config.ratelimit_model import RedisSettings
from gateway.store.breaker import Breaker, State
from gateway.store.redis_store import AnyRedis, make_client

__all__ = ["LOG_EVERY_S", "RedisCacheStore"]

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0
SCAN_COUNT = 1000
_HINTS_MAX = 4096
T = TypeVar("T")
Raw = bytes  # `bytes` is also an attribute name in the class (the metric)

# KEYS: entry, vary, tags...; ARGV: payload, vary names, keep seconds.
PUT_SCRIPT = """
local keep = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', keep)
if redis.call('TTL', KEYS[2]) < keep then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', keep)
else
  redis.call('SET', KEYS[2], ARGV[2], 'KEEPTTL')
end
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('TTL', KEYS[i]) < keep then
    redis.call('EXPIRE', KEYS[i], keep)
  end
end
return 1
"""

# KEYS: the tag set. Deletes its members and itself; answers how many entries existed.
PURGE_TAG_SCRIPT = """
local n = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', k)
end
redis.call('DEL', KEYS[1])
return n
"""


def glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisCacheStore:
    """Entries in Redis; see the module note."""

    immediate = False
    bytes = 0  # nothing held in process (the metric of the memory store's size)

    def __init__(
        self,
        settings: CacheRedis,
        client: AnyRedis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.client = client if client is not None else _client(settings)
        self.clock = clock
        self.prefix = settings.key_prefix
        self.timeout_s = settings.timeout
        b = settings.breaker
        self.breaker = Breaker(b.failures, b.open_for, b.max_open_for)
        self._hints: dict[str, tuple[str, ...]] = {}  # primary -> Vary names last seen
        self._tasks: set[asyncio.Task[None]] = set()
        self._reads: dict[tuple[str, ...], asyncio.Future[list[Raw | None]]] = {}
        self._put_sha: str | None = None
        self._last_log = -LOG_EVERY_S
        self._unlogged = 0
        # Counters (plain ints, for the metrics module).
        self.hits = 0  # lookups that found an entry
        self.errors = 0  # calls that failed or timed out
        self.bypassed = 0  # calls not made: the breaker was open
        self.writes = 0
        self.purged = 0

    # -- the guarded call ---------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]], timeout_s: float) -> T | None:
        """fn() under the timeout and the breaker; None when Redis could not answer."""
        breaker = self.breaker
        if not breaker.allow():
            self.bypassed += 1
            return None
        probe = breaker.state is State.HALF_OPEN
        try:
            async with asyncio.timeout(timeout_s):
                result = await fn()
        except (RedisError, OSError, TimeoutError) as e:
            breaker.record_failure(probe)
            self._failed(what, e)
            return None
        breaker.record_success(probe)
        return result

    def _failed(self, what: str, e: BaseException) -> None:
        self.errors += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            log.warning(
                "cache store (redis %s) unavailable, cache bypassed: %s failed: %s: %s"
                " (%d failures since the last report)",
                self.settings.url,
                what,
                type(e).__name__,
                e,
                self._unlogged,
            )
            self._last_log = now
            self._unlogged = 0

    # -- lookups ----------------------------------------------------------------------

    def lookup_now(self, primary: str, h: MultiMapping[str]) -> Entry | None:
        return None  # no in-process layer: see the module note

    def known(self, primary: str) -> bool:
        return primary in self._hints

    async def lookup(self, primary: str, h: MultiMapping[str]) -> Entry | None:
        entry = await self._call("lookup", lambda: self._lookup(primary, h), self.timeout_s)
        if entry is not None:
            self.hits += 1
        return entry

    async def _lookup(self, primary: str, h: MultiMapping[str]) -> Entry | None:
        p = self.prefix
        client = cast(Any, self.client)
        hint = self._hints.get(primary)
        guess = secondary_key(primary, hint, h) if hint is not None else None
        keys = [p + "v:" + primary] + ([p + "e:" + guess] if guess is not None else [])
        values = await self._mget(keys)
        if values[0] is None:
            self._hints.pop(primary, None)
            return None
        raw_vary = values[0].decode()
        vary = tuple(raw_vary.split(",")) if raw_vary else ()
        if len(self._hints) >= _HINTS_MAX and primary not in self._hints:
            self._hints.clear()  # bounded: a hint is only an optimisation
        self._hints[primary] = vary
        key = secondary_key(primary, vary, h)
        data = values[1] if key == guess else await client.get(p + "e:" + key)
        if data is None:
            return None
        try:
            entry = Entry.decode(data)
        except (ValueError, KeyError, TypeError) as e:  # not Redis failing: a miss
            log.warning("cache store: unreadable entry %r skipped: %s", key[:200], e)
            return None
        return entry if entry.key == key else None

    async def _mget(self, keys: list[str]) -> list[Raw | None]:
        """MGET, one call for all the concurrent lookups of the same keys (a burst of
        requests for one cold URL makes one round trip, not one connection each)."""
        name = tuple(keys)
        fut = self._reads.get(name)
        if fut is None:
            fut = asyncio.ensure_future(cast(Any, self.client).mget(keys))
            self._reads[name] = fut

            def done(f: asyncio.Future[list[Raw | None]]) -> None:
                self._reads.pop(name, None)
                if not f.cancelled():
                    f.exception()  # retrieved: callers that timed out are not waiting

            fut.add_done_callback(done)
        return await asyncio.shield(fut)

    # -- writes ------------------------------------------------------------------------

    def put(self, entry: Entry, then: Callable[[bool], None]) -> None:
        self._spawn(self._put(entry, then))

    def refreshed(self, entry: Entry) -> None:
        self._spawn(self._put(entry, None))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put(self, entry: Entry, then: Callable[[bool], None] | None) -> None:
        stored = False
        try:
            stored = await self._call("store", lambda: self._write(entry), self.timeout_s) or False
        finally:
            if then is not None:
                then(stored)

    async def _write(self, entry: Entry) -> bool:
        p = self.prefix
        keep = entry.keep_s(self.clock(), self.settings.keep_stale)
        keys = [p + "e:" + entry.key, p + "v:" + entry.primary]
        keys += [p + "t:" + t for t in entry.tags]
        args = (entry.encode(), ",".join(entry.vary), keep)
        await self._script(PUT_SCRIPT, keys, args)
        self.writes += 1
        self._hints[entry.primary] = entry.vary
        return True

    async def _script(self, script: str, keys: list[str], args: tuple[Any, ...]) -> Any:
        client = cast(Any, self.client)
        return await client.eval(script, len(keys), *keys, *args)

    # -- purge ------------------------------------------------------------------------

    async def purge(
        self, *, key: str | None = None, prefix: str | None = None, tag: str | None = None
    ) -> int:
        """Remove entries from Redis (every instance sees it); RedisError if it cannot."""
        kind, value = purge_target(key, prefix, tag)
        p = self.prefix
        client = cast(Any, self.client)
        # An operator's call: a longer timeout than a request's lookup, and no breaker
        # (the caller must learn that the purge did not happen).
        async with asyncio.timeout(max(5.0, self.timeout_s)):
            if kind == "tag":
                removed = int(await client.eval(PURGE_TAG_SCRIPT, 1, p + "t:" + value))
            else:
                pattern = p + "e:" + glob_escape(value) + ("\x00*" if kind == "key" else "*")
                removed = 0
                batch: list[bytes] = []
                async for name in client.scan_iter(match=pattern, count=SCAN_COUNT):
                    batch.append(name)
                    if len(batch) >= SCAN_COUNT:
                        removed += int(await client.delete(*batch))
                        batch = []
                if batch:
                    removed += int(await client.delete(*batch))
        self.purged += removed
        return removed

    async def flush(self) -> None:
        """Wait for the writes in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.client.aclose()

    def __repr__(self) -> str:
        return (
            f"<RedisCacheStore {self.settings.url} {self.breaker.state.value} hits={self.hits}"
            f" writes={self.writes} errors={self.errors} bypassed={self.bypassed}"
            f" purged={self.purged}>"
        )


def _client(settings: CacheRedis) -> AnyRedis:
    return make_client(RedisSettings(url=settings.url, timeout=settings.timeout))
