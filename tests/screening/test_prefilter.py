"""The Hyperscan prefilter (prefilter.py, matcher.py, body.py) changes cost, never
verdicts: value by value on both corpora, every rule the reference (every rule's
regex on every value) finds is found with the prefilter; request by request, both
corpora get the same decisions, rules and locations with and without it; and the
joined paths (a request's head, a JSON body's raw text) fall back where they cannot
stand for their values."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.filters.screening import RULES, Matcher, ScreeningFilter
from gateway.filters.screening.body import _buffer, _joined
from gateway.filters.screening.normalise import normalise
from gateway.filters.screening.prefilter import SEP, Undecoded, relax, tolerant
from gateway.filters.screening.rules import KINDS
from tests.screening.support import Upstream, exchange, screening_filter

CORPUS = Path(__file__).resolve().parents[2] / "bench" / "corpus"
CATEGORIES = sorted({r.category for r in RULES})
FAST = Matcher(CATEGORIES)
REFERENCE = Matcher(CATEGORIES, prefilter=False)


def _rows(name: str) -> list[dict[str, Any]]:
    lines = (CORPUS / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


ROWS = {name: _rows(name) for name in ("attacks.jsonl", "benign.jsonl")}


def _values() -> list[str]:
    out: list[str] = []
    for rows in ROWS.values():
        for row in rows:
            out.append(row["path"])
            for piece in (row["query"] or "").split("&"):
                out.extend(piece.partition("=")[::2])
            out.extend(v for _, v in row["headers"])
            if row["body"]:
                out.append(row["body"])
                # (a form, text, or an unparseable body: itself an attack)
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.extend(_strings(orjson.loads(row["body"])))
    return [v for v in dict.fromkeys(out) if v]


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [k, *_strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


VALUES = _values()


@pytest.mark.parametrize("kind", KINDS)
def test_every_rule_hit_is_found_value_by_value(kind: str) -> None:
    assert len(VALUES) > 1000
    matched = 0
    for value in VALUES:
        fast: list[tuple[int, str]] = []
        ref: list[tuple[int, str]] = []
        FAST.scan(value, kind, "x", fast)
        REFERENCE.scan(value, kind, "x", ref)
        assert sorted(fast) == sorted(ref), value
        matched += bool(ref)
    assert matched > 100  # the corpora exercise the rules


def _decisions(f: ScreeningFilter, rows: list[dict[str, Any]]) -> list[Any]:
    import asyncio

    async def run() -> list[Any]:
        out = []
        for row in rows:
            body = row["body"].encode() if row["body"] is not None else None
            ex = exchange(
                method=row["method"],
                path=row["path"],
                query=row["query"],
                headers=[(k, v) for k, v in row["headers"] if k.lower() != "host"],
                body=body,
            )
            reply = await f(ex, Upstream())
            verdict = ex.state.get("screening")
            hits = sorted(verdict.hits) if verdict is not None else []
            out.append((row["id"], reply.status, hits))
        return out

    return asyncio.run(run())


def _filters() -> tuple[ScreeningFilter, ScreeningFilter]:
    fast, ref = screening_filter(headers=["*"]), screening_filter(headers=["*"])
    ref.matcher = REFERENCE
    assert fast.matcher.prefilter and not ref.matcher.prefilter
    return fast, ref


CATEGORY_ROWS = sorted(
    {(name, row["category"]) for name, rows in ROWS.items() for row in rows},
)


@pytest.mark.parametrize(
    ("corpus", "category"), CATEGORY_ROWS, ids=[f"{n.split('.')[0]}-{c}" for n, c in CATEGORY_ROWS]
)
def test_same_decisions_with_and_without_the_prefilter(corpus: str, category: str) -> None:
    rows = [r for r in ROWS[corpus] if r["category"] == category]
    fast, ref = _filters()
    assert _decisions(fast, rows) == _decisions(ref, rows)


# (id, JSON body): bodies whose raw text is tricky to join; decisions must agree.
JSON_BODIES: list[tuple[str, Any]] = [
    ("escaped-quotes", {"q": '1" or "1"="1', "k\"ey": "x"}),
    ("escaped-backslash-before-quote", {"a": "x\\", "b": "<script>"}),
    ("unicode-escapes", {"q": "\u003cscript\u003ealert(1)"}),
    ("surrogate-pair", {"q": "\U0001f600 union select 1", "e": "\U0001f600" * 40}),
    ("sep-in-a-value", {"a": "x\u0002y", "b": "1 union select 2"}),
    ("percent-02", {"a": "x%02y", "b": "1 union select 2"}),
    ("comment-across-values", {"a": "1 un/*", "b": "*/ion select 2"}),
    ("comment-in-a-value", {"a": "1/**/union/**/select/**/2"}),
    ("nul", {"a": "x\u0000", "b": "' or 1=1--"}),
    ("pretty-printed", "PRETTY"),
    ("fullwidth", {"a": "\uff1cscript\uff1e"}),
    ("value-edges", {"a": "admin'--", "b": "--", "c": "'"}),
    ("attack-in-key", {"<script>alert(1)</script>": 1}),
    ("many-matches", {"a": "' or '1'='1 " * 800}),
    ("duplicate-keys", '{"a": "<script>", "a": "fine"}'),
    ("deep", {"a": [[[[{"b": [["../../etc/passwd"]]}]]]]}),
    ("benign-prose", {"t": "Don't select the union plan; it's worse (or is it?)."}),
    # quotes inside words: the rce patterns are quote-tolerant, no second buffer
    ("quote-in-command", {"a": "x; c'a't /etc/passwd"}),
    ("quotes-around-command", {"a": 'x; "cat" /etc/passwd', "b": "x|'w'h'o'a'm'i"}),
    ("caret-and-backslash", {"a": "x && w^ho\\ami -a", "b": "x; c^m^d /c dir"}),
    ("quote-in-windows-command", {"a": "c\"m\"d.exe /c calc"}),
    ("ifs-and-dollar-at", {"a": "x;cat${IFS}/etc/passwd", "b": "x;c$@at /etc/passwd"}),
    ("benign-apostrophes-only", {"a": "it's Zoë's cat's bowl; don't", "b": "O'Brien"}),
    # non-ASCII: Latin-1 (the one-pass decoding), beyond it, and what that refuses
    ("latin1-benign", {"a": "Crème brûlée à la carte", "b": "naïve café"}),
    ("latin1-attack", {"a": "Zoë' UNION SELECT pw FROM users--"}),
    ("beyond-latin1", {"a": "日本語 \u2014 \uff1cscript\uff1ealert(1)"}),
    ("latin1-nfkc", {"a": "x\u00a0union\u00a0select 1", "b": "\u00aa\u00b2\u00bd"}),
    ("latin1-fold-grows", {"a": "stra\u00dfe; \u00dfh /etc/x", "b": "\u00b5 union select 1"}),
    # bodies whose values need decoding (percent, entities, escapes) and look-alikes
    ("percent", {"a": "%3Cscript%3Ealert(1)", "b": "100% sure"}),
    ("entities", {"a": "&lt;script&gt;", "b": "&ltscript>", "c": "&#x3c;svg onload=x>"}),
    ("ampersands-in-urls", {"u": "https://x.org/?a=1&utm_source=app&ref=cart&amp=1"}),
    ("js-escapes", {"a": "\\x3cscript\\x3e"}),
]  # fmt: skip


@pytest.mark.parametrize("doc", [c[1] for c in JSON_BODIES], ids=[c[0] for c in JSON_BODIES])
def test_json_bodies_decide_the_same(doc: Any) -> None:
    if doc == "PRETTY":
        body = json.dumps({"a": {"b": ["x", "1 union\n\tselect 2"]}}, indent=4).encode()
    elif isinstance(doc, str):
        body = doc.encode()
    else:
        body = json.dumps(doc).encode()
    rows = [{"id": "x", "method": "POST", "path": "/api", "query": "",
             "headers": [("Content-Type", "application/json")], "body": body.decode()}]  # fmt: skip
    fast, ref = _filters()
    assert _decisions(fast, rows) == _decisions(ref, rows)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'{"a": "b"}', "{\x02a\x02: \x02b\x02}", id="plain"),
        pytest.param(b'{"a": "x\\"y"}', '{\x02a\x02: \x02x"y\x02}', id="escaped-quote"),
        pytest.param(b'{"a": "x\\\\"}', "{\x02a\x02: \x02x\\\x02}", id="escaped-backslash"),
        pytest.param(b'["\\ud83d\\ude00\\u00e9"]', "[\x02\U0001f600\u00e9\x02]", id="escapes"),
        pytest.param(b'["\\u0002"]', None, id="sep-escaped"),
        pytest.param(
            b'{"a\\"": "x\\ny\\tz", "b": "\\u00e9 \\\\ \\/"}',
            '{\x02a"\x02: \x02x\ny\tz\x02, \x02b\x02: \x02\u00e9 \\ /\x02}',
            id="several-escape-runs",
        ),
        pytest.param(b'["x", "\\u0041\\u0002"]', None, id="sep-escaped-in-a-run"),
    ],
)
def test_joined_json_is_the_documents_strings(body: bytes, expected: str | None) -> None:
    joined = _joined(body)
    assert joined == expected
    if joined is not None:
        strings = _strings(orjson.loads(body))
        assert joined.split(SEP)[1::2] == strings


# Corpus values with command-line characters put inside their words, as an evasion would.
JUNKED = [v[:i] + junk + v[i:] for v in VALUES[:400] for i, junk in ((1, "'"), (3, '"'), (2, "^"))]


def test_tolerant_rules_match_the_text_where_the_command_line_form_matches() -> None:
    """What the cmd buffer no longer needs to be built for: a cmd-form rule's tolerant
    pattern, on the text form, matches wherever its relaxed pattern matches the text
    with quotes, backslashes and carets deleted."""
    from gateway.filters.screening.matcher import _CMD, _forms_of

    pairs = [
        (re.compile(relax(r.pattern)), re.compile(tolerant(relax(r.pattern))))
        for r in RULES
        if r.pattern is not None and _CMD in _forms_of(r)
    ]
    assert len(pairs) >= 8
    found = 0
    for value in VALUES + JUNKED:
        text = normalise(value).text
        deleted = text.translate(_DELETE)
        for loose, tolerant_re in pairs:
            if loose.search(deleted) is not None:
                found += 1
                assert tolerant_re.search(text) is not None, (loose.pattern[:40], value)
    assert found > 100


_DELETE = str.maketrans("", "", "\"'\\^")


@pytest.mark.parametrize(
    ("relaxed", "expected"),
    [
        pytest.param("ab", "a{J}b{J}", id="literals"),
        pytest.param(r"\s*x+", r"(?:\s{J})*(?:x{J})+", id="quantified-atoms"),
        pytest.param("(?:a|bc){1,3}?", "(?:a{J}|b{J}c{J}){1,3}?", id="group-quantifier-kept"),
        pytest.param(r"[;|]\$\(", r"[;|]{J}\${J}\({J}", id="classes-and-escapes"),
    ],
)
def test_tolerant_lets_junk_follow_every_atom(relaxed: str, expected: str) -> None:
    assert tolerant(relaxed) == expected.replace("{J}", "[\"'\\\\^]*")
    assert re.fullmatch(tolerant(relaxed), "") is None or relaxed.endswith("?")


@pytest.mark.parametrize(
    ("pattern", "relaxed"),
    [
        pytest.param(r"\bunion\b\s+select", r"union\s+select", id="word-boundaries"),
        pytest.param(r"(?:^|[\\/])\.\.(?:[\\/;]|$)", r"(?:|[\\/])\.\.(?:[\\/;]|)", id="anchors"),
        pytest.param(r"(?<![\w.])on\w+\s*=(?!=)", r"on\w+\s*=", id="look-arounds"),
        pytest.param(r"[$^]x\^", r"[$^]x\^", id="class-and-escapes-kept"),
        pytest.param(r"(?<=a(?:b|[)]))c", r"c", id="nested-look-behind"),
    ],
)
def test_relax_deletes_zero_width_assertions_only(pattern: str, relaxed: str) -> None:
    assert relax(pattern) == relaxed


def test_every_relaxed_rule_matches_where_its_rule_does() -> None:
    for rule in RULES:
        if rule.pattern is None:
            continue
        loose = re.compile(relax(rule.pattern))
        for value in VALUES:
            m = re.search(rule.pattern, value.lower())
            if m is not None:
                assert loose.search(m.group()) is not None, (rule.id, value)


def test_head_is_scanned_in_one_pass_and_located() -> None:
    f = screening_filter(headers=["*"])
    hits: list[tuple[int, str]] = []
    ex = exchange(
        path="/api/items",
        query="a=1&q=%3Cscript%3E&b=fine",
        headers=[("User-Agent", "curl/8"), ("Cookie", "s=1; t=%27%20or%201%3D1--")],
    )
    f.scan_head(ex, hits)
    assert {h[1] for h in hits} == {"query:q", "cookie:t"}
    assert repr(f.matcher).startswith("<Matcher categories=")
    assert "prefilter=True" in repr(f.matcher)


# (id, JSON body, whether the joined path can stand for the values)
JOINABLE: list[tuple[str, Any, bool]] = [
    ("plain", {"a": "x", "b": ["y", 1, None]}, True),
    ("escapes", {"a": 'x"\\\u00e9\U0001f600'}, True),
    ("pretty", "PRETTY", True),
    ("percent-02-makes-sep", {"a": "x%02y"}, False),
    ("comment-may-cross-values", {"a": "un/*", "b": "*/ion"}, False),
    ("nul-must-be-located", {"a": "x%00"}, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "joinable"), [c[1:] for c in JOINABLE], ids=[c[0] for c in JOINABLE]
)
def test_joined_path_falls_back_where_it_cannot_stand(doc: Any, joinable: bool) -> None:
    indent = 2 if doc == "PRETTY" else None
    body = json.dumps({"a": "x\n  y"} if doc == "PRETTY" else doc, indent=indent).encode()
    joined = _joined(body)
    assert joined is not None
    assert (FAST.candidates(joined, "body") is not None) is joinable


def test_flagged_strings_cut_by_spans_equal_the_split_ones() -> None:
    """body._flagged: the segments' spans from the scan (the Latin-1 one-pass buffer)
    cut out the same strings as splitting the joined text does, on every JSON body of
    both corpora that a rule flags."""
    from gateway.filters.screening.body import _flagged

    checked = from_bytes = 0
    for rows in ROWS.values():
        for row in rows:
            body = (row["body"] or "").encode()
            if not body.lstrip().startswith((b"{", b"[")):
                continue
            joined = _joined(body)
            spans: dict[int, tuple[int, int]] = {}
            segments = None if joined is None else FAST.candidates(joined, "body", spans=spans)
            if not segments or joined is None:
                continue
            assert _flagged(joined, segments, spans) == _flagged(joined, segments, {})
            checked += bool(spans)
            buf = _buffer(body)  # the same from the document's bytes (body.py's fast path)
            if buf is not None:
                spans = {}
                with contextlib.suppress(Undecoded):
                    segments = FAST.buffer_candidates(buf, spans)
                    assert segments is not None
                    assert _flagged(joined, segments, spans) == _flagged(joined, segments, {})
                    from_bytes += bool(spans)
    assert checked > 50
    assert from_bytes > 50


HEADS = [
    ("benign-path", [("/", "path", "path")]),
    ("attack-query", [("/s", "path", "path"), ("1' or '1'='1", "query", "query:q")]),
    ("attack-cookie", [("/", "path", "path"), ("<script>alert(1)</script>", "cookie", "cookie:c")]),
    ("long-not-kept", [("/", "path", "path"), ("x" * 600 + " union select 1", "query", "query:q")]),
]


@pytest.mark.parametrize("items", [h[1] for h in HEADS], ids=[h[0] for h in HEADS])
def test_remembered_heads_give_the_hits_of_a_fresh_scan(items: list[Any]) -> None:
    m = Matcher(CATEGORIES)
    fresh: list[Any] = []
    m.scan_items(items, fresh)
    for _ in range(2):  # the first scans and (if short) remembers; the second recalls
        hits: list[Any] = []
        m.scan_head(tuple(items), lambda: items, hits)
        assert hits == fresh
    assert len(m._head_cache) == (0 if sum(len(v) for v, _, _ in items) > 512 else 1)


def test_the_head_cache_is_bounded() -> None:
    m = Matcher(CATEGORIES)
    for i in range(4096 + 10):
        m.scan_head(i, functools.partial(lambda i: [(f"/p{i}", "path", "path")], i), [])
    assert len(m._head_cache) <= 4096
