"""Request limits and pattern screening per route: the `limits` and `screening` sections.

    limits:                          # the size filter (gateway/filters/size.py)
      max_body_bytes: 10MiB          # Content-Length over it: 413 before reading;
                                     # a streamed body is cut with 413 when it crosses it
      max_url_bytes: 8KiB            # path + '?' + query as received; 414 beyond
      max_header_bytes: 32KiB        # sum of 'name: value\\r\\n'; 431 beyond
      max_headers: 100               # 431 beyond
      methods: [GET, POST]           # others get 405 with Allow; empty: any
      content_types: [application/json, "text/*"]   # a request body's media type,
                                     # parameters ignored; others get 415; empty: any

    screening:                       # the screening filter (gateway/filters/screening/)
      mode: block                    # or shadow: decide, log and count, let pass
      threshold: 5                   # anomaly score that blocks (CRS's default)
      inspect_body_bytes: 64KiB      # body prefix read and inspected; 0: bodies unread
      categories: [sqli, xss, traversal, rce, protocol]
      headers: [User-Agent, Referer] # header values inspected; ["*"]: all but Cookie
      cookies: true                  # cookie values inspected, by name
      exclusions:                    # a rule off where it hurts a legitimate client
        - {rule: 942100, path_prefix: /search, parameter: q}
        - {rule: xss, header: X-Html-Snippet}

Exclusions. `rule` is a rule id or a whole category. The other keys narrow where the
rule is off, and all given ones must hold: `path_prefix` (the raw request path starts
with it), `parameter` (a query or form parameter of that name, or a JSON value whose
path is `$.<parameter>` or ends in that key), `header` (that header, case-insensitive),
`cookie` (that cookie). An exclusion with only `rule` turns it off for the route.

Why `max_body_bytes` and not `max_body`: units in names (DESIGN.md style rule 3);
`Size` still accepts '10MiB'.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gateway.config.fields import Method, StrictModel, Token, check_abs_path, choice, unit
from gateway.config.units import Size

__all__ = ["CATEGORIES", "Exclusion", "Limits", "Screening"]

CategoryName = Literal["sqli", "xss", "traversal", "rce", "protocol"]
CATEGORIES: tuple[CategoryName, ...] = ("sqli", "xss", "traversal", "rce", "protocol")
_MEDIA_TYPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+/(?:\*|[!#$%&'*+\-.^_`|~0-9a-z]+)")
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

Category = Annotated[
    CategoryName,
    BeforeValidator(choice("category", CATEGORIES)),
]


def _check_media_type(v: Any) -> Any:
    if not isinstance(v, str):
        raise ValueError(f"invalid content type {v!r}: expected a string like 'application/json'")
    text = v.strip().lower()
    if ";" in text:
        raise ValueError(
            f"invalid content type {v!r}: parameters are ignored when matching; "
            f"write {text.partition(';')[0].strip()!r}"
        )
    if text != "*/*" and (not _MEDIA_TYPE.fullmatch(text) or text.startswith("*/")):
        raise ValueError(
            f"invalid content type {v!r}: expected 'type/subtype' or 'type/*', "
            "like 'application/json' or 'text/*'"
        )
    return text


MediaRange = Annotated[str, BeforeValidator(_check_media_type)]


def _no_duplicates(what: str, items: list[str]) -> None:
    seen: set[str] = set()
    for item in items:
        key = item.lower()
        if key in seen:
            raise ValueError(f"{what} {item!r} given twice")
        seen.add(key)


class Limits(StrictModel):
    """Cheap rejections by size, method and content type, before anything reads a body."""

    max_body_bytes: Size = Field(
        default=unit("10MiB"),
        description="Largest request body; a Content-Length over it gets 413 before the "
        "body is read, a streamed body is cut with 413 when it crosses it.",
    )
    max_url_bytes: Size = Field(
        default=unit("8KiB"),
        gt=0,
        description="Longest request target (path, '?', query) as received; 414 beyond.",
    )
    max_header_bytes: Size = Field(
        default=unit("32KiB"),
        gt=0,
        description="All request headers together, counted as 'name: value\\r\\n'; 431 beyond.",
    )
    max_headers: int = Field(default=100, ge=1, description="Most request headers; 431 beyond.")
    methods: list[Method] = Field(
        default=[], description="Methods allowed; others get 405 with Allow. Empty: any."
    )
    content_types: list[MediaRange] = Field(
        default=[],
        description="Media types a request body may have ('application/json', 'text/*'), "
        "parameters ignored; others, or a body without one, get 415. Empty: any.",
    )

    @field_validator("methods", "content_types")
    @classmethod
    def _unique(cls, v: list[str], info: Any) -> list[str]:
        _no_duplicates("method" if info.field_name == "methods" else "content type", v)
        return v


def _check_rule(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        from gateway.filters.screening.rules import RULES_BY_ID  # no cycle at import time

        if v not in RULES_BY_ID:
            raise ValueError(f"unknown rule {v} (gateway/filters/screening/rules.py lists them)")
        return v
    if isinstance(v, str) and v in CATEGORIES:
        return v
    listed = ", ".join(CATEGORIES)
    raise ValueError(f"invalid rule {v!r}: expected a rule id like 942100 or a category ({listed})")


def _check_cookie_name(v: str | None) -> str | None:
    if v is not None and not _COOKIE_NAME.fullmatch(v):
        raise ValueError(f"invalid cookie name {v!r}: must be a token (RFC 6265 4.1.1)")
    return v


class Exclusion(StrictModel):
    """A rule (or category) turned off where all the given conditions hold."""

    rule: Annotated[int | str, BeforeValidator(_check_rule)] = Field(
        description="A rule id (942100) or a category (sqli, xss, traversal, rce, protocol)."
    )
    path_prefix: str | None = Field(
        default=None, description="Only for request paths starting with this."
    )
    parameter: str | None = Field(
        default=None,
        description="Only in this query or form parameter, or JSON value ($.a.b, or key b).",
    )
    header: Token | None = Field(default=None, description="Only in this header's value.")
    cookie: str | None = Field(default=None, description="Only in this cookie's value.")

    _abs = field_validator("path_prefix")(check_abs_path)
    _cookie = field_validator("cookie")(_check_cookie_name)

    @field_validator("parameter")
    @classmethod
    def _check_parameter(cls, v: str | None) -> str | None:
        if v is not None and not v:
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _one_location(self) -> Exclusion:
        given = [n for n in ("parameter", "header", "cookie") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(
                f"give at most one of parameter, header, cookie (got {', '.join(given)})"
            )
        return self


Mode = Annotated[Literal["block", "shadow"], BeforeValidator(choice("mode", ("block", "shadow")))]


class Screening(StrictModel):
    """Pattern screening with anomaly scoring (the OWASP Core Rule Set's model)."""

    mode: Mode = Field(
        default="block",
        description="'block': 403 at the threshold; 'shadow': decide, log and count, let pass.",
    )
    threshold: int = Field(
        default=5, ge=1, description="Anomaly score that blocks; a critical rule scores 5."
    )
    inspect_body_bytes: Size = Field(
        default=unit("64KiB"),
        description="How much of a request body is read and inspected (form and JSON values); "
        "the rest streams on uninspected. 0: bodies are not inspected.",
    )
    categories: list[Category] = Field(
        default=list(CATEGORIES),
        description="Rule categories applied: sqli, xss, traversal, rce, protocol.",
    )
    headers: list[Token] = Field(
        default=["User-Agent", "Referer"],
        description="Headers whose values are inspected; ['*'] inspects all but Cookie "
        "(see cookies) and Authorization.",
    )
    cookies: bool = Field(default=True, description="Inspect cookie values, by cookie name.")
    exclusions: list[Exclusion] = Field(
        default=[], description="Rules turned off for a path, a parameter, a header or a cookie."
    )

    @field_validator("categories", "headers")
    @classmethod
    def _unique(cls, v: list[str], info: Any) -> list[str]:
        _no_duplicates("category" if info.field_name == "categories" else "header", v)
        return v

    @field_validator("headers")
    @classmethod
    def _star_alone(cls, v: list[str]) -> list[str]:
        if "*" in v and len(v) > 1:
            raise ValueError("'*' already means every header; give it alone")
        return v
