"""The matcher: every rule compiled once; Hyperscan says which rules to run where.

How it works. Each rule keeps its Python regex (the final word on a match, run on the
normalised forms its `form` names) and, relaxed, the prefilter (prefilter.py) of each
group it applies to: `head` (path, query, headers, cookies) and `body`. A
rule's regex runs only on values where its relaxed pattern matched:

- `scan_items(items)`: many values of one group (a request's head; a form's fields):
  joined, decoded once, scanned once; only the values a hit lies in are normalised and
  run against only the rules that hit there (`scan(..., only=...)`). The joined path
  is exact only while decoding stays segment-local and no value's anomaly must be
  placed; when the joined text holds `/*` (comment removal could cross values), a
  code check fired, or the scan reports too much, each value is scanned on its own.
- `candidates(joined, group)`: the same for a caller that joins values itself (the
  JSON body: its raw text, see body.py) and maps segments back.
- `scan(value, kind, location, hits)`: one value: normalised, its forms scanned by the
  database, the rules that hit run their regex.
- `scan_head(key, items, hits)`: `scan_items` for a request head, remembered by the
  raw values its items are made of: a route sees the same paths, user agents and
  cookies again and again, and the same values always give the same hits. Bounded
  (cleared when full); a long head is not kept.

The prefilter changes cost, never verdicts: tests/screening/test_prefilter.py checks
on both corpora that every rule's hits are the same with it and without it (every
rule's regex on every value), and that the filter decides the same with and without.

`compile_rules(categories)` is cached: every route with the same categories shares one
`Matcher`, built when the first config using it loads (~0.6 s), never per request.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from typing import NamedTuple

from gateway.filters.screening.normalise import (
    decode_joined,
    has_control,
    is_trivial,
    latin1_bytes,
    normalise,
)
from gateway.filters.screening.prefilter import (
    LATIN1_BUFFER_TABLE,
    SEP,
    Prefilter,
    Undecoded,
)
from gateway.filters.screening.rules import KINDS, RULES, Rule

__all__ = ["Hit", "Item", "Matcher", "compile_rules"]

Hit = tuple[int, str]
"""(rule id, location), location like 'query:q', 'body:$.comment', 'header:User-Agent'."""

Item = tuple[str, str, str]
"""(value, kind, location): one value to scan."""

_DECODED, _TEXT, _CMD = 0, 1, 2
_HEAD_CACHE_MAX = 4096  # heads remembered per Matcher (then the cache starts over)
_HEAD_CACHE_CHARS = 512  # a head whose values add up to more is not remembered
_HEAD_KINDS = frozenset(KINDS) - {"body"}


class _Compiled(NamedTuple):
    rule_id: int
    regex: re.Pattern[str]
    forms: tuple[int, ...]  # the forms it is matched on


def _forms_of(rule: Rule) -> tuple[int, ...]:
    # The shell-command rules (932xxx) see the command-line form too, as CRS applies
    # t:cmdLine to its 932 rules only: quotes or carets inside a PHP function name or a
    # template expression (933, 934) do not make the code run.
    shell = rule.category == "rce" and rule.id // 1000 == 932
    form = "cmd" if shell and rule.form == "text" else rule.form
    return {"decoded": (_DECODED,), "cmd": (_TEXT, _CMD)}.get(form, (_TEXT,))


class Matcher:
    """Compiled rules for a set of categories; immutable, shared between routes."""

    __slots__ = (
        "_all",
        "_by_kind",
        "_checks",
        "_group_checks",
        "_head_cache",
        "_prefilters",
        "categories",
        "prefilter",
    )

    def __init__(self, categories: Iterable[str], *, prefilter: bool = True) -> None:
        """`prefilter=False`: every rule's regex on every value (the reference the
        prefilter is tested against; ~100x slower)."""
        self.categories = tuple(sorted(set(categories)))
        self.prefilter = prefilter
        wanted = [r for r in RULES if r.category in self.categories]
        ordered = sorted(
            (r for r in wanted if r.pattern is not None), key=lambda r: (-r.score, r.id)
        )
        compiled = {
            r.id: _Compiled(r.id, re.compile(r.pattern or ""), _forms_of(r)) for r in ordered
        }
        self._by_kind = {k: tuple(compiled[r.id] for r in ordered if k in r.kinds) for k in KINDS}
        self._all = frozenset(compiled)
        cmd = {c.rule_id for c in compiled.values() if _CMD in c.forms}
        dec = {c.rule_id for c in compiled.values() if _DECODED in c.forms}
        self._prefilters = {
            "head": Prefilter([r for r in ordered if r.kinds & _HEAD_KINDS], cmd, dec),
            "body": Prefilter([r for r in ordered if "body" in r.kinds], cmd, dec),
        }
        self._checks = {
            k: frozenset(r.id for r in wanted if r.pattern is None and k in r.kinds) for k in KINDS
        }
        self._group_checks = {
            "head": frozenset().union(*(self._checks[k] for k in _HEAD_KINDS)),
            "body": self._checks["body"],
        }
        self._head_cache: dict[Hashable, tuple[Hit, ...]] = {}

    # -- one value -----------------------------------------------------------------------

    def scan(
        self,
        value: str,
        kind: str,
        location: str,
        hits: list[Hit],
        only: Collection[int] | None = None,
    ) -> None:
        """Append a (rule id, location) for every rule `value` matches (once per rule);
        with `only`, just those rules are tried (the prefilter already ruled out the rest)."""
        if is_trivial(value):
            return
        forms = normalise(value, raw=kind in ("path", "query"), path=kind == "path")
        checks = self._checks[kind]
        found = [rule_id for rule_id in forms.anomalies if rule_id in checks]
        if only is None and not self.prefilter:
            only = self._all
        elif only is None:
            decoded = forms.decoded if kind != "body" else None
            only = self._prefilters[_group(kind)].rules(forms.text, decoded)
        if only:
            texts = (forms.decoded, forms.text, forms.cmd)
            for c in self._by_kind[kind]:
                if c.rule_id not in only or c.rule_id in found:
                    continue
                for form in c.forms:
                    text = texts[form]
                    if text is not None and c.regex.search(text) is not None:
                        found.append(c.rule_id)
                        break
        hits.extend((rule_id, location) for rule_id in found)

    # -- many values ---------------------------------------------------------------------

    def candidates(
        self,
        joined: str,
        group: str,
        *,
        path_first: bool = False,
        spans: dict[int, tuple[int, int]] | None = None,
    ) -> dict[int, set[int]] | None:
        """For values joined by SEP (none holding SEP itself), `group` 'head' or 'body'
        (`path_first`: the first value is the request path): segment index -> rule ids
        that may match there ({}: none anywhere). None when the joined text cannot stand
        for its values: scan them one by one. `spans`: filled, where the scan can say,
        with each flagged segment's (start, end) in `joined` (Prefilter.segments)."""
        if not self.prefilter:
            return None
        raw = group == "head"
        if not raw and (latin1 := latin1_bytes(joined)) is not None:
            with contextlib.suppress(Undecoded):  # (an HTML entity: decoded below)
                return self.buffer_candidates(latin1.translate(LATIN1_BUFFER_TABLE), spans)
        decoded, anomalies, unescaped = decode_joined(joined, raw=raw)
        checks = self._group_checks[group]
        if anomalies and any(a in checks for a in anomalies):
            return None  # which value raised it: only a per-value scan can say
        if path_first and 920271 in checks and has_control(decoded.partition(SEP)[0]):
            return None  # the path check (SEP itself is a control character)
        if unescaped and decoded.count(SEP) != joined.count(SEP):
            return None  # decoding made a SEP (%02, &#2;, \x02): segments would shift
        return self._prefilters[group].segments(decoded, with_decoded=raw)

    def buffer_candidates(
        self, buf: bytes, spans: dict[int, tuple[int, int]] | None = None
    ) -> dict[int, set[int]] | None:
        """`candidates(joined, 'body', spans=spans)` where the caller made the buffer:
        `buf` is the joined text's Latin-1 bytes (no '%', '\\' or NUL, every character
        folding one to one: normalise.latin1_bytes) translated by LATIN1_BUFFER_TABLE
        (a JSON body's own bytes, see body.py). Raises Undecoded when the text holds an
        HTML entity after all (the scan says): the caller takes `candidates`."""
        if not self.prefilter:
            raise Undecoded
        return self._prefilters["body"].segments(
            buf, with_decoded=False, spans=spans, entities=True
        )

    def scan_items(self, items: Sequence[Item], hits: list[Hit]) -> None:
        """`scan` for each item (all of the head's kinds, or all 'body'), in one pass."""
        live = items  # (trivial values cost the joined scan nothing; `scan` skips them)
        if len(live) <= 1 or not self.prefilter:
            for value, kind, location in live:
                self.scan(value, kind, location, hits)
            return
        group = _group(live[0][1])  # (callers pass one group: the head's kinds, or body)
        joined = SEP.join([v for v, _, _ in live])
        segments = None
        if joined.count(SEP) == len(live) - 1:  # no value holds SEP
            segments = self.candidates(joined, group, path_first=live[0][1] == "path")
        if segments is None:
            for value, kind, location in live:
                self.scan(value, kind, location, hits)
            return
        for index in sorted(segments):
            value, kind, location = live[index]
            self.scan(value, kind, location, hits, only=segments[index])

    def scan_head(
        self, key: Hashable, items: Callable[[], Sequence[Item]], hits: list[Hit]
    ) -> None:
        """`scan_items(items(), ...)` for a request head, remembered by `key`: the raw
        values the items are made of and how they are made (the same key always makes
        the same items, hence the same hits), so that a head seen before costs one
        lookup, not even the making of its items."""
        cache = self._head_cache
        found = cache.get(key)
        if found is None:
            made = items()
            new: list[Hit] = []
            self.scan_items(made, new)
            found = tuple(new)
            if sum([len(value) for value, _, _ in made]) <= _HEAD_CACHE_CHARS:
                if len(cache) >= _HEAD_CACHE_MAX:
                    cache.clear()
                cache[key] = found
        hits.extend(found)

    def flag(self, rule_id: int, kind: str, location: str, hits: list[Hit]) -> None:
        """Record a code check found outside `scan` (an unparseable body)."""
        if rule_id in self._checks[kind]:
            hits.append((rule_id, location))

    def __repr__(self) -> str:
        rules = {c.rule_id for cs in self._by_kind.values() for c in cs}
        return (
            f"<Matcher categories={list(self.categories)} rules={len(rules)} "
            f"prefilter={self.prefilter} heads_cached={len(self._head_cache)} "
            f"head={self._prefilters['head']!r} body={self._prefilters['body']!r}>"
        )


def _group(kind: str) -> str:
    return "body" if kind == "body" else "head"


@functools.cache
def _compiled(categories: tuple[str, ...]) -> Matcher:
    return Matcher(categories)


def compile_rules(categories: Iterable[str]) -> Matcher:
    """The shared Matcher for these categories (compiled on first use, at config load)."""
    return _compiled(tuple(sorted(set(categories))))
