"""The config model: what a gateway config file may say, typed and strict.

Every model forbids unknown keys, is frozen (a loaded config is a value; reload builds
a new one) and validates strictly (`workers: "4"` is an error, not a 4): YAML and TOML
already give native types, so coercion would only hide mistakes. Defaults are the
safe choice and are validated like user input, so `"75s"` defaults become floats.

Per-object rules live here and per-field types in `fields.py`, as validators whose
messages are short and human (the loader strips pydantic's decoration, adds the path).
Rules that relate different parts of the file (a route naming an upstream, duplicate
names, clashing addresses) live in `checks.py` and run on the raw data, so they are
reported even when other parts of the file fail validation. Building a Config in code
(`Config(...)`, `model_validate`) skips them: use `load.validate_data` for that.

Durations are float seconds and sizes int bytes (see `units.py`), whatever unit the
file used.

The TLS models (listener certificates, client certificates, upstream TLS) live in
`tls_model.py`, a route's header rules in `headers_model.py`, rate limit policies and
the Redis store in `ratelimit_model.py`, balancing, breakers, health checks, limits
and retries in `resilience_model.py`, abusive-client bans in `bans_model.py`, response
compression in `compression_model.py`, caching in `cache_model.py`, edge authentication
in `auth_model.py`, CORS in `cors_model.py`, overload protection (adaptive concurrency,
shedding by priority) and deduplication in `overload_model.py`; this module re-exports
them.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gateway.config.accesslog_model import AccessLog
from gateway.config.auth_model import Auth
from gateway.config.bans_model import Bans
from gateway.config.cache_model import Cache, CacheKey, CacheStore
from gateway.config.compression_model import Compression, Levels
from gateway.config.cors_model import Cors
from gateway.config.fields import (
    NAME_PATTERN,
    Address,
    Cidr,
    Host,
    Method,
    Name,
    Pseudonym,
    StrictModel,
    Token,
    check_abs_path,
    check_regex,
    one_or_many,
    split_host_port,
    unit,
)
from gateway.config.forwarding_model import ClientCertHeaders, Forwarding
from gateway.config.headers_model import HeaderEdits, HeaderRules, SecurityHeaders
from gateway.config.overload_model import AdaptiveConcurrency, Dedup, Overload, Priority
from gateway.config.ratelimit_model import (
    RateLimitPolicy,
    RateLimitSettings,
    RedisSettings,
)
from gateway.config.resilience_model import (
    Balancing,
    BreakerSettings,
    HashKey,
    HealthCheck,
    Retries,
    UpstreamLimits,
)
from gateway.config.rollout_model import Regions, RolloutPlan, Service
from gateway.config.screening_model import Exclusion, Limits, Screening
from gateway.config.tls_model import CertificatePair, ListenerTLS, UpstreamTLS
from gateway.config.units import Duration, Size

__all__ = [
    "NAME_PATTERN",
    "Admin",
    "Auth",
    "Balancing",
    "Bans",
    "BreakerSettings",
    "Cache",
    "CacheKey",
    "CacheStore",
    "CertificatePair",
    "ClientCertHeaders",
    "Compression",
    "Config",
    "Cors",
    "Endpoint",
    "Exclusion",
    "Forwarding",
    "HashKey",
    "HeaderEdits",
    "HeaderMatch",
    "HeaderRules",
    "HealthCheck",
    "Levels",
    "Limits",
    "Listener",
    "ListenerTLS",
    "Match",
    "PathMatch",
    "PoolSettings",
    "RateLimitPolicy",
    "RateLimitSettings",
    "RedisSettings",
    "Regions",
    "Retries",
    "Rewrite",
    "RolloutPlan",
    "Route",
    "Screening",
    "SecurityHeaders",
    "ServerLimits",
    "Service",
    "StrictModel",
    "Timeouts",
    "Upstream",
    "UpstreamLimits",
    "UpstreamTLS",
    "split_host_port",
]


def _url_to_endpoint(v: Any) -> Any:
    if isinstance(v, str):
        return {"url": v}
    if not isinstance(v, dict | Endpoint):
        raise ValueError(f"expected a URL or a mapping with a url key (got {v!r})")
    return v


class Listener(StrictModel):
    """A socket the gateway accepts client connections on."""

    name: Name | None = Field(
        default=None, description="Name used in logs and metrics; defaults to 'listener-<index>'."
    )
    address: Address = Field(description="'host:port' to bind; IPv6 in brackets, '[::1]:8080'.")
    tls: ListenerTLS | None = Field(default=None, description="Terminate TLS; none is plain HTTP.")
    redirect_to_https: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        default=None,
        description="Answer every request with a 308 redirect to https on this port "
        "(a plain listener only).",
    )

    @property
    def host(self) -> str:
        return split_host_port(self.address)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.address)[1]


class Admin(StrictModel):
    """The admin API and dashboard; keep it on loopback unless it is firewalled."""

    address: Address = Field(
        default="127.0.0.1:9901", description="'host:port' the admin API binds."
    )
    enabled: bool = Field(default=True, description="Serve the admin API at all.")
    token: Annotated[str, Field(min_length=16, pattern=r"^[!-~]+$")] | None = Field(
        default=None,
        repr=False,  # a secret: kept out of logged reprs
        description="Bearer token every admin API request must carry once set (required "
        "off loopback); printable ASCII, 16 characters at least. Prefer token_file.",
    )
    token_file: str | None = Field(
        default=None,
        description="File holding the bearer token (surrounding whitespace ignored), "
        "read when the gateway starts.",
    )

    @property
    def loopback(self) -> bool:
        """Whether the admin address is a loopback one (127.0.0.0/8, ::1, localhost)."""
        host = self.host
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @model_validator(mode="after")
    def _token_off_loopback(self) -> Admin:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give token or token_file, not both")
        if self.enabled and not self.loopback and self.token is None and self.token_file is None:
            raise ValueError(
                f"address {self.address!r} is not loopback: set admin.token or "
                "admin.token_file (a bearer token the admin API then requires)"
            )
        return self

    @property
    def host(self) -> str:
        return split_host_port(self.address)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.address)[1]


class ServerLimits(StrictModel):
    """Limits and timeouts on the client side of the gateway."""

    max_request_line: Size = Field(
        default=unit("8KiB"),
        gt=0,
        description="Longest request line (method, target, version); 414 beyond.",
    )
    max_header_field: Size = Field(
        default=unit("8KiB"), gt=0, description="Longest header line; 431 beyond."
    )
    max_header_size: Size = Field(
        default=unit("32KiB"), gt=0, description="All request header lines together; 431 beyond."
    )
    max_headers: int = Field(
        default=100, ge=1, description="Most request header lines; 431 beyond."
    )
    keepalive_timeout: Duration = Field(
        default=unit("75s"), description="Idle keep-alive client connections are closed after this."
    )
    header_timeout: Duration = Field(
        default=unit("10s"),
        gt=0,
        description="A client must send complete request headers within this.",
    )
    body_timeout: Duration = Field(
        default=unit("30s"),
        gt=0,
        description="Longest gap while reading a request body from the client; 408 beyond "
        "(the upstream request is aborted).",
    )
    send_timeout: Duration = Field(
        default=unit("60s"),
        gt=0,
        description="Longest wait for a client to take more of a streamed response; the "
        "connection is cut beyond (and the upstream's released).",
    )
    allow_encoded_slashes: bool = Field(
        default=False,
        description="Accept %2F and %5C in request paths; false answers 400 (upstreams that "
        "decode them could be reached past a route's path prefix).",
    )
    shutdown_timeout: Duration = Field(
        default=unit("30s"), description="On SIGTERM, in-flight requests get this long to finish."
    )
    request_id_header: Token = Field(
        default="X-Request-ID",
        description="Header carrying the request id, kept if the client sent one.",
    )
    via: Pseudonym = Field(
        default="gateway", description="Pseudonym the gateway uses in the Via header."
    )
    watch_config: bool = Field(
        default=True, description="Reload when the config file changes (SIGHUP reloads regardless)."
    )
    watch_interval: Duration = Field(
        default=unit("1s"), gt=0, description="How often the config file is checked for changes."
    )


class Endpoint(StrictModel):
    """One upstream server; also accepted as a plain URL string."""

    url: str = Field(description="'http://host:port' or 'https://host:port'; no path or query.")
    weight: int = Field(default=1, ge=1, description="Relative share of the upstream's traffic.")
    region: Name | None = Field(
        default=None, description="The endpoint's region (locality failover, see regions)."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError(f"invalid url {v!r}: scheme must be http or https")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"invalid url {v!r}: must not carry user info")
        if not parts.hostname:
            raise ValueError(f"invalid url {v!r}: host is missing")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"invalid url {v!r}: must not have a path or query (use a route rewrite)"
            )
        try:
            parts.port  # noqa: B018  # urlsplit checks the port lazily
        except ValueError:
            raise ValueError(f"invalid url {v!r}: port must be a number in 0..65535") from None
        return v

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.lower()

    @property
    def host(self) -> str:
        """The host, lower-cased, IPv6 without brackets."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        return port if port is not None else (443 if self.scheme == "https" else 80)

    @property
    def authority(self) -> str:
        """'host[:port]' for a Host header: IPv6 bracketed, default port left out."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


class PoolSettings(StrictModel):
    """The keep-alive connection pool kept per endpoint."""

    max_connections: int = Field(
        default=512, ge=1, description="Open connections per endpoint at most."
    )
    max_idle: int = Field(
        default=64, ge=0, description="Idle keep-alive connections kept per endpoint."
    )
    idle_timeout: Duration = Field(
        default=unit("60s"), description="Idle connections are closed after this."
    )


class Upstream(StrictModel):
    """A named group of endpoints that routes send traffic to."""

    endpoints: list[
        Annotated[
            Endpoint, BeforeValidator(_url_to_endpoint, json_schema_input_type=str | Endpoint)
        ]
    ] = Field(min_length=1, description="Endpoints, as URLs or {url, weight} objects.")
    tls: UpstreamTLS = Field(default=UpstreamTLS(), description="TLS settings for https endpoints.")
    pool: PoolSettings = Field(default=PoolSettings(), description="Connection pool per endpoint.")
    balancing: Balancing = Field(default=Balancing(), description="Load balancing policy.")
    breaker: BreakerSettings = Field(
        default=BreakerSettings(), description="Circuit breaker per endpoint."
    )
    health_check: HealthCheck | None = Field(
        default=None, description="Active health checks; none: off."
    )
    limits: UpstreamLimits = Field(
        default=UpstreamLimits(), description="Bulkhead: concurrent and queued requests at most."
    )
    regions: Regions | None = Field(
        default=None,
        description="Locality: failover order and weights across the endpoints' regions; "
        "default (endpoints with a region): own region first.",
    )
    adaptive_concurrency: AdaptiveConcurrency | None = Field(
        default=None,
        description="A concurrency limit that follows measured latency; requests over it "
        "get 503 at once; none: off.",
    )


class PathMatch(StrictModel):
    """Match the request path; give exactly one of exact, prefix, regex."""

    exact: str | None = Field(default=None, description="The whole path, starting with '/'.")
    prefix: str | None = Field(default=None, description="A path prefix, starting with '/'.")
    regex: str | None = Field(default=None, description="A Python regex searched in the path.")

    _abs = field_validator("exact", "prefix")(check_abs_path)
    _regex = field_validator("regex")(check_regex)

    @model_validator(mode="after")
    def _exactly_one(self) -> PathMatch:
        if [self.exact, self.prefix, self.regex].count(None) != 2:
            raise ValueError("give exactly one of exact, prefix, regex")
        return self


class HeaderMatch(StrictModel):
    """Match one request header (names compare case-insensitively)."""

    name: Token = Field(description="Header name.")
    value: str | None = Field(default=None, description="The header's exact value.")
    regex: str | None = Field(
        default=None, description="A Python regex searched in the header value."
    )
    present: bool | None = Field(
        default=None, description="true: the header must be present; false: it must be absent."
    )

    _regex = field_validator("regex")(check_regex)

    @model_validator(mode="after")
    def _exactly_one(self) -> HeaderMatch:
        if [self.value, self.regex, self.present].count(None) != 2:
            raise ValueError("give exactly one of value, regex, present")
        return self


class Match(StrictModel):
    """What a request must look like for its route to apply; all given parts must match."""

    hosts: Annotated[
        list[Host], BeforeValidator(one_or_many, json_schema_input_type=str | list[str])
    ] = Field(
        default=[],
        description="Host names, exact or '*.example.com' (no port); empty matches any host.",
    )
    path: PathMatch | None = Field(default=None, description="Path match; none matches any path.")
    methods: list[Method] = Field(default=[], description="HTTP methods; empty matches any method.")
    headers: list[HeaderMatch] = Field(default=[], description="Header matches, all must hold.")


class Rewrite(StrictModel):
    """Rewrite the path sent upstream: strip_prefix, prefix, or regex + replacement."""

    strip_prefix: bool = Field(
        default=False, description="Remove the matched match.path.prefix from the path."
    )
    prefix: str | None = Field(
        default=None, description="Replace the matched match.path.prefix with this path."
    )
    regex: str | None = Field(default=None, description="A Python regex substituted in the path.")
    replacement: str | None = Field(
        default=None, description="Replacement for regex (\\1, \\g<name>)."
    )

    _abs = field_validator("prefix")(check_abs_path)
    _regex = field_validator("regex")(check_regex)

    @model_validator(mode="after")
    def _exactly_one(self) -> Rewrite:
        if (self.regex is None) != (self.replacement is None):
            raise ValueError("regex and replacement go together")
        styles = [self.strip_prefix, self.prefix is not None, self.regex is not None]
        if styles.count(True) != 1:
            raise ValueError("give exactly one of strip_prefix, prefix, regex + replacement")
        return self


class Timeouts(StrictModel):
    """Timeouts for one upstream exchange."""

    connect: Duration = Field(
        default=unit("2s"), gt=0, description="Connecting to an endpoint (TCP + TLS)."
    )
    read: Duration = Field(
        default=unit("30s"), gt=0, description="Longest gap while waiting for upstream bytes."
    )
    total: Duration = Field(
        default=unit("60s"),
        description="The whole upstream exchange, body included; 0 means unlimited.",
    )


class Route(StrictModel):
    """Requests matching `match` go to `upstream`."""

    name: Name = Field(description="Unique route name, used in logs and metrics.")
    match: Match = Field(
        default=Match(), description="What requests this route takes; default all."
    )
    upstream: str = Field(description="Name of an entry in upstreams or in services.")
    rewrite: Rewrite | None = Field(default=None, description="Path rewrite before forwarding.")
    preserve_host: bool = Field(
        default=True,
        description="Send the client's Host upstream; false: the endpoint's host[:port].",
    )
    timeouts: Timeouts = Field(default=Timeouts(), description="Upstream timeouts.")
    max_response_bytes: Size = Field(
        default=0,
        description="Largest upstream response body: a Content-Length over it gets 502, a "
        "streamed body crossing it is cut. 0: no limit (memory stays bounded either way: "
        "bodies are streamed with backpressure).",
    )
    retry_idempotent: bool = Field(
        default=True,
        description="Retry GET/HEAD/OPTIONS/PUT/DELETE whose connection failed before a "
        "byte was sent.",
    )
    retries: Retries = Field(
        default=Retries(),
        description="Retries of idempotent requests on another endpoint, within a budget.",
    )
    headers: HeaderRules | None = Field(
        default=None,
        description="Header rules: request and response set/add/remove with templates, "
        "security response headers.",
    )
    rate_limits: list[RateLimitPolicy] = Field(
        default=[],
        description="Token-bucket rate limit policies; a request must pass all of them.",
    )
    limits: Limits | None = Field(
        default=None,
        description="Body, URL and header size limits, allowed methods and content types "
        "(413, 414, 431, 405, 415).",
    )
    screening: Screening | None = Field(
        default=None,
        description="Pattern screening (SQLi, XSS, traversal, command injection, protocol "
        "anomalies) with anomaly scoring; block or shadow, exclusions.",
    )
    compression: Compression | None = Field(
        default=None,
        description="Response compression (zstd, br, gzip) negotiated with Accept-Encoding, "
        "streamed; none: off.",
    )
    cache: Cache | None = Field(
        default=None,
        description="RFC 9111 shared cache for GET/HEAD (the cache_store); none: off.",
    )
    bans: bool = Field(
        default=True,
        description="Apply the top-level bans section here (refuse banned, denied clients; "
        "count this route's blocks); false exempts the route.",
    )
    priority: Priority = Field(
        default="normal",
        description="Shedding order under gateway overload: low first, critical last (never "
        "by event-loop lag alone).",
    )
    dedup: Dedup | None = Field(
        default=None,
        description="Idempotency keys: a repeated request within the window gets the stored "
        "response; none: off.",
    )
    auth: Auth | None = Field(
        default=None,
        description="Edge authentication: API keys, JWT bearer tokens, signed webhooks "
        "(401); sets the principal and tier rate limits key on; none: off.",
    )
    cors: Cors | None = Field(
        default=None,
        description="CORS: allowed origins, methods, headers, credentials; preflights "
        "answered by the gateway; none: off (CORS headers pass through untouched).",
    )


class Config(StrictModel):
    """A gateway config file."""

    listeners: list[Listener] = Field(min_length=1, description="Sockets to accept clients on.")
    admin: Admin = Field(default=Admin(), description="Admin API.")
    workers: int = Field(default=1, ge=1, description="Worker processes sharing the listeners.")
    server: ServerLimits = Field(
        default=ServerLimits(), description="Client-side limits and timeouts."
    )
    upstreams: dict[Name, Upstream] = Field(description="Upstreams by name.")
    services: dict[Name, Service] = Field(
        default={},
        description="Services with versions (weighted, sticky splits and rollouts) by name; "
        "a route names one in place of an upstream.",
    )
    region: Name | None = Field(
        default=None, description="This gateway's region: its endpoints are preferred."
    )
    routes: list[Route] = Field(description="Routes; names are unique.")
    forwarding: Forwarding = Field(
        default=Forwarding(), description="Forwarding and client-certificate headers."
    )
    trusted_proxies: list[Cidr] = Field(
        default=[],
        description="Proxies (CIDRs or addresses) whose X-Forwarded-*/Forwarded headers are "
        "believed; from anyone else they are dropped and rebuilt.",
    )
    redis: RedisSettings | None = Field(
        default=None,
        description="The shared Redis store of rate-limit buckets; none keeps buckets in "
        "memory, per process.",
    )
    rate_limit: RateLimitSettings = Field(
        default=RateLimitSettings(), description="Process-wide rate limit settings."
    )
    bans: Bans | None = Field(
        default=None,
        description="Ban client addresses blocked too often; allow/deny CIDRs, user-agent "
        "deny patterns; none: off.",
    )
    cache_store: CacheStore = Field(
        default=CacheStore(), description="The per-worker memory store of cached responses."
    )
    overload: Overload | None = Field(
        default=None,
        description="Shed requests by route priority when the event loop lags or too many "
        "are in flight per worker; none: off.",
    )
    access_log: AccessLog = Field(
        default=AccessLog(),
        description="One JSON line per request (off, sampled or full; stdout or a file); "
        "default off.",
    )

    @property
    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """`trusted_proxies` as ipaddress networks."""
        return [ipaddress.ip_network(cidr) for cidr in self.trusted_proxies]

    @model_validator(mode="before")
    @classmethod
    def _name_listeners(cls, data: Any) -> Any:
        """Give unnamed listeners the default name 'listener-<index>'."""
        if not isinstance(data, dict) or not isinstance(data.get("listeners"), list):
            return data
        named: list[Any] = []
        for i, item in enumerate(data["listeners"]):
            if isinstance(item, dict) and item.get("name") is None:
                item = {**item, "name": f"listener-{i}"}
            elif isinstance(item, Listener) and item.name is None:
                item = item.model_copy(update={"name": f"listener-{i}"})
            named.append(item)
        return {**data, "listeners": named}
