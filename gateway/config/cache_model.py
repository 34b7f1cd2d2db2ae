"""HTTP caching per route (RFC 9111 shared cache) and the per-worker memory store.

A route's `cache` section:

    cache:
      max_entry_bytes: 1MiB     # larger responses are streamed through, not stored
      default_ttl: 0s           # 0: store only what the response makes fresh itself
      key:
        headers: [X-Tenant]     # request headers that are part of the key
        query: all              # all | none | [names]: which query parameters
      tags_header: Surrogate-Key  # purge tags from the upstream response (none: off)
      strip_tags_header: true   # and the client does not see that header

and the top-level store, kept across reloads while its settings hold:

    cache_store:
      backend: memory           # memory: one LRU per worker | redis: shared by all
      max_bytes: 64MiB          # memory: bytes of entries per worker
      redis:                    # redis: where, how long to wait, key names
        url: redis://127.0.0.1:6379/0
        timeout: 50ms
        key_prefix: "gw:cache:"
        keep_stale: 10m

The filter is gateway/filters/cache.py; the RFC rules gateway/cache/policy.py; the
stores gateway/cache/store.py (memory) and gateway/cache/redis_store.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator

from gateway.config.fields import StrictModel, unit
from gateway.config.ratelimit_model import RedisBreaker, RedisSettings
from gateway.config.units import Duration, Size

__all__ = ["Cache", "CacheKey", "CacheRedis", "CacheStore"]


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
    tags_header: str | None = Field(
        default="Surrogate-Key",
        description="Response header naming the entry's purge tags, separated by spaces or "
        "commas (Surrogate-Key, Cache-Tag styles); read when the response is stored. "
        "None: no tags.",
    )
    strip_tags_header: bool = Field(
        default=True,
        description="Remove the tags header from what clients receive (it is for the cache).",
    )

    @field_validator("tags_header")
    @classmethod
    def _check_tags_header(cls, v: str | None) -> str | None:
        if v is not None:
            _check_header_names([v])
        return v


class CacheRedis(StrictModel):
    """The Redis store of cached responses, shared by every gateway instance."""

    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="redis://, rediss:// (TLS), unix:// or "
        "redis+sentinel://h1:26379,h2:26379/<service>[/db] (Redis Cluster is not supported).",
    )
    timeout: Duration = Field(
        default=unit("50ms"),
        gt=0,
        description="Most a request waits for the cache's Redis (lookup, connecting "
        "included); beyond it the cache is bypassed.",
    )
    key_prefix: str = Field(
        default="gw:cache:",
        pattern=r"^[^*?\[\]\\\s]*$",
        description="Prefix of every cache key in Redis (no glob characters or spaces).",
    )
    keep_stale: Duration = Field(
        default=unit("10m"),
        ge=0,
        description="How long entries stay in Redis after their freshness and stale "
        "windows end, so they can still be revalidated (304) instead of fetched again.",
    )
    breaker: RedisBreaker = Field(
        default=RedisBreaker(),
        description="Circuit breaker: while Redis fails, the cache is bypassed at once.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        try:
            RedisSettings(url=v)  # the same url rules as the rate limiter's Redis
        except ValidationError as e:
            raise ValueError(str(e.errors()[0]["msg"]).removeprefix("Value error, ")) from None
        return v


class CacheStore(StrictModel):
    """Where cached responses live: per-worker memory (default) or a shared Redis."""

    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description="memory: one LRU per worker process; redis: one store for every "
        "instance (purge and hits shared).",
    )
    max_bytes: Size = Field(
        default=unit("64MiB"),
        gt=0,
        description="memory: bytes of entries (bodies and headers) kept per worker; least "
        "recently used go first.",
    )
    redis: CacheRedis = Field(default=CacheRedis(), description="redis: the connection.")
