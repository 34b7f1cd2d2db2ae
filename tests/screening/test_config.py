"""The limits and screening sections: the exact message at the exact path (test_model.py's
style), defaults, and the built filters."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import validate_data
from tests.config.test_model import TOKEN, base, edited, errors_of

L = "routes[0].limits"
S = "routes[0].screening"
SIZE = "expected a number of bytes or a string like '512', '10KB', '10KiB', '1GiB'"
MEDIA = "expected 'type/subtype' or 'type/*', like 'application/json' or 'text/*'"
RULE = "expected a rule id like 942100 or a category (sqli, xss, traversal, rce, protocol)"

# (id, edits, "path: message")
INVALID = [
    ("max-body-unit", {f"{L}.max_body_bytes": "10 parsecs"},
     f"{L}.max_body_bytes: invalid size '10 parsecs': {SIZE}"),
    ("max-url-zero", {f"{L}.max_url_bytes": 0}, f"{L}.max_url_bytes: must be > 0"),
    ("max-headers-zero", {f"{L}.max_headers": 0}, f"{L}.max_headers: must be >= 1"),
    ("old-key-name", {f"{L}.max_body": "1MiB"}, f"{L}.max_body: unknown key"),
    ("method-twice", {f"{L}.methods": ["GET", "get"]}, f"{L}.methods: method 'GET' given twice"),
    ("method-not-token", {f"{L}.methods": ["BAD METHOD"]},
     f"{L}.methods[0]: invalid method 'BAD METHOD': {TOKEN}"),
    ("content-type-params", {f"{L}.content_types": ["application/json; charset=utf-8"]},
     f"{L}.content_types[0]: invalid content type 'application/json; charset=utf-8': "
     "parameters are ignored when matching; write 'application/json'"),
    ("content-type-bare", {f"{L}.content_types": ["json"]},
     f"{L}.content_types[0]: invalid content type 'json': {MEDIA}"),
    ("content-type-star-type", {f"{L}.content_types": ["*/json"]},
     f"{L}.content_types[0]: invalid content type '*/json': {MEDIA}"),
    ("content-type-twice", {f"{L}.content_types": ["text/*", "TEXT/*"]},
     f"{L}.content_types: content type 'text/*' given twice"),
    ("mode-unknown", {f"{S}.mode": "enforce"},
     f"{S}.mode: invalid mode 'enforce': expected 'block' or 'shadow'"),
    ("mode-yaml-off", {f"{S}.mode": False},
     f"{S}.mode: invalid mode False: expected 'block' or 'shadow' (quote it: YAML reads a "
     "bare off as false)"),
    ("threshold-zero", {f"{S}.threshold": 0}, f"{S}.threshold: must be >= 1"),
    ("threshold-string", {f"{S}.threshold": "5"}, f"{S}.threshold: must be an integer (got '5')"),
    ("inspect-size", {f"{S}.inspect_body_bytes": "lots"},
     f"{S}.inspect_body_bytes: invalid size 'lots': {SIZE}"),
    ("category-unknown", {f"{S}.categories": ["sqli", "csrf"]},
     f"{S}.categories[1]: invalid category 'csrf': expected 'sqli', 'xss', 'traversal', "
     "'rce' or 'protocol'"),
    ("headers-star-and-more", {f"{S}.headers": ["*", "User-Agent"]},
     f"{S}.headers: '*' already means every header; give it alone"),
    ("header-not-token", {f"{S}.headers": ["Bad Header"]},
     f"{S}.headers[0]: invalid header name 'Bad Header': {TOKEN}"),
    ("unknown-key", {f"{S}.unknown": 1}, f"{S}.unknown: unknown key"),
    ("exclusion-unknown-rule", {f"{S}.exclusions": [{"rule": 942999}]},
     f"{S}.exclusions[0].rule: unknown rule 942999 (gateway/filters/screening/rules.py lists "
     "them)"),
    ("exclusion-bad-category", {f"{S}.exclusions": [{"rule": "sql"}]},
     f"{S}.exclusions[0].rule: invalid rule 'sql': {RULE}"),
    ("exclusion-bool-rule", {f"{S}.exclusions": [{"rule": True}]},
     f"{S}.exclusions[0].rule: invalid rule True: {RULE}"),
    ("exclusion-needs-rule", {f"{S}.exclusions": [{"path_prefix": "/x"}]},
     f"{S}.exclusions[0].rule: required"),
    ("exclusion-relative-path", {f"{S}.exclusions": [{"rule": 942100, "path_prefix": "search"}]},
     f"{S}.exclusions[0].path_prefix: invalid path 'search': must start with '/'"),
    ("exclusion-two-locations",
     {f"{S}.exclusions": [{"rule": 942100, "parameter": "q", "header": "X-A"}]},
     f"{S}.exclusions[0]: give at most one of parameter, header, cookie (got parameter, "
     "header)"),
    ("exclusion-cookie-name", {f"{S}.exclusions": [{"rule": 942100, "cookie": "a b"}]},
     f"{S}.exclusions[0].cookie: invalid cookie name 'a b': must be a token (RFC 6265 4.1.1)"),
    ("exclusion-empty-parameter", {f"{S}.exclusions": [{"rule": 942100, "parameter": ""}]},
     f"{S}.exclusions[0].parameter: must not be empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edits", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid(edits: dict[str, Any], expected: str) -> None:
    assert errors_of(edited(edits)) == [expected]


def test_errors_in_both_sections_reported_together() -> None:
    errors = errors_of(edited({f"{L}.max_headers": 0, f"{S}.threshold": 0}))
    assert errors == [f"{L}.max_headers: must be >= 1", f"{S}.threshold: must be >= 1"]


def test_defaults_are_parsed_and_safe() -> None:
    route = validate_data(edited({L: {}, S: {}})).routes[0]
    assert route.limits is not None and route.screening is not None
    lim, scr = route.limits, route.screening
    assert (lim.max_body_bytes, lim.max_url_bytes, lim.max_header_bytes) == (
        10 * 1024 * 1024,
        8192,
        32768,
    )
    assert (lim.max_headers, lim.methods, lim.content_types) == (100, [], [])
    assert (scr.mode, scr.threshold, scr.inspect_body_bytes) == ("block", 5, 65536)
    assert scr.categories == ["sqli", "xss", "traversal", "rce", "protocol"]
    assert (scr.headers, scr.cookies, scr.exclusions) == (["User-Agent", "Referer"], True, [])


def test_off_unless_configured() -> None:
    route = validate_data(base()).routes[0]
    assert route.limits is None and route.screening is None


def test_normalisation() -> None:
    route = validate_data(
        edited(
            {
                L: {"methods": ["get", "Post"], "content_types": [" Application/JSON "]},
                S: {"exclusions": [{"rule": 942100}, {"rule": "xss", "header": "X-A"}]},
            }
        )
    ).routes[0]
    assert route.limits is not None and route.screening is not None
    assert route.limits.methods == ["GET", "POST"]
    assert route.limits.content_types == ["application/json"]
    assert [e.rule for e in route.screening.exclusions] == [942100, "xss"]
