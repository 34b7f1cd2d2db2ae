"""Per-route figures for the dashboard, read from the gateway's own Prometheus scrape.

The scrape (`metrics.exposition()`) is already merged across worker processes, so
reading it here gives the dashboard the same numbers Prometheus sees, without a
second bookkeeping path. It is parsed with prometheus_client's parser and reduced to
cumulative counters per route: requests, by status class, 5xx errors, and blocks (any
`*block*_total` counter that carries a `route` label: screening, rate limits, bans).
The page turns successive polls into rates; counters only grow, so a difference over
the poll interval is the rate (a reset, after a restart, shows as a negative and is
skipped there). Workers flush their counters about once a second, so figures lag by
up to that.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.metrics import exposition

REQUESTS_SAMPLE = "gateway_requests_total"


def route_stats(text: str) -> dict[str, dict[str, Any]]:
    routes: dict[str, dict[str, Any]] = {}

    def row(name: str) -> dict[str, Any]:
        r = routes.get(name)
        if r is None:
            r = routes[name] = {"requests": 0.0, "errors": 0.0, "blocked": 0.0, "by_class": {}}
        return r

    for family in text_string_to_metric_families(text):
        blocks = "block" in family.name and family.type == "counter"
        for s in family.samples:
            route = s.labels.get("route")
            if route is None:
                continue
            if s.name == REQUESTS_SAMPLE:
                r = row(route)
                cls = s.labels.get("status_class", "")
                r["requests"] += s.value
                r["by_class"][cls] = r["by_class"].get(cls, 0.0) + s.value
                if cls == "5xx":
                    r["errors"] += s.value
            elif blocks and s.name.endswith("_total"):
                row(route)["blocked"] += s.value
    return routes


def collect() -> dict[str, Any]:
    """The current per-route counters and the wall time they were read at."""
    body, _ = exposition()
    return {"time": time.time(), "routes": route_stats(body.decode("utf-8", "replace"))}
