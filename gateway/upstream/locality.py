"""Locality: prefer the gateway's own region, fail over region by region (Envoy's
priority levels), or split across regions by weight.

An upstream whose endpoints name regions gets a `RegionalBalancer` in place of its
balancer (same `pick(exclude, hash_key)` and `members`), built by the runtime from the
upstream's members, so breakers and health states are the very same objects: one
balancer of the upstream's policy per region, tried in priority order. Priority: the
`regions.failover` list when given, else the gateway's own region first, then the
regions in the order the endpoints name them; endpoints without a region come last.

A region is used while it has any available endpoint (breaker admits, health passes)
not yet tried by this request; when none is left, the next region serves (failover),
and traffic returns as soon as an endpoint of a preferred region is back. Unlike
Envoy there is no overprovisioning factor: a region half down still takes all of its
traffic (its breakers and health checks shed the bad endpoints).

With `regions.weights`, the first region of each pick is chosen by smooth weighted
round robin among the regions that have an available endpoint (so a region that is
down passes its share on), then the others follow in priority order.

An upstream without regions keeps its plain balancer: nothing here is on its path.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

from gateway.config.model import Upstream as UpstreamConfig
from gateway.errors import NoUpstreamAvailable
from gateway.upstream.balancer import (
    Balancer,
    ConsistentHash,
    LeastRequest,
    RoundRobin,
    SmoothWeighted,
)
from gateway.upstream.member import Member

__all__ = ["RegionalBalancer", "make_balancer", "regional_balancer"]

_NONE: frozenset[str] = frozenset()


def make_balancer(policy: str, members: Sequence[Member], virtual_nodes: int = 160) -> Balancer:
    if policy == "weighted":
        return SmoothWeighted(members)
    if policy == "least_request":
        return LeastRequest(members)
    if policy == "consistent_hash":
        return ConsistentHash(members, virtual_nodes)
    return RoundRobin(members)


class RegionalBalancer:
    __slots__ = ("_current", "failovers", "members", "names", "regions", "weights")

    def __init__(
        self,
        regions: Sequence[tuple[str, Balancer]],
        weights: Sequence[int] = (),
    ) -> None:
        if not regions:
            raise ValueError("a regional balancer needs at least one region")
        self.names = tuple(name for name, _ in regions)
        self.regions = tuple(b for _, b in regions)
        self.members = tuple(m for b in self.regions for m in b.members)
        self.weights = tuple(weights)  # per region, in priority order; () = prefer the first
        self._current = [0] * len(self.regions)
        self.failovers = 0  # picks served by a region other than the first choice

    def _first(self, exclude: Set[str]) -> int:
        """Smooth weighted round robin over the regions with an available endpoint."""
        current = self._current
        best = -1
        total = 0
        for i, (b, w) in enumerate(zip(self.regions, self.weights, strict=True)):
            if not w or not any(m.available and m.key not in exclude for m in b.members):
                continue
            current[i] += w
            total += w
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return 0
        current[best] -= total
        return best

    def pick(self, exclude: Set[str] = _NONE, hash_key: str | None = None) -> Member:
        regions = self.regions
        first = self._first(exclude) if self.weights else 0
        try:
            return regions[first].pick(exclude, hash_key)
        except NoUpstreamAvailable:
            pass
        for i, b in enumerate(regions):
            if i == first:
                continue
            try:
                m = b.pick(exclude, hash_key)
            except NoUpstreamAvailable:
                continue
            self.failovers += 1
            return m
        raise NoUpstreamAvailable("every endpoint in every region is excluded or out of rotation")

    def region_of(self, member: Member) -> str:
        for name, b in zip(self.names, self.regions, strict=True):
            if member in b.members:
                return name
        raise KeyError(member.key)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{n}: {sum(m.available for m in b.members)}/{len(b.members)} in"
            for n, b in zip(self.names, self.regions, strict=True)
        )
        return f"<RegionalBalancer [{parts}] failovers={self.failovers}>"


def regional_balancer(
    cfg: UpstreamConfig, members: Sequence[Member], own_region: str | None
) -> RegionalBalancer | None:
    """The balancer for an upstream whose endpoints name regions; None when none do."""
    regions = [ep.region for ep in cfg.endpoints]
    if all(r is None for r in regions):
        return None
    seen: list[str] = []
    for r in regions:
        if r is not None and r not in seen:
            seen.append(r)
    settings = cfg.regions
    if settings is not None and settings.failover:
        order = [r for r in settings.failover if r in seen] + [
            r for r in seen if r not in settings.failover
        ]
    elif own_region is not None and own_region in seen:
        order = [own_region] + [r for r in seen if r != own_region]
    else:
        order = seen
    by_region: dict[str, list[Member]] = {r: [] for r in order}
    unnamed: list[Member] = []
    for member, region in zip(members, regions, strict=True):
        (by_region[region] if region is not None else unnamed).append(member)
    policy = cfg.balancing.policy
    vnodes = cfg.balancing.virtual_nodes
    built = [(r, make_balancer(policy, ms, vnodes)) for r, ms in by_region.items()]
    if unnamed:
        built.append(("", make_balancer(policy, unnamed, vnodes)))
    weights: list[int] = []
    if settings is not None and settings.weights:
        weights = [settings.weights.get(name, 0) for name, _ in built]
    return RegionalBalancer(built, weights)
