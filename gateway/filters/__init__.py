"""Filters: one module per filter, each an immutable per-route object built at load.

A filter is `async (ex, next) -> Reply` (gateway.pipeline.Filter); `runtime.route_filters`
builds a route's filters from its config and the pipeline puts them in FILTER_ORDER.

headers.py  HeaderFilter: request/response set/add/remove with compiled templates
            (${client_ip}, ${tls_version}, ...), security response headers (HSTS over
            TLS only)
ratelimit.py  RateLimitFilter: token-bucket policies per route (memory or Redis store,
              batched), 429 + RateLimit headers; build_ratelimit_filter(route, stores)
"""

from gateway.filters.headers import HeaderFilter

__all__ = ["HeaderFilter"]
