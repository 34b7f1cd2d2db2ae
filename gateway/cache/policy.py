"""RFC 9111 rules for a shared cache: what may be stored, for how long, how old it is.

Pure functions over header lists; no clock of their own (callers pass `now`, a
monotonic time, and resident times are differences of it). Dates in headers (Date,
Expires, Last-Modified) are only ever compared with each other, so no wall clock is
needed: freshness from Expires is `Expires - Date` (RFC 9111 4.2.1).

Choices (safe side where the RFC leaves room):
- `private` and `no-cache` with a field list are treated as unqualified (4.2.1 allows
  ignoring the list, which only makes the cache more conservative).
- Responses with Set-Cookie are not stored: a shared cache must never hand one user's
  session to another, and origins forget `private` on them often enough.
- s-maxage implies proxy-revalidate (5.2.2.10), so like must-revalidate it turns off
  serving stale (stale-if-error, stale-while-revalidate).
- Heuristic freshness only for statuses cacheable by default and only when the route
  sets default_ttl (> 0); otherwise a response without explicit freshness is stored
  only when it can be revalidated (it has a validator).
"""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import parsedate_to_datetime

__all__ = [
    "DEFAULT_CACHEABLE",
    "CacheControl",
    "http_date",
    "not_storable",
    "parse_cache_control",
    "weak_match",
]

# RFC 9110 15.1: heuristically cacheable status codes (206 left out: no range support).
DEFAULT_CACHEABLE = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})


class CacheControl:
    """A parsed Cache-Control field (all lines), the directives a shared cache reads."""

    __slots__ = (
        "max_age",
        "max_stale",
        "min_fresh",
        "must_revalidate",
        "no_cache",
        "no_store",
        "private",
        "public",
        "s_maxage",
        "stale_if_error",
        "stale_while_revalidate",
    )

    def __init__(self) -> None:
        self.max_age: int | None = None
        self.s_maxage: int | None = None
        self.no_store = False
        self.no_cache = False
        self.private = False
        self.public = False
        self.must_revalidate = False  # must-revalidate or proxy-revalidate
        self.stale_if_error: int | None = None
        self.stale_while_revalidate: int | None = None
        self.max_stale: int | None = None
        self.min_fresh: int | None = None

    def __repr__(self) -> str:
        on = [n for n in self.__slots__ if getattr(self, n) not in (None, False)]
        return f"<CacheControl {' '.join(f'{n}={getattr(self, n)}' for n in on)}>"


def _seconds(value: str) -> int | None:
    # RFC 9111 1.2.2: delta-seconds; a malformed one is treated as invalid (None).
    value = value.strip().strip('"')
    return int(value) if value.isdigit() else None


_DELTAS = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "stale-if-error": "stale_if_error",
    "stale-while-revalidate": "stale_while_revalidate",
    "min-fresh": "min_fresh",
}


def parse_cache_control(values: Iterable[str]) -> CacheControl:
    cc = CacheControl()
    for value in values:
        for directive in value.split(","):
            name, eq, arg = directive.partition("=")
            name = name.strip().lower()
            if name in _DELTAS:
                seconds = _seconds(arg)
                if seconds is None and name in ("max-age", "s-maxage"):
                    seconds = 0  # 4.2.1: an invalid max-age makes the response stale
                if seconds is not None:
                    setattr(cc, _DELTAS[name], seconds)
            elif name == "no-store":
                cc.no_store = True
            elif name == "no-cache":
                cc.no_cache = True
            elif name == "private":
                cc.private = True
            elif name == "public":
                cc.public = True
            elif name in ("must-revalidate", "proxy-revalidate"):
                cc.must_revalidate = True
            elif name == "max-stale":
                cc.max_stale = _seconds(arg) if eq else 1 << 31
    if cc.s_maxage is not None:
        cc.must_revalidate = True  # 5.2.2.10
    return cc


def http_date(value: str | None) -> float | None:
    """An HTTP-date as a POSIX timestamp; None when absent or invalid."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def freshness_lifetime(
    status: int, headers: list[tuple[str, str]], cc: CacheControl, default_ttl: float
) -> float:
    """RFC 9111 4.2.1: s-maxage, else max-age, else Expires - Date, else heuristic."""
    if cc.s_maxage is not None:
        return float(cc.s_maxage)
    if cc.max_age is not None:
        return float(cc.max_age)
    expires_text = _get(headers, "expires")
    if expires_text is not None:
        expires = http_date(expires_text)
        date = http_date(_get(headers, "date"))
        if expires is None or date is None:
            return 0.0  # 5.3: an invalid Expires means already expired
        return max(0.0, expires - date)
    if status in DEFAULT_CACHEABLE:
        return default_ttl
    return 0.0


def upstream_age(headers: list[tuple[str, str]]) -> float:
    """The Age the upstream reported (5.1); 0 when absent or invalid."""
    value = _get(headers, "age")
    seconds = _seconds(value) if value is not None else None
    return float(seconds) if seconds is not None else 0.0


def not_storable(
    method: str,
    status: int,
    authorized: bool,
    headers: list[tuple[str, str]],
    cc: CacheControl,
    has_explicit_freshness: bool,
) -> str | None:
    """Why a response may not be stored (RFC 9111 3), or None when it may."""
    if method != "GET":
        return "method"
    if cc.no_store:
        return "no-store"
    if cc.private:
        return "private"  # 3.1: a shared cache never stores private responses
    if authorized and not (cc.public or cc.s_maxage is not None or cc.must_revalidate):
        return "authorization"  # 3.5
    if status not in DEFAULT_CACHEABLE and not (has_explicit_freshness or cc.public):
        return "status"
    for k, v in headers:
        low = k.lower()
        if low == "vary" and any(t.strip() == "*" for t in v.split(",")):
            return "vary-star"  # 4.1: never matches a later request
        if low == "set-cookie":
            return "set-cookie"
    return None


def vary_names(headers: list[tuple[str, str]]) -> tuple[str, ...]:
    """The request header names listed in Vary, lower-cased, sorted, de-duplicated."""
    names = {t.strip().lower() for k, v in headers if k.lower() == "vary" for t in v.split(",")}
    names.discard("")
    return tuple(sorted(names))


def weak_match(etag: str, if_none_match: str) -> bool:
    """RFC 9110 13.1.2: If-None-Match uses the weak comparison."""
    if if_none_match.strip() == "*":
        return True
    tag = etag.removeprefix("W/")
    return any(c.strip().removeprefix("W/") == tag for c in if_none_match.split(","))
