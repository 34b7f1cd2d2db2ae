"""Exchange and Reply: what filters see instead of aiohttp types.

An `Exchange` is the request view plus the per-request state a filter may need to
hand to a later one (`state`). A `Reply` is what comes back down the chain: either
a complete small body (errors, rejections, cache hits) or a streaming upstream
response. Only server.py translates between these and aiohttp, so filters can be
tested without a server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from multidict import CIMultiDict

if TYPE_CHECKING:
    from gateway.body import BodySource
    from gateway.routing.table import Route
    from gateway.tls.facts import ClientCertFacts
    from gateway.upstream import UpstreamResponse


class TLSInfo:
    """What the client's TLS connection was; computed once per connection."""

    __slots__ = ("cipher", "client_cert", "sni", "version")

    def __init__(
        self, version: str, cipher: str, sni: str | None, client_cert: ClientCertFacts | None
    ) -> None:
        self.version = version  # "TLSv1.3"
        self.cipher = cipher  # "TLS_AES_256_GCM_SHA384"
        self.sni = sni  # the server name the client asked for, if any
        self.client_cert = client_cert  # a verified client certificate's facts

    def __repr__(self) -> str:
        cert = self.client_cert.subject if self.client_cert else None
        return f"<TLSInfo {self.version} {self.cipher} sni={self.sni} cert={cert}>"


class Exchange:
    """One request as it travels through a route's filter chain."""

    __slots__ = (
        "body",
        "client_ip",
        "client_port",
        "content_length",
        "headers",
        "host",
        "listener",
        "method",
        "path",
        "peer_ip",
        "principal",
        "principal_tier",
        "query",
        "request_id",
        "route",
        "scheme",
        "started_at",
        "state",
        "tls",
        "trusted_peer",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query: str,
        headers: CIMultiDict[str],
        host: str,
        scheme: str,
        client_ip: str,
        client_port: int,
        request_id: str,
        route: Route,
        body: BodySource | None,
        content_length: int | None,
        version: str = "1.1",
        upgrade: bool = False,
        started_at: float = 0.0,
        peer_ip: str | None = None,
        trusted_peer: bool = False,
        tls: TLSInfo | None = None,
        listener: str = "",
    ) -> None:
        self.method = method
        self.path = path  # raw (percent-encoded) path, without the query
        self.query = query  # raw query string without "?", "" when absent
        self.headers = headers  # mutable copy; filters may edit what goes upstream
        self.host = host  # lower-cased, without port
        self.scheme = scheme
        # client_ip is the resolved client: the socket peer, or, when the peer is a
        # trusted proxy, the right-most untrusted X-Forwarded-For hop. Rate limits,
        # screening and logs use it; peer_ip is who actually connected.
        self.client_ip = client_ip
        self.client_port = client_port
        self.peer_ip = peer_ip if peer_ip is not None else client_ip
        self.trusted_peer = trusted_peer
        self.tls = tls
        self.listener = listener  # the RFC 7239 node the request came in on, quoted
        self.request_id = request_id
        self.route = route
        self.body = body
        self.content_length = content_length
        self.version = version
        self.upgrade = upgrade
        self.started_at = started_at
        self.state: dict[str, Any] = {}
        # Set by the auth filter: the caller (API key name or JWT subject) and its
        # rate-limit tier; None when the route has no auth or it names no tier.
        self.principal: str | None = None
        self.principal_tier: str | None = None

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    def __repr__(self) -> str:
        return (
            f"<Exchange {self.method} {self.host}{self.target} route={self.route.name}"
            f" client={self.client_ip} id={self.request_id}>"
        )


class Reply:
    """A response on its way back to the client.

    Exactly one of `body` (complete, in memory) or `stream` (an upstream response
    still being read) carries the payload.
    """

    __slots__ = ("body", "headers", "status", "stream")

    def __init__(
        self,
        status: int,
        headers: CIMultiDict[str] | None = None,
        body: bytes = b"",
        stream: UpstreamResponse | None = None,
    ) -> None:
        self.status = status
        self.headers: CIMultiDict[str] = headers if headers is not None else CIMultiDict()
        self.body = body
        self.stream = stream

    @classmethod
    def json(cls, status: int, payload: dict[str, Any], **headers: str) -> Reply:
        h: CIMultiDict[str] = CIMultiDict(headers)
        h["Content-Type"] = "application/json"
        return cls(status, h, orjson.dumps(payload) + b"\n")

    @classmethod
    def error(cls, status: int, code: str, message: str, request_id: str) -> Reply:
        """The small JSON error body every gateway-made error uses."""
        return cls.json(status, {"error": code, "message": message, "request_id": request_id})

    def __repr__(self) -> str:
        kind = "stream" if self.stream is not None else f"{len(self.body)} bytes"
        return f"<Reply {self.status} {kind}>"
