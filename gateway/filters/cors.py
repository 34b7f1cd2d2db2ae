"""CorsFilter: a route's CORS protocol (WHATWG Fetch, "CORS protocol", 3.2), built at load.

It runs right after the ban filter (FILTER_ORDER), outside every filter that can
refuse, so 401s, 413s and 429s made further in carry the CORS headers too (a browser
script that cannot read a 401 cannot react to it). The gateway owns CORS on a route
that configures it: the upstream's own Access-Control-* response headers are removed.

Per request, with `Origin`:

- a preflight (OPTIONS + Origin + Access-Control-Request-Method) is answered here and
  never reaches auth or the upstream: an allowed origin, method and header list get
  204 with Access-Control-Allow-Origin (the origin, or `*` when every origin is
  allowed without credentials), -Allow-Credentials, -Allow-Methods (the configured
  list, or the requested method for `*`), -Allow-Headers (the requested names, which
  were all checked), -Max-Age. Anything else gets 403 `cors_rejected` with no CORS
  headers at all: the Fetch standard fails a preflight whose response is not ok or
  lacks the headers, and a 403 says so to whoever reads the logs.
  CORS-safelisted methods (GET, HEAD, POST) are always allowed, as browsers allow them;
  a `*` header list allows every header but Authorization, which must be named (Fetch:
  "Authorization" is not covered by the wildcard).
- any other request goes on; on the way back an allowed origin gets
  Access-Control-Allow-Origin, -Allow-Credentials and -Expose-Headers; a disallowed
  one gets no CORS headers.

`Vary: Origin` is added to every answer whose CORS headers depend on the Origin (all of
them unless the route allows `*` without credentials), requests without Origin
included, so a shared cache never serves one origin's answer to another; preflights
vary on the two request headers too. Origin checks are cached per origin string (a
bounded dict).
"""

from __future__ import annotations

import re
from collections import Counter

from multidict import CIMultiDict

from gateway.config.cors_model import Cors
from gateway.exchange import Exchange, Reply
from gateway.pipeline import Next

__all__ = ["SAFELISTED_METHODS", "CorsFilter"]

SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
_ACA = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
)
_LABELS = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CACHE_MAX = 4096
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def _add_vary(headers: CIMultiDict[str], name: str = "Origin") -> None:
    for value in headers.getall("Vary", ()):
        for item in value.split(","):
            item = item.strip().lower()
            if item == "*" or item == name.lower():
                return
    headers.add("Vary", name)


class CorsFilter:
    """A route's CORS rules, compiled; `counts` tells preflights and rejections apart."""

    __slots__ = (
        "_cache",
        "allow_methods",
        "any_header",
        "any_method",
        "any_origin",
        "counts",
        "credentials",
        "exact",
        "expose",
        "headers",
        "max_age",
        "methods",
        "route",
        "star",
        "vary",
        "wildcards",
    )

    def __init__(self, cfg: Cors, *, route: str) -> None:
        self.route = route
        self.any_origin = cfg.origins == ["*"]
        self.exact = frozenset(o for o in cfg.origins if "*" not in o)
        wild = []
        for o in cfg.origins:
            if "://*." in o:
                scheme, _, rest = o.partition("*")
                wild.append((scheme, rest))  # ("https://", ".example.com[:port]")
        self.wildcards = tuple(wild)
        self.credentials = cfg.credentials
        self.star = self.any_origin and not cfg.credentials  # answer "*", no Vary
        self.vary = not self.star
        self.any_method = "*" in cfg.methods
        self.methods = frozenset(m for m in cfg.methods if m != "*") | SAFELISTED_METHODS
        self.allow_methods = ", ".join(m for m in cfg.methods if m != "*")
        self.any_header = "*" in cfg.headers
        self.headers = frozenset(h.lower() for h in cfg.headers if h != "*")
        self.max_age = str(int(cfg.max_age))
        self.expose = ", ".join(cfg.expose_headers) or None
        self._cache: dict[str, bool] = {}
        self.counts: Counter[str] = Counter()  # preflight, preflight_rejected, ...

    def allowed(self, origin: str) -> bool:
        if self.any_origin:
            return True
        hit = self._cache.get(origin)
        if hit is not None:
            return hit
        ok = origin in self.exact
        if not ok:
            for scheme, tail in self.wildcards:
                if origin.startswith(scheme) and origin.endswith(tail):
                    sub = origin[len(scheme) : len(origin) - len(tail)]
                    if sub and _LABELS.fullmatch(sub):
                        ok = True
                        break
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[origin] = ok
        return ok

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        origin = ex.headers.get("Origin")
        if origin is not None and ex.method == "OPTIONS":
            requested = ex.headers.get("Access-Control-Request-Method")
            if requested is not None:
                return self._preflight(ex, origin, requested)
        reply = await next(ex)
        h = reply.headers
        for name in _ACA:
            if name in h:
                del h[name]
        if self.vary:
            _add_vary(h)
        if origin is not None and self.allowed(origin):
            self.counts["allowed"] += 1
            h["Access-Control-Allow-Origin"] = "*" if self.star else origin
            if self.credentials:
                h["Access-Control-Allow-Credentials"] = "true"
            if self.expose is not None:
                h["Access-Control-Expose-Headers"] = self.expose
        elif origin is not None:
            self.counts["disallowed"] += 1
        return reply

    def _preflight(self, ex: Exchange, origin: str, method: str) -> Reply:
        names = [
            n.strip().lower()
            for n in ex.headers.get("Access-Control-Request-Headers", "").split(",")
            if n.strip()
        ]
        why = None
        if not self.allowed(origin):
            why = "origin not allowed"
        elif not _TOKEN.fullmatch(method) or not (self.any_method or method in self.methods):
            why = "method not allowed"
        else:
            for n in names:
                if n in self.headers:
                    continue
                if self.any_header and n != "authorization" and _TOKEN.fullmatch(n):
                    continue
                why = "request header not allowed"
                break
        if why is not None:
            self.counts["preflight_rejected"] += 1
            reply = Reply.error(
                403, "cors_rejected", f"CORS preflight refused: {why}", ex.request_id
            )
            reply.headers["Vary"] = _PREFLIGHT_VARY
            return reply
        self.counts["preflight"] += 1
        h: CIMultiDict[str] = CIMultiDict()
        h["Access-Control-Allow-Origin"] = "*" if self.star else origin
        if self.credentials:
            h["Access-Control-Allow-Credentials"] = "true"
        h["Access-Control-Allow-Methods"] = method if self.any_method else self.allow_methods
        if names:
            h["Access-Control-Allow-Headers"] = ", ".join(names)
        h["Access-Control-Max-Age"] = self.max_age
        h["Vary"] = _PREFLIGHT_VARY
        return Reply(204, h)

    def __repr__(self) -> str:
        origins = (
            "*"
            if self.any_origin
            else sorted(self.exact) + [s + "*" + t for s, t in self.wildcards]
        )
        return (
            f"<CorsFilter route={self.route} origins={origins} credentials={self.credentials} "
            f"counts={dict(self.counts)}>"
        )
