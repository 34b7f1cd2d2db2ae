"""Choosing an endpoint among an upstream's members: four policies, one interface.

Every balancer has `pick(exclude=frozenset(), hash_key=None) -> Member`: the chosen
member is `available` (its breaker admits, its health check passes) and its key is
not in `exclude` (the endpoints this request already tried). When no member
qualifies, `pick` raises NoUpstreamAvailable (the forwarder answers 503 at once).

- `RoundRobin`: members in turn; weights ignored.
- `SmoothWeighted`: nginx's smooth weighted round robin (ngx_http_upstream_round_robin.c):
  each pick adds every candidate's weight to its current weight, takes the largest,
  and subtracts the total from the winner. Shares are exact over each cycle of
  sum(weights) picks and the winners interleave (5:1:1 gives a a b a c a a, not
  a a a a a b c). Out-of-rotation members are skipped, so the others share their part.
- `LeastRequest`: power of two choices (Mitzenmacher): two random members, the one
  with fewer requests in flight wins. Nearly as good as a full scan at O(1) and
  without the herd behaviour of always choosing the global minimum. Weights ignored.
- `ConsistentHash`: a hash ring (Karger et al.; ketama) with `virtual_nodes` points
  per unit of weight per member, placed by a 64-bit BLAKE2b of "endpoint-key#i" so
  the ring is the same in every worker and across reloads. A key maps to the first
  point clockwise whose member qualifies; when a member leaves only the keys on its
  arcs move (about 1/N), each to the next member on the ring. A request without a
  key (the header or cookie absent) falls back to round robin.

`ConnectionPool`s are accepted in place of members (wrapped, no breaker or health),
which keeps the simplest uses short.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence, Set

from gateway.errors import NoUpstreamAvailable
from gateway.upstream.member import Member
from gateway.upstream.pool import ConnectionPool

_NONE: frozenset[str] = frozenset()


def _members(items: Sequence[Member | ConnectionPool]) -> tuple[Member, ...]:
    if not items:
        raise ValueError("a balancer needs at least one member")
    return tuple(m if isinstance(m, Member) else Member(m) for m in items)


def _none_left() -> NoUpstreamAvailable:
    return NoUpstreamAvailable("every upstream endpoint is excluded or out of rotation")


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class RoundRobin:
    __slots__ = ("_next", "members")

    def __init__(self, members: Sequence[Member | ConnectionPool]) -> None:
        self.members = _members(members)
        self._next = 0

    def pick(self, exclude: Set[str] = _NONE, hash_key: str | None = None) -> Member:
        members = self.members
        n = len(members)
        start = self._next
        for i in range(start, start + n):
            m = members[i % n]
            if m.available and m.key not in exclude:
                self._next = (i + 1) % n
                return m
        raise _none_left()

    def __repr__(self) -> str:
        keys = ", ".join(m.key for m in self.members)
        return f"<RoundRobin next={self._next} [{keys}]>"


class SmoothWeighted:
    __slots__ = ("_current", "members")

    def __init__(self, members: Sequence[Member | ConnectionPool]) -> None:
        self.members = _members(members)
        self._current = [0] * len(self.members)

    def pick(self, exclude: Set[str] = _NONE, hash_key: str | None = None) -> Member:
        current = self._current
        best = -1
        total = 0
        for i, m in enumerate(self.members):
            if not m.available or m.key in exclude:
                continue
            w = m.weight
            current[i] += w
            total += w
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            raise _none_left()
        current[best] -= total
        return self.members[best]

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{m.key} w={m.weight} cw={c}" for m, c in zip(self.members, self._current, strict=True)
        )
        return f"<SmoothWeighted [{parts}]>"


class LeastRequest:
    __slots__ = ("_random", "members")

    def __init__(
        self, members: Sequence[Member | ConnectionPool], rng: random.Random | None = None
    ) -> None:
        self.members = _members(members)
        self._random = (rng or random.Random()).random

    def pick(self, exclude: Set[str] = _NONE, hash_key: str | None = None) -> Member:
        members = self.members
        n = len(members)
        if n > 1:
            r = self._random
            i = int(r() * n)
            j = int(r() * (n - 1))
            if j >= i:
                j += 1  # distinct from i
            a, b = members[i], members[j]
            a_ok = a.available and a.key not in exclude
            b_ok = b.available and b.key not in exclude
            if a_ok and b_ok:
                return b if b.pool.in_flight < a.pool.in_flight else a
            if a_ok:
                return a
            if b_ok:
                return b
        # Both choices were out (or a single member): the least loaded of the rest.
        best: Member | None = None
        for m in members:
            if (
                m.available
                and m.key not in exclude
                and (best is None or m.pool.in_flight < best.pool.in_flight)
            ):
                best = m
        if best is None:
            raise _none_left()
        return best

    def __repr__(self) -> str:
        parts = ", ".join(f"{m.key} in_flight={m.in_flight}" for m in self.members)
        return f"<LeastRequest [{parts}]>"


class ConsistentHash:
    __slots__ = ("_fallback", "_owners", "_points", "members", "virtual_nodes")

    def __init__(
        self, members: Sequence[Member | ConnectionPool], virtual_nodes: int = 160
    ) -> None:
        if virtual_nodes < 1:
            raise ValueError("virtual_nodes must be >= 1")
        self.members = _members(members)
        self.virtual_nodes = virtual_nodes
        ring = sorted(
            (hash64(f"{m.key}#{v}"), idx)
            for idx, m in enumerate(self.members)
            for v in range(virtual_nodes * m.weight)
        )
        self._points = [p for p, _ in ring]
        self._owners = [idx for _, idx in ring]
        self._fallback = RoundRobin(self.members)

    def owner(self, hash_key: str) -> Member:
        """The member a key maps to with everything in rotation (for tests and tools)."""
        i = bisect.bisect(self._points, hash64(hash_key)) % len(self._points)
        return self.members[self._owners[i]]

    def pick(self, exclude: Set[str] = _NONE, hash_key: str | None = None) -> Member:
        if hash_key is None:
            return self._fallback.pick(exclude)
        points = self._points
        owners = self._owners
        members = self.members
        n = len(points)
        start = bisect.bisect(points, hash64(hash_key))
        seen = 0
        checked = 0  # bitmask of members already found unusable
        for step in range(n):
            idx = owners[(start + step) % n]
            bit = 1 << idx
            if checked & bit:
                continue
            m = members[idx]
            if m.available and m.key not in exclude:
                return m
            checked |= bit
            seen += 1
            if seen == len(members):
                break
        raise _none_left()

    def __repr__(self) -> str:
        return (
            f"<ConsistentHash members={len(self.members)} points={len(self._points)} "
            f"virtual_nodes={self.virtual_nodes}>"
        )


Balancer = RoundRobin | SmoothWeighted | LeastRequest | ConsistentHash
