"""Filters: one module per filter, each an immutable per-route object built at load.

A filter is `async (ex, next) -> Reply` (gateway.pipeline.Filter); `runtime.route_filters`
builds a route's filters from its config and the pipeline puts them in FILTER_ORDER.

headers.py  HeaderFilter: request/response set/add/remove with compiled templates
            (${client_ip}, ${tls_version}, ...), security response headers (HSTS over
            TLS only)
size.py     SizeFilter: per-route limits (405 methods, 414 URL, 431 headers, 415 content
            types, 413 body: Content-Length at once, a streamed body as it streams)
screening/  ScreeningFilter: SQLi/XSS/traversal/RCE/protocol rules, normalised input,
            anomaly scoring, block or shadow, exclusions (see its __init__)
bans.py     BanFilter: banned / deny-listed / user-agent-denied clients get 403 first;
            counts screening blocks toward bans (store: gateway/store/bans.py)
ratelimit.py  RateLimitFilter: token-bucket policies per route (memory or Redis store,
              batched), 429 + RateLimit headers; build_ratelimit_filter(route, stores)
cache.py    CacheFilter: RFC 9111 shared cache per route (stores, admission, answers:
            gateway/cache/), Vary, revalidation, collapsed misses, stale-if-error /
            stale-while-revalidate, purge tags
cors.py     CorsFilter: per-route CORS (Fetch standard): preflights answered here, origin
            allow-list with wildcard subdomains, Vary: Origin, headers on inner refusals
auth/       AuthFilter: API keys, JWT (JWKS file/URL, cached tokens), signed webhooks;
            sets ex.principal / ex.principal_tier for the rate limiter (see its __init__)
compression.py  CompressionFilter: Accept-Encoding negotiation (zstd, br, gzip),
              skip rules, Vary, weak ETags, streamed output with bounded memory;
              compression_rules.py (negotiate, media ranges) and compression_codecs.py
              (codecs, CompressedStream)
overload.py OverloadFilter: sheds a route's requests by priority under worker pressure
            (event-loop lag, in-flight requests; monitor: gateway/overload.py)
dedup.py    DedupFilter: idempotency keys (header or JSON body path), stored responses
            replayed, 409/422, in-flight repeats wait (store: gateway/store/dedup.py)
"""

from gateway.filters.headers import HeaderFilter
from gateway.filters.screening import ScreeningFilter
from gateway.filters.size import SizeFilter

__all__ = ["HeaderFilter", "ScreeningFilter", "SizeFilter"]
