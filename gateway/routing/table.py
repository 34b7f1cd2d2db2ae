"""The route table.

Precedence (documented in the README, tested in tests/routing):

1. Host specificity: routes listing the request's exact host are tried first, then
   routes with a wildcard host (`*.example.com` matches any name ending in
   `.example.com`, at any depth, but not `example.com` itself), the longest suffix
   first, then routes that name no host at all.
2. Within one of those tiers, config order: the first route whose path, methods and
   headers all match wins (as Envoy's and NGINX's regex locations do). Put the more
   specific route first.

Path matching works on the raw, still percent-encoded path, so what is matched is
exactly what is forwarded. A prefix matches on a segment boundary: `/api` matches
`/api` and `/api/x` but not `/apix`; a prefix ending in `/` is a plain prefix. A
regex is searched (anchor it with `^`/`$` as needed), like NGINX and Traefik.

Everything here is compiled once, when a config loads; `match` only does dict
lookups, string comparisons and pre-compiled regex calls.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from multidict import MultiMapping

if TYPE_CHECKING:
    from gateway.config.model import Route as RouteConfig
    from gateway.filters.cache import CacheFilter


class _HeaderRule:
    __slots__ = ("name", "present", "regex", "value")

    def __init__(self, name: str, value: str | None, regex: str | None, present: bool | None):
        self.name = name
        self.value = value
        self.regex = re.compile(regex) if regex is not None else None
        self.present = present

    def ok(self, headers: MultiMapping[str]) -> bool:
        if self.present is not None:
            return (self.name in headers) is self.present
        values = headers.getall(self.name, ())
        if self.value is not None:
            return self.value in values
        assert self.regex is not None
        return any(self.regex.search(v) for v in values)


class Route:
    """One route, compiled. `handler` (the filter chain) is set by the runtime."""

    __slots__ = (
        "cache_fast",
        "config",
        "handler",
        "header_rules",
        "hosts",
        "methods",
        "name",
        "path_exact",
        "path_prefix",
        "path_regex",
        "rewrite",
        "upstream",
    )

    def __init__(self, config: RouteConfig) -> None:
        self.config = config
        self.name = config.name
        m = config.match
        self.hosts = tuple(h.lower() for h in m.hosts)
        self.methods = frozenset(x.upper() for x in m.methods) or None
        p = m.path
        self.path_exact = p.exact if p else None
        self.path_prefix = p.prefix if p else None
        self.path_regex = re.compile(p.regex) if p and p.regex is not None else None
        self.header_rules = tuple(
            _HeaderRule(h.name, h.value, h.regex, h.present) for h in m.headers
        )
        self.rewrite = _compile_rewrite(config)
        self.upstream: Any = None  # the runtime's upstream object for config.upstream
        self.handler: Callable[[Any], Awaitable[Any]] | None = None
        # The route's CacheFilter when no filter runs before it (set by the runtime,
        # gateway/filters/cache.py fast_path_filter): server.py answers fresh hits directly.
        self.cache_fast: CacheFilter | None = None

    def matches(self, path: str, method: str, headers: MultiMapping[str]) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.path_prefix is not None:
            pre = self.path_prefix
            if not path.startswith(pre):
                return False
            if len(path) != len(pre) and pre[-1] != "/" and path[len(pre)] != "/":
                return False
        elif self.path_exact is not None:
            if path != self.path_exact:
                return False
        elif self.path_regex is not None and self.path_regex.search(path) is None:
            return False
        if not self.header_rules:  # most routes: no generator to build
            return True
        return all(rule.ok(headers) for rule in self.header_rules)

    def __repr__(self) -> str:
        return f"<Route {self.name} hosts={list(self.hosts)} upstream={self.config.upstream}>"


def _compile_rewrite(config: RouteConfig) -> Callable[[str], str] | None:
    rw = config.rewrite
    if rw is None:
        return None
    prefix = config.match.path.prefix if config.match.path else None
    if rw.strip_prefix or rw.prefix is not None:
        assert prefix is not None  # the config's cross-checks guarantee it
        cut = len(prefix)
        new = (rw.prefix or "").rstrip("/")

        def replace_prefix(path: str) -> str:
            rest = path[cut:]
            if rest and rest[0] != "/":
                rest = "/" + rest
            return (new + rest) or "/"

        return replace_prefix
    if rw.regex is not None:
        pattern = re.compile(rw.regex)
        replacement = rw.replacement or ""

        def regex_rewrite(path: str) -> str:
            out = pattern.sub(replacement, path, count=1)
            return out if out.startswith("/") else "/" + out

        return regex_rewrite
    return None


class RouteTable:
    """Routes indexed by host, matched in the documented precedence."""

    __slots__ = ("_any", "_exact", "_wildcards", "routes")

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._exact: dict[str, list[Route]] = {}
        wild: dict[str, list[Route]] = {}
        self._any: list[Route] = []
        for r in routes:
            if not r.hosts:
                self._any.append(r)
            for h in r.hosts:
                if h.startswith("*."):
                    wild.setdefault(h[1:], []).append(r)  # "*.a.com" -> ".a.com"
                else:
                    self._exact.setdefault(h, []).append(r)
        self._wildcards = sorted(wild.items(), key=lambda kv: -len(kv[0]))

    def match(self, host: str, path: str, method: str, headers: MultiMapping[str]) -> Route | None:
        routes = self._exact.get(host)
        if routes:
            for r in routes:
                if r.matches(path, method, headers):
                    return r
        for suffix, routes in self._wildcards:
            if host.endswith(suffix):
                for r in routes:
                    if r.matches(path, method, headers):
                        return r
        for r in self._any:
            if r.matches(path, method, headers):
                return r
        return None

    def __repr__(self) -> str:
        return f"<RouteTable {len(self.routes)} routes>"
