"""The upstream side: a lean HTTP/1.1 keep-alive client over asyncio Protocols.

aiohttp's ClientSession is 3x too slow for the proxy's hot path (DESIGN.md, "The hot
path"), so the upstream client is our own, with httptools (llhttp) doing the parsing.

    connection.py   UpstreamConnection: the Protocol, flow control, waits, closing
    parsing.py      its base class: httptools callbacks, framing rules (HEAD, 1xx, 101)
    client.py       one exchange: request framing, UpstreamResponse (body, upgrade)
    pool.py         EndpointSpec, ConnectionPool: keep-alive reuse, limits, stale retry
    balancer.py     RoundRobin over an upstream's pools

Every transport fault leaves this package as a `gateway.errors` exception.
"""

from gateway.upstream.balancer import RoundRobin
from gateway.upstream.client import UpstreamResponse
from gateway.upstream.connection import HIGH_WATER, LOW_WATER, UpstreamConnection
from gateway.upstream.pool import ConnectionPool, EndpointSpec

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "ConnectionPool",
    "EndpointSpec",
    "RoundRobin",
    "UpstreamConnection",
    "UpstreamResponse",
]
