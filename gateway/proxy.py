"""The terminal of every chain: forward the exchange to an upstream endpoint.

Proxy semantics per RFC 9110 section 7.6:
- hop-by-hop headers (7.6.1), and every header named in Connection, are removed in
  both directions; Upgrade and Connection survive only on an upgrade request;
- Via is appended both ways (7.6.3) with the configured pseudonym;
- X-Forwarded-For/-Proto/-Host are appended, never replaced (a later issue decides
  which hops are trusted); the request id is generated when absent, sent upstream
  and returned to the client.

Retries: a connect failure sent nothing, so any method moves on to the next
endpoint. The stale keep-alive race (a pooled connection the upstream had closed) is
retried inside the pool on a fresh connection for idempotent requests whose body was
not consumed, so the client never sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from multidict import CIMultiDict

from gateway.config.forwarding_model import Forwarding
from gateway.errors import NoUpstreamAvailable, UpstreamConnectError
from gateway.exchange import Exchange, Reply
from gateway.forwarded import forwarded_element
from gateway.pipeline import Next
from gateway.upstream import ConnectionPool, RoundRobin

# RFC 9110 7.6.1 plus the de-facto ones (Keep-Alive, Proxy-Connection). Content-Length
# is not hop-by-hop, but framing is rebuilt on each side, so it is dropped too.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    }
)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def _connection_tokens(values: Iterable[str]) -> frozenset[str]:
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def filter_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers minus hop-by-hop ones and those the Connection header names.

    Takes (name, value) pairs, a CIMultiDict's items() or an upstream's raw list.
    """
    items = headers if isinstance(headers, list) else list(headers)
    named = _connection_tokens(v for k, v in items if k.lower() == "connection")
    drop = HOP_BY_HOP | named if named else HOP_BY_HOP
    return [(k, v) for k, v in items if k.lower() not in drop]


class Upstream:
    """A named pool of endpoints and how to pick one."""

    __slots__ = ("balancer", "name", "pools")

    def __init__(self, name: str, pools: list[ConnectionPool]) -> None:
        self.name = name
        self.pools = pools
        self.balancer = RoundRobin(pools)

    def __repr__(self) -> str:
        return f"<Upstream {self.name} endpoints={[p.spec.key for p in self.pools]}>"


class Forwarder:
    """Per-route terminal; everything it needs is computed once at config load."""

    __slots__ = (
        "cert_headers",
        "connect_timeout_s",
        "forwarded",
        "preserve_host",
        "read_timeout_s",
        "rebuilt",
        "rebuilt_and_host",
        "request_id_header",
        "retry_idempotent",
        "rewrite",
        "total_timeout_s",
        "untrusted_drop",
        "upstream",
        "via",
        "x_forwarded",
    )

    def __init__(
        self,
        upstream: Upstream,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        total_timeout_s: float,
        preserve_host: bool,
        retry_idempotent: bool,
        rewrite: object,
        via: str,
        request_id_header: str,
        forwarding: Forwarding | None = None,
    ) -> None:
        self.upstream = upstream
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.total_timeout_s = total_timeout_s
        self.preserve_host = preserve_host
        self.retry_idempotent = retry_idempotent
        self.rewrite = rewrite
        self.via = f"1.1 {via}"
        self.request_id_header = request_id_header
        fw = forwarding if forwarding is not None else Forwarding()
        self.x_forwarded = fw.x_forwarded
        self.forwarded = fw.forwarded
        cc = fw.client_cert_headers
        # (header name, ClientCertFacts attribute) pairs, fixed at load.
        self.cert_headers: tuple[tuple[str, str], ...] = tuple(
            (name, attr)
            for name, attr in (
                (cc.subject, "subject"),
                (cc.issuer, "issuer"),
                (cc.fingerprint, "sha256_fingerprint"),
                (cc.not_after, "not_after"),
            )
            if name
        ) + ((("Client-Cert", "client_cert_header"),) if cc.client_cert else ())
        # From a client that is not a trusted proxy, everything it could say about
        # itself is dropped (and what the gateway knows is sent instead).
        self.untrusted_drop = _SPOOFABLE | {name.lower() for name, _ in self.cert_headers}
        self.rebuilt = _REBUILT | {request_id_header.lower()}
        self.rebuilt_and_host = self.rebuilt | {"host"}

    def upstream_headers(self, ex: Exchange, pool: ConnectionPool) -> list[tuple[str, str]]:
        h = ex.headers
        trusted = ex.trusted_peer
        keep_host = self.preserve_host and "Host" in h
        drop = self.rebuilt if keep_host else self.rebuilt_and_host
        if not trusted:
            drop = drop | self.untrusted_drop
        out = [kv for kv in filter_headers(h.items()) if kv[0].lower() not in drop]
        if not keep_host:
            out.append(("Host", pool.spec.host_header))
        host = h.get("Host", ex.host)
        if self.x_forwarded:
            if trusted:  # a trusted proxy's record is kept, our hop added
                out.append(("X-Forwarded-For", _append(h, "X-Forwarded-For", ex.peer_ip)))
                out.append(("X-Forwarded-Proto", h.get("X-Forwarded-Proto", ex.scheme)))
                out.append(("X-Forwarded-Host", h.get("X-Forwarded-Host", host)))
            else:
                out.append(("X-Forwarded-For", ex.peer_ip))
                out.append(("X-Forwarded-Proto", ex.scheme))
                out.append(("X-Forwarded-Host", host))
        if self.forwarded:
            element = forwarded_element(ex.peer_ip, ex.scheme, host, ex.listener)
            out.append(("Forwarded", _append(h, "Forwarded", element) if trusted else element))
        out.append(("Via", _append(h, "Via", self.via)))
        out.append((self.request_id_header, ex.request_id))
        tls = ex.tls
        if tls is not None and tls.client_cert is not None:
            facts = tls.client_cert
            for name, attr in self.cert_headers:
                out.append((name, getattr(facts, attr)))
            if facts.client_cert_chain_header and "Client-Cert" in dict(self.cert_headers):
                out.append(("Client-Cert-Chain", facts.client_cert_chain_header))
        if ex.upgrade:
            out.append(("Connection", "upgrade"))
            out.append(("Upgrade", h.get("Upgrade", "")))
        return out

    async def __call__(self, ex: Exchange) -> Reply:
        path = ex.path
        if self.rewrite is not None:
            path = self.rewrite(path)  # type: ignore[operator]
        target = f"{path}?{ex.query}" if ex.query else path
        deadline = None
        if self.total_timeout_s > 0:
            deadline = asyncio.get_running_loop().time() + self.total_timeout_s
        retry_stale = self.retry_idempotent and ex.method in IDEMPOTENT
        balancer = self.upstream.balancer
        tried: set[str] = set()
        last: UpstreamConnectError | None = None
        for _ in self.upstream.pools:
            try:
                pool = balancer.pick(tried) if tried else balancer.pick()
            except NoUpstreamAvailable:
                break
            try:
                resp = await pool.request(
                    ex.method,
                    target,
                    self.upstream_headers(ex, pool),
                    ex.body,
                    content_length=ex.content_length,
                    connect_timeout_s=self.connect_timeout_s,
                    read_timeout_s=self.read_timeout_s,
                    deadline=deadline,
                    retry_stale=retry_stale,
                )
            except UpstreamConnectError as exc:
                # Nothing was sent: safe to try the next endpoint whatever the method.
                last = exc
                tried.add(pool.key)
                ex.state.setdefault("upstream_errors", []).append(f"{pool.key}: {exc}")
                continue
            ex.state["endpoint"] = pool
            headers: CIMultiDict[str] = CIMultiDict(filter_headers(resp.headers))
            headers.add("Via", self.via)
            if ex.upgrade and resp.status == 101:
                headers["Connection"] = "upgrade"
                headers["Upgrade"] = next(
                    (v for k, v in resp.headers if k.lower() == "upgrade"), ""
                )
            return Reply(resp.status, headers, stream=resp)
        if last is not None:
            raise last
        raise NoUpstreamAvailable(f"no endpoint of upstream '{self.upstream.name}' is available")

    def __repr__(self) -> str:
        return f"<Forwarder upstream={self.upstream.name}>"


# Headers the gateway always writes itself (from what the client sent, per trust).
_REBUILT = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "via"}
)
# What a client may forge about itself: dropped unless it comes from a trusted proxy.
_SPOOFABLE = frozenset(
    {
        "x-forwarded-port",
        "x-forwarded-server",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "client-cert",
        "client-cert-chain",
    }
)


def _append(h: CIMultiDict[str], name: str, value: str) -> str:
    prev = h.getall(name, ())
    return ", ".join((*prev, value)) if prev else value


def make_terminal(fw: Forwarder) -> Next:
    return fw.__call__
