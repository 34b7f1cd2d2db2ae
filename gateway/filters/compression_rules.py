"""Compression rules: Accept-Encoding negotiation, media ranges, Vary, no-transform.

`negotiate` (RFC 9110 12.5.3): each offered coding gets its own q, or the q of `*`,
or 0; the highest q > 0 wins, ties going to the server's order; q=0 excludes.
`identity` only competes when listed explicitly with a q above the best coding's. No
acceptable coding, or no Accept-Encoding header at all, means identity.
`_MediaTypes` matches a Content-Type against the compiled ranges (`type/subtype`,
`type/*`, `type/*+suffix`); text/event-stream never matches (each event must be
flushed, and compressors buffer).
"""

from __future__ import annotations

import re

from multidict import CIMultiDict, istr

__all__ = ["has_no_transform", "merge_vary", "negotiate"]

CACHE_CONTROL = istr("Cache-Control")
VARY = istr("Vary")

# RFC 9110 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"0(?:\.\d{0,3})?|1(?:\.0{0,3})?")
_NEVER = frozenset({"text/event-stream"})  # needs each event flushed, see the note


def negotiate(accept: str | None, offered: tuple[str, ...]) -> str | None:
    """The coding to use for `accept` (an Accept-Encoding value), or None for identity.

    `offered` is the server's preference order; see the module note for the rules.
    """
    if accept is None:
        return None
    qs: dict[str, float] = {}
    star: float | None = None
    for element in accept.split(","):
        coding, _, params = element.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        if params:
            for param in params.split(";"):
                key, _, value = param.partition("=")
                if key.strip().lower() == "q":
                    value = value.strip()
                    q = float(value) if _QVALUE.fullmatch(value) else -1.0
        if q < 0:
            continue  # a malformed weight: the element is ignored
        if coding == "x-gzip":  # RFC 9110 8.4.1.3
            coding = "gzip"
        if coding == "*":
            star = q if star is None else max(star, q)
        else:
            qs[coding] = max(q, qs.get(coding, q))
    best: str | None = None
    best_q = 0.0
    default = star if star is not None else 0.0
    for name in offered:  # strictly greater: the earlier (preferred) coding keeps a tie
        q = qs.get(name, default)
        if q > best_q:
            best, best_q = name, q
    identity = qs.get("identity")
    if best is None or (identity is not None and identity > best_q):
        return None
    return best


class _MediaTypes:
    """The compiled media ranges: exact types, `type/*`, `type/*+suffix`."""

    __slots__ = ("exact", "suffixes", "types")

    def __init__(self, ranges: list[str]) -> None:
        exact, types, suffixes = set(), set(), []
        for r in ranges:
            major, _, minor = r.partition("/")
            if minor == "*":
                types.add(major)
            elif minor.startswith("*+"):
                suffixes.append((major, minor[1:]))
            else:
                exact.add(r)
        self.exact = frozenset(exact)
        self.types = frozenset(types)
        self.suffixes = tuple(suffixes)

    def __call__(self, content_type: str | None) -> bool:
        if not content_type:
            return False
        media = content_type.partition(";")[0].strip().lower()
        if media in self.exact:
            return True
        if media in _NEVER:
            return False
        major, _, minor = media.partition("/")
        if major in self.types:
            return True
        return any(major == m and minor.endswith(s) for m, s in self.suffixes)


def has_no_transform(h: CIMultiDict[str]) -> bool:
    for value in h.getall(CACHE_CONTROL, ()):
        for directive in value.split(","):
            if directive.partition("=")[0].strip().lower() == "no-transform":
                return True
    return False


def merge_vary(h: CIMultiDict[str]) -> None:
    """Add Accept-Encoding to Vary, as one field line, unless it (or `*`) is there."""
    values = h.getall(VARY, ())
    if not values:
        h[VARY] = "Accept-Encoding"
        return
    tokens = [t.strip() for v in values for t in v.split(",") if t.strip()]
    if any(t == "*" or t.lower() == "accept-encoding" for t in tokens):
        return
    h[VARY] = ", ".join([*tokens, "Accept-Encoding"])
