"""The terminal of every chain: forward the exchange to an upstream endpoint.

Proxy semantics per RFC 9110 section 7.6:
- hop-by-hop headers (7.6.1), and every header named in Connection, are removed in
  both directions; Upgrade and Connection survive only on an upgrade request;
- Via is appended both ways (7.6.3) with the configured pseudonym;
- X-Forwarded-For/-Proto/-Host are appended, never replaced (a later issue decides
  which hops are trusted); the request id is generated when absent, sent upstream
  and returned to the client.

Resilience (the order of one request):
1. the adaptive concurrency limit (gateway/upstream/adaptive.py), when configured:
   over it, 503 at once; then the bulkhead: a slot among the upstream's
   `max_concurrent`, or a place in its queue, or 503 at once;
2. the balancer picks an available member (breaker admits, health check passes)
   not tried yet; when none is left before anything was tried, 503 at once with
   Retry-After (seconds until the earliest breaker half-opens): never a timeout;
3. the result feeds the member's breaker: connect errors, timeouts, broken
   responses and `failure_statuses` are failures, anything else (4xx too) success;
   a half-open breaker's request is its probe;
4. retries on another member: a connect failure sent nothing, so any method moves
   on (not charged to the budget: nothing reached the service, and the breakers
   soon stop it); a retriable status, a timeout or a broken response is retried
   for idempotent methods whose body is replayable (none, or held in memory), at
   most `attempts` times and only while the route's retry budget allows.
   `per_try_timeout` bounds each try's wait for the response head (as the deadline
   handed to the pool; the body then reads under the route's deadline).

The stale keep-alive race (a pooled connection the upstream had closed) is retried
inside the pool on a fresh connection for idempotent requests whose body was not
consumed, so the client never sees it (and the breaker does not count it).

The hot path adds one clock read and a compare (lazy breaker cool-down), one
attribute test per candidate in the balancer, a rolling-window add for the breaker
and one for the retry budget; nothing is allocated for it.
Known gap: a timeout or a broken body after the response head was forwarded is not
counted by the breaker (the reply is already the client's).
Observability: `ex.state["upstream"]` (the upstream's name) and `ex.state["endpoint"]`
(the pool that answered) label the request's metrics and access log line; each try's
time to the response head goes to UPSTREAM_LATENCY (plain numbers, flushed once a
second).

Versions: a route naming a service has a `split` (gateway/routing/split.py): it picks
the version (sticky bucket or override) before anything above, then everything runs
on that version's upstream (regions, bulkhead, breakers), and the split records the
outcome and latency in the version's stats. A route without versions has no split
and pays one attribute test for the feature.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from gateway.body import BytesBody
from gateway.config.forwarding_model import Forwarding
from gateway.errors import (
    GatewayError,
    NoUpstreamAvailable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
)
from gateway.exchange import Exchange, Reply
from gateway.forwarded import forwarded_element
from gateway.hopbyhop import HOP_BY_HOP
from gateway.observability.metrics import UPSTREAM_LATENCY
from gateway.pipeline import Next
from gateway.upstream import ConnectionPool, RetryBudget, RetryPolicy, UpstreamResponse
from gateway.upstream.adaptive import AdaptiveLimiter
from gateway.upstream.breaker import HALF_OPEN
from gateway.upstream.bulkhead import Bulkhead
from gateway.upstream.service import Upstream

if TYPE_CHECKING:
    from gateway.routing.split import VersionSplit

__all__ = ["HOP_BY_HOP", "IDEMPOTENT", "Forwarder", "Upstream", "filter_headers", "make_terminal"]

Clock = Callable[[], float]
HashKeyOf = Callable[[Exchange], str | None]
_NONE: frozenset[str] = frozenset()

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

# The same client, host and listener make the same Forwarded element: built once
# (a regex match and three f-strings), bounded (least recently used dropped).
_forwarded_element = lru_cache(maxsize=1024)(forwarded_element)


# Connection header values seen -> their lower-cased tokens: nearly always one of a
# handful ("keep-alive", "close"), so parsed once; cleared when full (bounded).
_TOKENS: dict[str, frozenset[str]] = {}
_TOKENS_MAX = 256


def _connection_tokens(values: Sequence[str]) -> frozenset[str]:
    key = values[0] if len(values) == 1 else ",".join(values)
    tokens = _TOKENS.get(key)
    if tokens is None:
        tokens = frozenset(t.strip().lower() for t in key.split(",") if t.strip())
        if len(_TOKENS) >= _TOKENS_MAX:
            _TOKENS.clear()
        _TOKENS[key] = tokens
    return tokens


def filter_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers minus hop-by-hop ones and those the Connection header names.

    Takes (name, value) pairs, a CIMultiDict's items() or an upstream's raw list.
    """
    pairs = headers if isinstance(headers, list) else list(headers)
    lowered = [k.lower() for k, _ in pairs]  # one lower() per header, no triples
    drop = HOP_BY_HOP
    if "connection" in lowered:
        values = [kv[1] for lk, kv in zip(lowered, pairs, strict=True) if lk == "connection"]
        tokens = _connection_tokens(values)
        if not tokens <= drop:
            drop = drop | tokens
    return [kv for lk, kv in zip(lowered, pairs, strict=True) if lk not in drop]


def hash_key_of(kind: str, name: str) -> HashKeyOf:
    """A reader of the consistent-hash key from a request (built at load)."""
    if kind == "header":
        return lambda ex: ex.headers.get(name)
    if kind == "cookie":
        prefix = f"{name}="

        def cookie(ex: Exchange) -> str | None:
            for header in ex.headers.getall("Cookie", ()):
                for part in header.split(";"):
                    part = part.strip()
                    if part.startswith(prefix):
                        return part[len(prefix) :]
            return None

        return cookie
    return lambda ex: ex.client_ip


class Forwarder:
    """Per-route terminal; everything it needs is computed once at config load."""

    __slots__ = (
        "_loop",
        "budget",
        "cert_headers",
        "clock",
        "connect_timeout_s",
        "drop_sets",
        "forwarded",
        "hash_key_of",
        "max_response_bytes",
        "per_try_timeout_s",
        "preserve_host",
        "read_timeout_s",
        "rebuilt",
        "rebuilt_and_host",
        "request_id_header",
        "retry_attempts",
        "retry_idempotent",
        "retry_statuses",
        "rewrite",
        "split",
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
        max_response_bytes: int = 0,
        retry_idempotent: bool,
        rewrite: object,
        via: str,
        request_id_header: str,
        forwarding: Forwarding | None = None,
        retry: RetryPolicy | None = None,
        budget: RetryBudget | None = None,
        clock: Clock = time.monotonic,
        split: VersionSplit | None = None,
    ) -> None:
        self.upstream = upstream
        self.split = split
        self._loop: asyncio.AbstractEventLoop | None = None  # set on the first request
        policy = retry if retry is not None else RetryPolicy()
        self.budget = budget if budget is not None else RetryBudget(policy)
        self.retry_attempts = policy.attempts
        self.retry_statuses = policy.on_statuses
        self.per_try_timeout_s = policy.per_try_timeout_s
        self.clock = clock
        hk = upstream.hash_key
        self.hash_key_of: HashKeyOf | None = hash_key_of(*hk) if hk is not None else None
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.total_timeout_s = total_timeout_s
        self.max_response_bytes = max_response_bytes
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
        # What upstream_headers drops, indexed by keep_host + 2 * trusted_peer.
        untrusted = HOP_BY_HOP | self.untrusted_drop
        self.drop_sets: tuple[frozenset[str], ...] = (
            untrusted | self.rebuilt_and_host,
            untrusted | self.rebuilt,
            HOP_BY_HOP | self.rebuilt_and_host,
            HOP_BY_HOP | self.rebuilt,
        )

    def upstream_headers(self, ex: Exchange, pool: ConnectionPool) -> list[tuple[str, str]]:
        h = ex.headers
        trusted = ex.trusted_peer
        keep_host = self.preserve_host and "Host" in h
        # One pass, one lower() per header: hop-by-hop ones, those the Connection
        # header names, and what the gateway rebuilds (sets joined at load).
        drop = self.drop_sets[keep_host + 2 * trusted]
        connection = h.getall("Connection", ())
        if connection:
            tokens = _connection_tokens(connection)
            if not tokens <= drop:
                drop = drop | tokens
        out = [kv for kv in h.items() if kv[0].lower() not in drop]
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
            element = _forwarded_element(ex.peer_ip, ex.scheme, host, ex.listener)
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

    # __call__ and _send are plain functions returning the coroutine that does the work:
    # one await level less per request on the hot path (no split, no bulkhead).
    def __call__(self, ex: Exchange) -> Awaitable[Reply]:
        split = self.split
        if split is not None:
            return split.forward(ex, self._send)
        return self._send(ex, self.upstream, self.hash_key_of)

    def _send(self, ex: Exchange, up: Upstream, key_of: HashKeyOf | None) -> Awaitable[Reply]:
        """Forward to `up` (the route's upstream, or the version's the split chose)."""
        path = ex.path
        if self.rewrite is not None:
            path = self.rewrite(path)  # type: ignore[operator]
        target = f"{path}?{ex.query}" if ex.query else path
        now = self.clock()
        group = up.group
        if now >= group.wake_at:
            group.wake(now)  # ejections that ended: those breakers go half-open
        if not up.guarded:  # neither a bulkhead nor an adaptive limit
            return self._forward(ex, target, now, up, key_of)
        return self._send_bulkhead(ex, target, now, up, key_of)

    async def _send_bulkhead(
        self, ex: Exchange, target: str, now: float, up: Upstream, key_of: HashKeyOf | None
    ) -> Reply:
        """Through the adaptive limit (refused at once when over it), then the bulkhead.

        The limiter's latency sample runs from after the bulkhead to the response head
        (a timeout or broken response is a sample, a connect failure or cancel not);
        both slots are held until the body ends."""
        limiter = up.adaptive
        if limiter is not None and not limiter.try_acquire():
            message = f"upstream '{up.name}' is over its adaptive concurrency limit"
            return _busy(ex, "upstream_overloaded", f"{message} ({limiter.cap})")
        bulkhead = up.bulkhead
        if bulkhead is not None:
            admitted = False
            try:
                admitted = bulkhead.enter() or await bulkhead.wait()
            finally:
                if not admitted and limiter is not None:
                    limiter.unsampled()
                    limiter.release()
            if not admitted:
                message = f"upstream '{up.name}' is at its limit of concurrent requests"
                return _busy(ex, "upstream_busy", message)
        leave = _leave(bulkhead, limiter)
        started = limiter.clock() if limiter is not None else 0.0
        try:
            reply = await self._forward(ex, target, now, up, key_of)
        except (UpstreamTimeout, UpstreamError) as exc:
            if limiter is not None:
                if isinstance(exc, UpstreamConnectError):
                    limiter.unsampled()
                else:
                    limiter.sample(started)
            leave()
            raise
        except BaseException:
            if limiter is not None:
                limiter.unsampled()
            leave()
            raise
        if limiter is not None:
            limiter.sample(started)
        if reply.stream is not None:
            reply.stream.when_done(leave)
        else:
            leave()
        return reply

    async def _forward(
        self, ex: Exchange, target: str, now: float, up: Upstream, key_of: HashKeyOf | None
    ) -> Reply:
        # The loop is kept (as the pool keeps it): on Python 3.11 each
        # asyncio.get_running_loop() makes a getpid() syscall (its fork check).
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        deadline = None
        if self.total_timeout_s > 0:
            deadline = loop.time() + self.total_timeout_s
        method = ex.method
        idempotent = method in IDEMPOTENT
        retry_stale = self.retry_idempotent and idempotent
        retries_left = 0
        if idempotent and self.retry_attempts and (ex.body is None or type(ex.body) is BytesBody):
            retries_left = self.retry_attempts
            self.budget.on_request(now)
        balancer = up.balancer
        ex.state["upstream"] = up.name  # the metrics' and access log's upstream label
        hash_key = key_of(ex) if key_of is not None else None
        tried: set[str] | None = None
        last: GatewayError | None = None
        pending: UpstreamResponse | None = None  # a retriable answer kept as a fallback
        pending_pool = up.members[0].pool
        for _ in range(len(up.members) + self.retry_attempts):
            try:
                member = balancer.pick(tried if tried is not None else _NONE, hash_key)
            except NoUpstreamAvailable:
                break
            if pending is not None:
                pending.abort()
                pending = None
            breaker = member.breaker
            probe = breaker.state is HALF_OPEN
            if probe:
                breaker.start_probe()
            pool = member.pool
            try_deadline = deadline
            if self.per_try_timeout_s:
                per_try = loop.time() + self.per_try_timeout_s
                if deadline is None or per_try < deadline:
                    try_deadline = per_try
            sent_at = time.perf_counter()
            try:
                resp = await pool.request(
                    method,
                    target,
                    self.upstream_headers(ex, pool),
                    ex.body,
                    content_length=ex.content_length,
                    connect_timeout_s=self.connect_timeout_s,
                    read_timeout_s=self.read_timeout_s,
                    deadline=try_deadline,
                    retry_stale=retry_stale,
                )
            except UpstreamConnectError as exc:
                # Nothing was sent: safe to try the next endpoint whatever the method.
                if probe:
                    breaker.probe_result(now, False)
                else:
                    breaker.on_failure(now, unreachable=True)
                last = exc
                tried = _add(tried, member.key)
                ex.state.setdefault("upstream_errors", []).append(f"{pool.key}: {exc}")
                continue
            except (UpstreamTimeout, UpstreamError) as exc:
                if probe:
                    breaker.probe_result(now, False)
                else:
                    breaker.on_failure(now)
                ex.state.setdefault("upstream_errors", []).append(f"{pool.key}: {exc}")
                if (
                    retries_left
                    and (deadline is None or loop.time() < deadline)
                    and self.budget.try_retry(self.clock())
                ):
                    retries_left -= 1
                    last = exc
                    tried = _add(tried, member.key)
                    continue
                raise
            except BaseException:
                if probe:
                    breaker.probe_result(now, None)  # no verdict: free the probe slot
                raise
            UPSTREAM_LATENCY.observe(up.name, time.perf_counter() - sent_at)
            status = resp.status
            if probe:
                breaker.probe_result(now, status not in breaker.failure_statuses)
            elif status in breaker.failure_statuses:
                breaker.on_failure(now)
            else:
                breaker.on_success(now)
            if try_deadline is not deadline:
                resp.set_deadline(deadline)
            if (
                retries_left
                and status in self.retry_statuses
                and self.budget.try_retry(self.clock())
            ):
                retries_left -= 1
                pending, pending_pool = resp, pool
                tried = _add(tried, member.key)
                continue
            return self._reply(ex, resp, pool)
        if pending is not None:
            return self._reply(ex, pending, pending_pool)
        if last is not None:
            raise last
        return self._unavailable(ex, now, up)

    def _reply(self, ex: Exchange, resp: UpstreamResponse, pool: ConnectionPool) -> Reply:
        ex.state["endpoint"] = pool
        if resp.status == 101 and not ex.upgrade:
            # RFC 9110 7.8: a switch only to a protocol the client asked for; relaying
            # it would turn the client's connection into a raw tunnel it never wanted.
            resp.abort()
            raise UpstreamProtocolError("101 Switching Protocols to a request without Upgrade")
        limit = self.max_response_bytes
        if limit:
            if resp.content_length is not None and resp.content_length > limit:
                resp.abort()  # the body is not read: the connection cannot be reused
                raise UpstreamResponseTooLarge(
                    f"upstream announced {resp.content_length} bytes, over {limit}"
                )
            resp.limit_body(limit)
        kept = filter_headers(resp.headers)
        kept.append(("Via", self.via))
        headers: CIMultiDict[str] = CIMultiDict(kept)
        if ex.upgrade and resp.status == 101:
            headers["Connection"] = "upgrade"
            headers["Upgrade"] = next((v for k, v in resp.headers if k.lower() == "upgrade"), "")
        return Reply(resp.status, headers, stream=resp)

    def _unavailable(self, ex: Exchange, now: float, up: Upstream) -> Reply:
        """Every member is out (breaker or health): 503 now, with Retry-After."""
        reply = Reply.error(
            503,
            NoUpstreamAvailable.code,
            f"no endpoint of upstream '{up.name}' is available",
            ex.request_id,
        )
        reply.headers["Retry-After"] = str(up.retry_after_s(now))
        return reply

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


def _busy(ex: Exchange, code: str, message: str) -> Reply:
    reply = Reply.error(503, code, message, ex.request_id)
    reply.headers["Retry-After"] = "1"
    return reply


def _leave(bulkhead: Bulkhead | None, limiter: AdaptiveLimiter | None) -> Callable[[], None]:
    """What frees the request's slots when its response ends."""
    if limiter is None:
        assert bulkhead is not None
        return bulkhead.leave
    if bulkhead is None:
        return limiter.release
    b_leave, l_release = bulkhead.leave, limiter.release

    def leave() -> None:
        b_leave()
        l_release()

    return leave


def _add(tried: set[str] | None, key: str) -> set[str]:
    if tried is None:
        return {key}
    tried.add(key)
    return tried


def make_terminal(fw: Forwarder) -> Next:
    return fw.__call__
