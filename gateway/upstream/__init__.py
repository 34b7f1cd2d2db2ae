"""The upstream side: a lean HTTP/1.1 keep-alive client, and the resilience around it.

aiohttp's ClientSession is 3x too slow for the proxy's hot path (DESIGN.md, "The hot
path"), so the upstream client is our own, with httptools (llhttp) doing the parsing.

    connection.py   UpstreamConnection: the Protocol, flow control, waits, closing
    parsing.py      its base class: httptools callbacks, framing rules (HEAD, 1xx, 101)
    client.py       one exchange: request framing, UpstreamResponse (body, upgrade)
    pool.py         EndpointSpec, ConnectionPool: keep-alive reuse, limits, stale retry
    window.py       RollingPair: two counters over a rolling window (breaker, budget)
    breaker.py      Breaker (table-driven closed/open/half-open), EjectionGroup (cap)
    health.py       HealthState, HealthChecker: active checks per upstream, per worker
    member.py       Member: an endpoint in one upstream (pool, weight, breaker, health)
    balancer.py     RoundRobin, SmoothWeighted, LeastRequest, ConsistentHash: pick()
    bulkhead.py     Bulkhead: concurrent and queued requests per upstream
    adaptive.py     AdaptiveLimiter: a concurrency limit following latency (gradient)
    budget.py       RetryPolicy, RetryBudget: retries as a share of requests
    locality.py     RegionalBalancer: own region first, failover order, region weights
    service.py      Upstream and build_upstream (config -> objects, state reuse)

Every transport fault leaves this package as a `gateway.errors` exception.
"""

from gateway.upstream.balancer import ConsistentHash, LeastRequest, RoundRobin, SmoothWeighted
from gateway.upstream.breaker import Breaker, BreakerPolicy, BreakerStateError, EjectionGroup
from gateway.upstream.budget import RetryBudget, RetryPolicy
from gateway.upstream.bulkhead import Bulkhead
from gateway.upstream.client import UpstreamResponse
from gateway.upstream.connection import HIGH_WATER, LOW_WATER, UpstreamConnection
from gateway.upstream.health import HealthChecker, HealthPolicy, HealthState
from gateway.upstream.member import Member
from gateway.upstream.pool import ConnectionPool, EndpointSpec

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "Breaker",
    "BreakerPolicy",
    "BreakerStateError",
    "Bulkhead",
    "ConnectionPool",
    "ConsistentHash",
    "EjectionGroup",
    "EndpointSpec",
    "HealthChecker",
    "HealthPolicy",
    "HealthState",
    "LeastRequest",
    "Member",
    "RetryBudget",
    "RetryPolicy",
    "RoundRobin",
    "SmoothWeighted",
    "UpstreamConnection",
    "UpstreamResponse",
]
