"""Where rollout state lives: in memory (per process) or in Redis (shared).

A `Record` is a rollout's whole state. Every write is a compare-and-set on its
generation `gen` (0: nothing stored yet): an instance that computed a transition
from generation g writes g+1 only if the store still holds g; otherwise it lost a
race and adopts what the store holds. So two gateway processes sharing a Redis
never apply two different transitions from the same state, and all of them follow
the record within one evaluation interval. A restart loads the record and resumes.

Redis: one key per rollout, `<redis.key_prefix>rollout:<name>`, a JSON string, no
expiry; the CAS is a small Lua script (atomic on the server). Calls are bounded by
`redis.timeout`; any failure raises `StoreUnavailable` and the controller keeps its
local state (and still applies a rollback locally: pulling traffic is always safe).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Protocol

import orjson
from redis.exceptions import RedisError

from gateway.config.ratelimit_model import RedisSettings
from gateway.rollout.machine import State
from gateway.store.redis_store import AnyRedis, StoreUnavailable, make_client

__all__ = ["MemoryStateStore", "Record", "RedisStateStore", "StateStore", "StoreUnavailable"]


@dataclass(frozen=True, slots=True)
class Record:
    state: State
    step: int
    step_started_at: float  # on the rollout clock (wall time in production)
    reason: str
    fingerprint: str  # the plan's; another plan means a reset
    gen: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps({**asdict(self), "state": self.state.value})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Record:
        d = orjson.loads(raw)
        return cls(
            State(d["state"]),
            int(d["step"]),
            float(d["step_started_at"]),
            str(d["reason"]),
            str(d["fingerprint"]),
            int(d["gen"]),
        )


class StateStore(Protocol):
    async def load(self, name: str) -> Record | None: ...

    async def cas(self, name: str, record: Record, expected_gen: int) -> Record | None:
        """Write `record` if the stored generation is `expected_gen`: None when written,
        else the record that won."""
        ...

    async def close(self) -> None: ...


class MemoryStateStore:
    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.writes = 0

    async def load(self, name: str) -> Record | None:
        return self.records.get(name)

    async def cas(self, name: str, record: Record, expected_gen: int) -> Record | None:
        cur = self.records.get(name)
        if (cur.gen if cur is not None else 0) != expected_gen:
            return cur
        self.records[name] = record
        self.writes += 1
        return None

    async def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<MemoryStateStore rollouts={len(self.records)} writes={self.writes}>"


CAS_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
local gen = 0
if cur then gen = tonumber(cjson.decode(cur)['gen']) end
if gen ~= tonumber(ARGV[1]) then return cur end
redis.call('SET', KEYS[1], ARGV[2])
return false
"""


class RedisStateStore:
    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.prefix = f"{settings.key_prefix}rollout:"
        self.timeout_s = settings.timeout
        self.client: AnyRedis = make_client(settings)
        self.writes = 0
        self.errors = 0

    async def load(self, name: str) -> Record | None:
        try:
            # redis-py's socket timeout does not cover every wait (a paused server
            # accepting connections): bound the call itself, as the other stores do.
            async with asyncio.timeout(self.timeout_s):
                raw = await self.client.get(self.prefix + name)
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            raise StoreUnavailable(f"rollout state: {exc}") from exc
        return Record.from_json(raw) if raw is not None else None

    async def cas(self, name: str, record: Record, expected_gen: int) -> Record | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                cur = await self.client.eval(
                    CAS_SCRIPT, 1, self.prefix + name, str(expected_gen), record.to_json()
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            raise StoreUnavailable(f"rollout state: {exc}") from exc
        if cur is None:
            self.writes += 1
            return None
        return Record.from_json(cur)

    async def close(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"<RedisStateStore {self.prefix} writes={self.writes} errors={self.errors}>"
