"""The filter pipeline: one onion-shaped interface and a fixed order.

A filter is `async (ex, next) -> Reply`: it either calls `next(ex)` or answers
itself (429, 413, 403, a cache hit). Expected outcomes are returned, never raised.

Routes *configure* filters; they never reorder them. `FILTER_ORDER` is the one
place the order lives (as Kong's plugin priorities are), cheap rejections first and
Redis round trips later. Chains are compiled per route when a config loads, as
plain closures, so a request pays one function call per filter and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from gateway.exchange import Exchange, Reply

Next = Callable[[Exchange], Awaitable[Reply]]


class Filter(Protocol):
    """A per-route, immutable object built at config load."""

    async def __call__(self, ex: Exchange, next: Next) -> Reply: ...


# The fixed order, outermost first (DESIGN.md's pipeline). A filter name not in this
# tuple cannot be installed: adding a filter means deciding where it runs.
FILTER_ORDER: tuple[str, ...] = (
    "metrics",
    "overload",  # load shedding by route priority: before any work is spent
    "bans",  # banned / denied clients: one dict lookup, before anything else works
    "cors",  # preflights answered here; CORS headers on every answer below, 401s too
    "headers",
    "size",
    "auth",  # API keys, JWT, signed webhooks: sets the principal the rate limiter keys on
    "ratelimit",
    "screening",
    "cache",
    "compression",
    # Idempotency keys: after the request was judged acceptable, and inside
    # compression, so a replay is encoded for the client asking, not the first one.
    "dedup",
)


def compile_chain(filters: Mapping[str, Filter], terminal: Next) -> Next:
    """Wrap `terminal` in the given filters, in FILTER_ORDER, as closures."""
    unknown = set(filters) - set(FILTER_ORDER)
    if unknown:
        raise ValueError(f"unknown filter(s): {', '.join(sorted(unknown))}")
    chain = terminal
    for name in reversed(FILTER_ORDER):
        f = filters.get(name)
        if f is not None:
            chain = _link(f, chain)
    return chain


def _link(f: Filter, nxt: Next) -> Next:
    # A plain function returning the filter's coroutine: no extra coroutine frame per
    # filter per request (an `async def` wrapper would add one await level each).
    def step(ex: Exchange) -> Awaitable[Reply]:
        return f(ex, nxt)

    step.__qualname__ = f"chain[{type(f).__name__}]"
    return step
