"""HTTP caching per route (RFC 9111 shared cache) and the per-worker memory store.

A route's `cache` section:

    cache:
      max_entry_bytes: 1MiB     # larger responses are streamed through, not stored
      default_ttl: 0s           # 0: store only what the response makes fresh itself
      key:
        headers: [X-Tenant]     # request headers that are part of the key
        query: all              # all | none | [names]: which query parameters

and the top-level `cache_store: {max_bytes: 64MiB}`: one memory store per worker,
bounded in bytes with LRU eviction, shared by every cached route and kept across
reloads. The filter is gateway/filters/cache.py; the RFC rules gateway/cache/policy.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from gateway.config.fields import StrictModel, unit
from gateway.config.units import Duration, Size

__all__ = ["Cache", "CacheKey", "CacheStore"]


def _check_header_names(v: list[str]) -> list[str]:
    seen: set[str] = set()
    for name in v:
        low = name.lower()
        if not name or any(c in name for c in " \t:,"):
            raise ValueError(f"invalid header name {name!r}")
        if low in seen:
            raise ValueError(f"header {name!r} given twice")
        seen.add(low)
    return v


def _check_params(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("a query parameter is given twice")
    return v


class CacheKey(StrictModel):
    """What, besides method-free host + path, tells two cached responses apart."""

    headers: Annotated[list[str], AfterValidator(_check_header_names)] = Field(
        default=[],
        description="Request header values that are part of the key (case-insensitive names).",
    )
    query: Literal["all", "none"] | Annotated[list[str], AfterValidator(_check_params)] = Field(
        default="all",
        description="Query parameters in the key: all (the raw query), none, or a list of "
        "names (in that order; others are ignored).",
    )


class Cache(StrictModel):
    """An RFC 9111 shared cache for GET and HEAD on this route."""

    max_entry_bytes: Size = Field(
        default=unit("1MiB"),
        gt=0,
        description="Bodies larger than this are streamed to the client but not stored.",
    )
    default_ttl: Duration = Field(
        default=0.0,
        ge=0,
        description="Freshness of responses cacheable by default that carry none of their "
        "own (heuristic, RFC 9111 4.2.2); 0: only what the response allows.",
    )
    key: CacheKey = Field(default=CacheKey(), description="The cache key.")


class CacheStore(StrictModel):
    """The memory store of cached responses: one per worker, LRU bounded in bytes."""

    max_bytes: Size = Field(
        default=unit("64MiB"),
        gt=0,
        description="Bytes of entries (bodies and headers) kept; least recently used go first.",
    )
