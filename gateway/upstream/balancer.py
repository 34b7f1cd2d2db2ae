"""Choosing an endpoint among a service's pools.

`RoundRobin` walks the pools in order, skipping the endpoints the caller excludes
(those already tried for this request, or open circuit breakers); when every one is
excluded it raises NoUpstreamAvailable (503). Other policies (least-in-flight,
weighted) will sit beside it with the same `pick()` signature.
"""

from __future__ import annotations

from collections.abc import Set

from gateway.errors import NoUpstreamAvailable
from gateway.upstream.pool import ConnectionPool

_NONE: frozenset[str] = frozenset()


class RoundRobin:
    __slots__ = ("_next", "_pools")

    def __init__(self, pools: list[ConnectionPool]) -> None:
        if not pools:
            raise ValueError("RoundRobin needs at least one pool")
        self._pools = tuple(pools)
        self._next = 0

    @property
    def pools(self) -> tuple[ConnectionPool, ...]:
        return self._pools

    def pick(self, exclude: Set[str] = _NONE) -> ConnectionPool:
        """The next pool in turn whose endpoint key is not in `exclude`."""
        pools = self._pools
        n = len(pools)
        start = self._next
        for i in range(start, start + n):
            pool = pools[i % n]
            if pool.key not in exclude:
                self._next = (i + 1) % n
                return pool
        raise NoUpstreamAvailable("every upstream endpoint is excluded")

    def __repr__(self) -> str:
        keys = ", ".join(p.key for p in self._pools)
        return f"<RoundRobin next={self._next} [{keys}]>"
