"""Ban state: blocks counted per client address, bans with expiry, shared through Redis.

`BanState` is one worker's memory: the active bans (`bans`, address -> Ban, read with
one dict lookup per request), each address's recent block times (a deque per address
in an LRU of `max_clients`) and its ban count for repeat bans. It lives as long as
the worker and passes from one `BanStore` to the next on reload, like the rate
limiter's memory buckets. Time is the injected clock (monotonic; fake in tests).

Counting. `record_block` appends now to the address's deque and drops times older
than `window`; at `after_blocks` the deque is cleared and a ban starts, lasting
`ban_for * repeat_factor ** (n - 1)` up to `max_ban`, n being the address's ban count
(forgotten `forget_after` past the end of its last ban). Blocks are counted per
process, also with Redis: with P processes a client spreading its requests may get up
to P x (after_blocks - 1) blocks before the first ban. Counting in Redis would cost a
round trip per block; a block is already cheap for us, and the first ban anywhere is
shared.

Redis (`RedisBans`, store: redis). A ban record is a string key
`<key_prefix>bans:ban:<ip>` = "<count> <since_ms> <reason>" with PX = the ban's
length, so Redis expires it; `...bans:count:<ip>` holds the ban count (TTL = ban +
forget_after); `...bans:index` is a sorted set ip -> end (ms, Redis TIME) for listing.
A process that bans an address enforces it at once, locally, and sends `BAN_SCRIPT`
in the background; the script computes the length from the shared count (an address
already banned elsewhere keeps that ban) and the answer replaces the local guess.
Every `sync_interval` each process runs `SYNC_SCRIPT` (one round trip: the index,
pruned, with each record and its PTTL) and replaces its shared bans with the answer.
So a ban made or lifted in one process reaches the others within `sync_interval` plus
one round trip: the propagation delay. No request ever waits on Redis.

Store unusable (down, slow; every call bounded by `redis.timeout`): the last synced
bans stay enforced until their own end, bans made meanwhile are enforced by the
process that made them only (`shared=False`) and are not re-sent; the admin API's list
and lift answer 503. No breaker: nothing on the request path waits for these calls.
Cluster: all ban keys carry the hash tag `{bans}`, so the scripts touch one slot.

Known gaps: IPv6 clients are banned by full address, not by /64; a lift reaches the
other processes by their next sync, and only for bans they read from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, cast

from redis.exceptions import RedisError

from gateway.config.bans_model import Bans
from gateway.config.model import Config
from gateway.config.ratelimit_model import RedisSettings
from gateway.store.redis_store import AnyRedis, make_client

__all__ = [
    "BAN_SCRIPT",
    "SYNC_SCRIPT",
    "Ban",
    "BanState",
    "BanStore",
    "BansUnavailable",
    "RedisBans",
    "ban_seconds",
]

log = logging.getLogger("gateway.bans")

BAN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = redis.call('PTTL', KEYS[1])
if left > 0 then
  return {left, redis.call('GET', KEYS[1])}
end
local n = redis.call('INCR', KEYS[2])
local ms = tonumber(ARGV[2]) * tonumber(ARGV[3]) ^ math.min(n - 1, 64)
if ms > tonumber(ARGV[4]) then ms = tonumber(ARGV[4]) end
ms = math.max(1, math.floor(ms))
local rec = string.format('%d %d %s', n, now, ARGV[6])
redis.call('SET', KEYS[1], rec, 'PX', ms)
redis.call('PEXPIRE', KEYS[2], ms + tonumber(ARGV[5]))
redis.call('ZADD', KEYS[3], now + ms, ARGV[1])
return {ms, rec}
"""

SYNC_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, ip in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. ip
  local left = redis.call('PTTL', key)
  if left > 0 then
    out[#out + 1] = ip
    out[#out + 1] = left
    out[#out + 1] = redis.call('GET', key)
  else
    redis.call('ZREM', KEYS[1], ip)
  end
end
return out
"""

LIFT_SCRIPT = """
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return n
"""


def ban_seconds(rules: Bans, count: int) -> float:
    """The length of an address's `count`-th ban (1 = first)."""
    return float(min(rules.ban_for * rules.repeat_factor ** min(count - 1, 64), rules.max_ban))


class Ban:
    """One active ban; `until` is on the state's clock."""

    __slots__ = ("confirmed_at", "count", "ip", "reason", "shared", "since", "until")

    def __init__(
        self, ip: str, until: float, reason: str, count: int, since: float, shared: bool = False
    ) -> None:
        self.ip = ip
        self.until = until
        self.reason = reason
        self.count = count  # the address's ban count: 1 first ban, 2 first repeat, ...
        self.since = since  # wall time (epoch s) the ban started
        self.shared = shared  # read from or confirmed by Redis
        self.confirmed_at = 0  # BanState.syncs_started when Redis last confirmed it

    def __repr__(self) -> str:
        return f"<Ban {self.ip} until={self.until:.3f} #{self.count} {self.reason!r}>"


class BansUnavailable(Exception):
    """Redis could not answer an admin list or lift."""


class BanState:
    """One worker's bans, block windows and ban counts (see the module note)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.bans: dict[str, Ban] = {}
        self.blocks: OrderedDict[str, deque[float]] = OrderedDict()
        self.counts: dict[str, tuple[int, float]] = {}  # ip -> (ban count, forget at)
        self._sweep_at = 1024
        self.syncs_started = 0
        # Counters (plain ints; the metrics module exports them).
        self.blocks_counted = 0
        self.banned = 0  # bans started by this process
        self.refused = 0  # requests refused: banned, deny-listed or user agent denied
        self.shadow_refused = 0  # would have been refused; shadow mode let them pass
        self.lifted = 0

    def active(self, ip: str) -> Ban | None:
        ban = self.bans.get(ip)
        if ban is not None and ban.until <= self.clock():
            del self.bans[ip]
            return None
        return ban

    def record_block(self, ip: str, rules: Bans, reason: str) -> Ban | None:
        """Count one block of `ip`; the Ban it starts, if this block starts one."""
        now = self.clock()
        self.blocks_counted += 1
        times = self.blocks.get(ip)
        if times is None:
            times = self.blocks[ip] = deque()
            if len(self.blocks) > rules.max_clients:
                self.blocks.popitem(last=False)
        else:
            self.blocks.move_to_end(ip)
        times.append(now)
        while times and times[0] <= now - rules.window:
            times.popleft()
        if len(times) < rules.after_blocks or self.active(ip) is not None:
            return None
        del self.blocks[ip]
        count, forget_at = self.counts.get(ip, (0, 0.0))
        count = count + 1 if forget_at > now else 1
        length = ban_seconds(rules, count)
        self.counts[ip] = (count, now + length + rules.forget_after)
        ban = self.bans[ip] = Ban(ip, now + length, reason, count, time.time())
        self.banned += 1
        if len(self.bans) + len(self.counts) >= self._sweep_at:
            self.sweep()
        return ban

    def sweep(self) -> None:
        """Drop ended bans and forgotten counts (amortised: when the dicts doubled)."""
        now = self.clock()
        self.bans = {ip: b for ip, b in self.bans.items() if b.until > now}
        self.counts = {ip: c for ip, c in self.counts.items() if c[1] > now}
        self._sweep_at = max(1024, 2 * (len(self.bans) + len(self.counts)))

    def lift(self, ip: str) -> bool:
        """End `ip`'s ban and forget its count and blocks; whether it was banned."""
        self.counts.pop(ip, None)
        self.blocks.pop(ip, None)
        found = self.active(ip) is not None
        self.bans.pop(ip, None)
        if found:
            self.lifted += 1
        return found

    def adopt(self, ip: str, left_ms: int, record: str) -> Ban:
        """A ban as Redis holds it: `left_ms` to go, record '<count> <since_ms> <reason>'."""
        count_text, since_text, reason = [*record.split(" ", 2), "", ""][:3]
        now = self.clock()
        count = int(count_text) if count_text.isdigit() else 1
        ban = self.bans.get(ip)
        if ban is None:
            ban = self.bans[ip] = Ban(ip, 0.0, reason, count, 0.0)
        ban.until = now + left_ms / 1000.0
        ban.reason = reason
        ban.count = count
        ban.since = int(since_text) / 1000.0 if since_text.isdigit() else ban.since
        ban.shared = True
        ban.confirmed_at = self.syncs_started
        return ban

    def begin_sync(self) -> int:
        self.syncs_started += 1
        return self.syncs_started

    def replace_shared(self, rows: list[tuple[str, int, str]], seq: int) -> None:
        """Make the shared bans exactly `rows`, the answer of sync number `seq`.

        Local bans not yet confirmed by Redis stay; so do bans confirmed after that
        sync started (its answer may predate them)."""
        seen = set()
        for ip, left_ms, record in rows:
            self.adopt(ip, left_ms, record)
            seen.add(ip)
        for ip in [
            ip
            for ip, b in self.bans.items()
            if b.shared and ip not in seen and b.confirmed_at < seq
        ]:
            del self.bans[ip]

    def listing(self) -> list[dict[str, Any]]:
        now, wall = self.clock(), time.time()
        out = []
        for ip in sorted(self.bans):
            ban = self.active(ip)
            if ban is not None:
                out.append(
                    {
                        "ip": ip,
                        "until": round(wall + ban.until - now, 3),
                        "remaining_s": round(ban.until - now, 3),
                        "reason": ban.reason,
                        "count": ban.count,
                        "shared": ban.shared,
                    }
                )
        return out

    def __repr__(self) -> str:
        return (
            f"<BanState bans={len(self.bans)} tracked={len(self.blocks)} banned={self.banned}"
            f" refused={self.refused} shadow_refused={self.shadow_refused} lifted={self.lifted}>"
        )


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisBans:
    """The shared half: ban records in Redis, a sync task per worker (module note)."""

    def __init__(
        self, client: AnyRedis, *, key_prefix: str, timeout_s: float, cluster: bool = False
    ) -> None:
        self.client = client
        self.prefix = f"{key_prefix}{{bans}}:" if cluster else f"{key_prefix}bans:"
        self.timeout_s = timeout_s
        self.task: asyncio.Task[None] | None = None
        self.interval_s = 1.0
        self._sends: set[asyncio.Task[None]] = set()
        self.syncs = 0
        self.errors = 0  # calls that failed or timed out

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisBans:
        return cls(
            make_client(settings),
            key_prefix=settings.key_prefix,
            timeout_s=settings.timeout,
            cluster=settings.cluster,
        )

    def _keys(self, ip: str) -> list[str]:
        p = self.prefix
        return [f"{p}ban:{ip}", f"{p}count:{ip}", f"{p}index"]

    async def _eval(self, script: str, keys: list[str], *args: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await cast(Any, self.client).eval(script, len(keys), *keys, *args)
        except (RedisError, OSError, TimeoutError) as e:
            self.errors += 1
            raise BansUnavailable(f"redis: {type(e).__name__}: {e}") from e

    def publish(self, state: BanState, ban: Ban, rules: Bans) -> None:
        """Record `ban` in Redis in the background; the answer updates `state`."""

        async def send() -> None:
            try:
                left, record = await self._eval(
                    BAN_SCRIPT,
                    self._keys(ban.ip),
                    ban.ip,
                    int(rules.ban_for * 1000),
                    repr(rules.repeat_factor),
                    int(rules.max_ban * 1000),
                    int(rules.forget_after * 1000),
                    ban.reason,
                )
            except BansUnavailable as e:
                log.warning("ban of %s not shared (enforced here only): %s", ban.ip, e)
                return
            state.adopt(ban.ip, int(left), _text(record))

        task = asyncio.get_running_loop().create_task(send())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def sync(self, state: BanState) -> None:
        seq = state.begin_sync()
        flat = await self._eval(SYNC_SCRIPT, [f"{self.prefix}index"], f"{self.prefix}ban:")
        rows = [
            (_text(flat[i]), int(flat[i + 1]), _text(flat[i + 2])) for i in range(0, len(flat), 3)
        ]
        state.replace_shared(rows, seq)
        self.syncs += 1

    async def lift(self, ip: str) -> bool:
        return bool(await self._eval(LIFT_SCRIPT, self._keys(ip), ip))

    def start(self, state: BanState, interval_s: float) -> None:
        """Sync `state` every `interval_s` in the running loop (idempotent)."""
        self.interval_s = interval_s  # a reload may change it; the loop reads it each time
        if self.task is not None and not self.task.done():
            return

        async def loop() -> None:
            while True:
                with contextlib.suppress(BansUnavailable):
                    await self.sync(state)
                await asyncio.sleep(self.interval_s)

        self.task = asyncio.get_running_loop().create_task(loop())

    async def close(self) -> None:
        tasks = [t for t in (self.task, *self._sends) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"<RedisBans {self.prefix!r} syncs={self.syncs} errors={self.errors}>"


class BanStore:
    """One config's bans: its rules, the worker's BanState, the Redis half if any.

    `for_config` returns `previous` while `bans` and `redis` are unchanged; otherwise a
    new store with the previous state (and Redis half, when `redis` is unchanged)."""

    def __init__(self, rules: Bans, state: BanState, redis: RedisBans | None = None) -> None:
        self.rules = rules
        self.state = state
        self.redis = redis
        self.redis_settings: RedisSettings | None = None
        self.shadow = rules.mode == "shadow"

    @classmethod
    def for_config(
        cls,
        config: Config,
        previous: BanStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> BanStore | None:
        rules = config.bans
        if rules is None:
            return None
        redis = config.redis if rules.uses_redis(config.redis is not None) else None
        if previous is not None and previous.rules == rules and previous.redis_settings == redis:
            return previous
        state = previous.state if previous is not None else BanState(clock)
        half = None
        if redis is not None:
            if previous is not None and previous.redis_settings == redis:
                half = previous.redis
            else:
                half = RedisBans.from_settings(redis)
        store = cls(rules, state, half)
        store.redis_settings = redis
        return store

    def check(self, ip: str) -> Ban | None:
        return self.state.active(ip)

    def record_block(self, ip: str, reason: str) -> Ban | None:
        ban = self.state.record_block(ip, self.rules, reason)
        if ban is not None:
            log.warning(
                "client %s banned for %.0f s (ban #%d%s): %s",
                ip,
                ban.until - self.state.clock(),
                ban.count,
                ", shadow" if self.shadow else "",
                reason,
            )
            if self.redis is not None:
                self.redis.publish(self.state, ban, self.rules)
        return ban

    async def listing(self) -> list[dict[str, Any]]:
        """Active bans (Redis read first when shared); BansUnavailable if it cannot be."""
        if self.redis is not None:
            await self.redis.sync(self.state)
        return self.state.listing()

    async def lift(self, ip: str) -> bool:
        found = False
        if self.redis is not None:
            found = await self.redis.lift(ip)
        return self.state.lift(ip) or found

    def start(self) -> None:
        """Start the Redis sync in the running loop, if there is one (idempotent)."""
        if self.redis is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.redis.start(self.state, self.rules.sync_interval)

    async def retire(self, successor: BanStore | None) -> None:
        if self.redis is not None and (successor is None or successor.redis is not self.redis):
            await self.redis.close()

    def __repr__(self) -> str:
        return f"<BanStore {self.rules.mode} {self.state!r} redis={self.redis!r}>"
