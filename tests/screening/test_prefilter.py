"""The Hyperscan prefilter (prefilter.py, matcher.py, body.py) changes cost, never
verdicts: value by value on both corpora, every rule the reference (every rule's
regex on every value) finds is found with the prefilter; request by request, both
corpora get the same decisions, rules and locations with and without it; and the
joined paths (a request's head, a JSON body's raw text) fall back where they cannot
stand for their values."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.filters.screening import RULES, Matcher, ScreeningFilter
from gateway.filters.screening.body import _joined
from gateway.filters.screening.prefilter import SEP, relax
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
    ],
)
def test_joined_json_is_the_documents_strings(body: bytes, expected: str | None) -> None:
    joined = _joined(body)
    assert joined == expected
    if joined is not None:
        strings = _strings(orjson.loads(body))
        assert joined.split(SEP)[1::2] == strings


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
