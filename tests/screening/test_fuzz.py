"""Property tests (hypothesis) of the normaliser and the prefilter: decoding never
raises, is segment-local (what joining values for one prefilter pass relies on), its
fast paths equal what they replace, the text form is a fixed point, pathological
inputs end quickly, and random requests decide the same with and without the
prefilter. Regression cases for what fuzzing found are at the end."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
import unicodedata
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.filters.screening import RULES, Matcher
from gateway.filters.screening.body import _buffer, _joined, _parses
from gateway.filters.screening.normalise import (
    _fold,
    _nfkc,
    _uncomment,
    decode,
    decode_latin1,
    forms,
    latin1_bytes,
    normalise,
)
from gateway.filters.screening.prefilter import LATIN1_BUFFER_TABLE, SEP
from tests.screening.support import Upstream, exchange, screening_filter

# SCREENING_FUZZ_EXAMPLES=5000 for a deeper run than CI's.
EXAMPLES = int(os.environ.get("SCREENING_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Pieces that exercise every decoding step and their corners.
FRAGMENTS = [
    "%", "%25", "%3c", "%3C", "%2", "%zz", "%u003c", "%U0041", "%ud800", "%c3%a9", "%ff",
    "%00", "%02", "&", "&lt;", "&lt", "&#60;", "&#x3c;", "&#", "&#x", "&#0;", "&#2;",
    "&amp;", "&notit", "&zz;", "\\", "\\x3c", "\\u003c", "\\ud800", "\\u{1F600}",
    "\\u{110000}", "\\\\", "/*", "*/", "/*!50000", "--", "'", '"', "`", "^", "$@",
    "${IFS}", "$ifs", " ", "  ", "\t", "\n", "\r", "\x1c", "\x00", "\x02", "\u00a0",
    "\u2028", "\u0301", "ß", "µ", "²", "ﬁ", "İ", "Σ", "\uff05", "\uff1c", "\ufe6a",
    "\u2215", "\U0001f600", "\udcff", "select", "union", "script", "or", "1=1", "cat",
    "/etc/passwd", "../", "<", ">", "(", ")", ";", "|", "a", "Z", "0", "9",
]  # fmt: skip
pieces = st.lists(st.sampled_from(FRAGMENTS), max_size=24).map("".join)
values = st.one_of(pieces, st.text(max_size=80))
json_values = st.recursive(
    st.one_of(values, st.integers(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(values, inner, max_size=4)
    ),
    max_leaves=12,
)


@SETTINGS
@given(values, st.booleans(), st.booleans())
def test_normalise_never_raises(value: str, raw: bool, path: bool) -> None:
    f = normalise(value, raw=raw, path=path)
    assert isinstance(f.decoded, str) and isinstance(f.text, str)
    assert "\x00" not in f.decoded


@SETTINGS
@given(st.lists(values, min_size=1, max_size=6), st.booleans())
def test_decode_is_segment_local(parts: list[str], raw: bool) -> None:
    parts = [p.replace(SEP, "") for p in parts]
    joined, _ = decode(SEP.join(parts), raw=raw)
    if joined.count(SEP) != len(parts) - 1:
        return  # decoding made a SEP (%02, &#2;): callers check for this and fall back
    assert joined.split(SEP) == [decode(p, raw=raw)[0] for p in parts]


@SETTINGS
@given(st.text(max_size=200))
def test_latin1_fast_paths_equal_what_they_replace(s: str) -> None:
    assert _fold(s) == s.casefold()
    assert _nfkc(s) == unicodedata.normalize("NFKC", s)


@SETTINGS
@given(values)
def test_text_form_is_a_fixed_point(value: str) -> None:
    text = normalise(value).text
    assert forms(text).text == text


# (id, a 64 KiB input built to make decoding work hard)
PATHOLOGICAL = [
    ("nested-percent", "%25" * 21_000 + "3c"),
    ("entity-run", "&amp;" * 13_000),
    ("entity-prefixes", "&amp" * 16_000),
    ("numeric-entities", "&#38;" * 13_000),
    ("backslashes", "\\" * 65_536),
    ("js-escapes", "\\u005c" * 10_000),
    ("iis-run", "%u0025" * 10_000),
    ("comments", "/*" * 32_768),
    ("versioned-comments", "/*!" * 21_000 + "*/"),
    ("nfkc-expanding", "\ufdfa" * 4_000),
    ("combining-marks", "a" + "\u0301" * 65_000),
    ("mixed", ("%25&amp;\\u0025/*" * 4_000)[:65_536]),
]


@pytest.mark.parametrize("value", [c[1] for c in PATHOLOGICAL], ids=[c[0] for c in PATHOLOGICAL])
def test_pathological_inputs_end(value: str) -> None:
    started = time.process_time()
    f = normalise(value, raw=True, path=True)
    assert time.process_time() - started < 5.0  # linear work; seconds would mean a blow-up
    assert len(f.text) <= 18 * len(value)  # NFKC expands a character at most 18-fold


@SETTINGS
@given(values)
def test_decode_latin1_is_decode_where_it_answers(value: str) -> None:
    """The joined body's one-pass decoding (Latin-1, nothing to decode) equals decode."""
    fast = decode_latin1(value)
    decoded, anomalies = decode(value)
    if fast is not None:
        assert fast.decode("latin-1") == decoded
        assert anomalies == ()
    elif value.isascii() and value.isprintable() and not set(value) & set("%&\\"):
        pytest.fail("a value with nothing to decode was refused")


@SETTINGS
@given(st.lists(st.sampled_from(["/*", "/*!", "*/", "!", "1", "50000", "a", " ", "\n", "*", "/"]),
                max_size=30).map("".join))  # fmt: skip
def test_comment_removal_is_the_regexes_in_linear_time(s: str) -> None:
    assert _uncomment(s, versioned=True) == re.sub(r"/\*!\d*(.*?)\*/", r" \1 ", s, flags=re.S)
    assert _uncomment(s, versioned=False) == re.sub(r"/\*.*?\*/", " ", s, flags=re.S)


# -- JSON bodies: validity, and the buffer made from their bytes ---------------------------


def _mutants(data: bytes, seed: int, n: int) -> list[bytes]:
    """`data` with 1-3 bytes deleted, inserted or replaced, from JSON's own alphabet and
    the bytes that make UTF-8 or JSON invalid."""
    rng = random.Random(seed)
    alphabet = b'{}[]",:0123456789.eE+-\\u tfnrlsa\x00\x1f\x7f\xff\xc3\xa9\n \t'
    out = []
    for _ in range(n):
        d = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(d) + 1)
            op = rng.random()
            if op < 0.4 and len(d) > 1:
                del d[min(pos, len(d) - 1)]
            elif op < 0.8:
                d.insert(pos, rng.choice(alphabet))
            else:
                d[min(pos, len(d) - 1)] = rng.choice(alphabet)
        out.append(bytes(d))
    return out


JSON_EDGES = [
    b'["\\ud800"]', b'["\\ud83d\\ude00"]', b"[" * 1024 + b"]" * 1024, b"[" * 1025 + b"]" * 1025,
    b'["a\x01"]', b"\xef\xbb\xbf[1]", b"[1e400]", b"[123456789012345678901234567890]",
    b'["\xc0\xaf"]', b'["\xed\xa0\x80"]', b"[1] x", b"", b" \n[1]\t", b'{"a":1,"a":2}',
]  # fmt: skip


def test_json_validity_is_orjsons() -> None:
    """body._parses (simdjson, orjson where it refuses) decides as orjson.loads does, on
    edge cases and on 20,000 mutants of a document with escapes and non-ASCII text."""
    doc = json.dumps({"a": 'x\u00e9\\"y', "b": [1, 2.5e3, -0, True, None, {"c": "\U0001f600"}]})
    cases = JSON_EDGES + _mutants(doc.encode(), 1, 10_000) + _mutants(b'{"k":[1,"v"]}', 2, 10_000)
    for data in cases:
        try:
            orjson.loads(data)
            expected = True
        except orjson.JSONDecodeError:
            expected = False
        assert _parses(data) is expected, data


@SETTINGS
@given(json_values, st.booleans())
def test_json_buffer_is_the_joined_texts(doc: Any, ascii_escapes: bool) -> None:
    """body._buffer, made from a document's bytes, is the buffer of its joined text
    (case aside: the scan is case-blind); where the joined text has something to
    decode, it makes none."""
    data = json.dumps(doc, ensure_ascii=ascii_escapes).encode("utf-8", "surrogatepass")
    if not _parses(data):
        return
    buf = _buffer(data)
    joined = _joined(data)
    latin1 = None if joined is None else latin1_bytes(joined)
    if buf is None:
        return
    assert latin1 is not None, data
    assert buf.lower() == latin1.translate(LATIN1_BUFFER_TABLE).lower()


# -- the prefilter on random requests ---------------------------------------------------

REFERENCE = Matcher(sorted({r.category for r in RULES}), prefilter=False)


def _decide(request_kw: dict[str, Any], reference: bool) -> tuple[int, list[Any]]:
    f = screening_filter(headers=["*"])
    if reference:
        f.matcher = REFERENCE
    ex = exchange(**request_kw)
    reply = asyncio.run(f(ex, Upstream()))
    verdict = ex.state.get("screening")
    return reply.status, sorted(verdict.hits) if verdict is not None else []


@settings(max_examples=EXAMPLES // 2, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(json_values, st.lists(st.tuples(st.sampled_from(["q", "id", "x"]), pieces), max_size=4),
       pieces, st.booleans())  # fmt: skip
def test_random_requests_decide_the_same_with_and_without_the_prefilter(
    doc: Any, query: list[tuple[str, str]], agent: str, ascii_escapes: bool
) -> None:
    agent = "".join(c for c in agent if c.isprintable() and c not in "\r\n\x00")
    kw = {
        "method": "POST",
        "query": "&".join(f"{k}={v}" for k, v in query),
        "headers": [("Content-Type", "application/json"), ("User-Agent", agent)],
        "body": json.dumps(doc, ensure_ascii=ascii_escapes).encode("utf-8", "surrogatepass"),
    }
    assert _decide(kw, reference=False) == _decide(kw, reference=True)


# -- regressions -------------------------------------------------------------------------

# (id, value): inputs that raised UnicodeEncodeError before (a lone surrogate reached
# the percent-decoder: from a JS or IIS escape, or as received).
SURROGATES = [
    ("js-escape-then-percent", "%5Cud800%2541"),
    ("iis-escape-then-percent", "%ud800%2541"),
    ("as-received", "\udcff%41"),
]


@pytest.mark.parametrize("value", [c[1] for c in SURROGATES], ids=[c[0] for c in SURROGATES])
async def test_lone_surrogates_do_not_crash(value: str) -> None:
    normalise(value, raw=True)
    reply = await screening_filter()(exchange(query="q=" + value), Upstream())
    assert reply.status in (200, 403)


# (id, innermost string, blocked): a 1023-level JSON document (orjson's limit is 1024)
# once raised RecursionError while its strings were walked.
DEEP = [
    ("flagged-path", "1 union select 2", True),
    ("value-by-value-path", "x%00", True),  # a NUL: each value scanned on its own
    ("benign", "fine", False),
]


@pytest.mark.parametrize(("inner", "blocked"), [c[1:] for c in DEEP], ids=[c[0] for c in DEEP])
async def test_deep_json_is_walked_without_recursion(inner: str, blocked: bool) -> None:
    depth = 1023
    body = ("[" * depth + json.dumps(inner) + "]" * depth).encode()
    ex = exchange(method="POST", body=body, headers=[("Content-Type", "application/json")])
    reply = await screening_filter()(ex, Upstream())
    assert (reply.status == 403) is blocked
    if blocked:
        location = ex.state["screening"].hits[0][1]
        assert location == "body:$" + "[0]" * depth
