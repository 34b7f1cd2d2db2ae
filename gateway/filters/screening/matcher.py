"""The matcher: every rule compiled once, behind a literal prefilter.

How it works. CPython's `re` is fast only when a pattern starts with a literal or a
character set (it then skips to candidate positions in C); an alternation of rules
that start with words, look-behinds or `\\b` is tried at every position, and ran at
~15 us per 70-character value per category. So a rule's regex runs only when the
value holds what any match of it must hold:

- at load, `atoms.clauses(rule.pattern)` derives from the parsed pattern a few sets of
  literal atoms, each of which a match must meet (`union` and `select` for 942190);
  every atom becomes a *feature*: its longest run of word characters when that has
  three or more (a substring of some word token of the value), else its rarest
  symbol character (`|`, `<`, `'`, ...);
- per value (per form), its features are computed with C-speed str/bytes operations:
  the symbol bytes left after deleting word characters, and for each distinct word
  token the word atoms it contains (a bounded memo: tokens repeat across requests);
- an index from feature to rules gives the candidates; a candidate whose every clause
  has a present feature runs its own regex, unchanged, as the final word.

Features are necessary conditions only, so nothing is missed that the rule regex
would match: the prefilter changes cost, never verdicts (tests/screening checks rule
by rule that the gated and ungated scans agree on both corpora). Rules whose pattern
yields no clause always run.

`compile_rules(categories)` is cached: every route with the same categories shares
one `Matcher`, built when the first config using it loads, never per request.

`Matcher.scan(value, kind, location, hits)` normalises the value (normalise.py), runs
the code checks and the rules that apply to that kind of location, and appends
`(rule_id, location)` for each rule that matched. Which form each rule sees: its
`form`: the decoded text with its line breaks (CR/LF rules), the collapsed text and
the command-line form (shell rules), or the collapsed text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from gateway.filters.screening.atoms import clauses
from gateway.filters.screening.normalise import is_trivial, normalise
from gateway.filters.screening.rules import KINDS, RULES, Rule

__all__ = ["Hit", "Matcher", "compile_rules"]

Hit = tuple[int, str]
"""(rule id, location), location like 'query:q', 'body:$.comment', 'header:User-Agent'."""

_DECODED, _TEXT, _CMD = 0, 1, 2

# A leading `\\b`, look-around or `(?:^|[...])` guard, as written in rules.py.
_CLASS = r"\[(?:[^\]\\]|\\.)*\]"  # a character class, escapes included
_GUARD = re.compile(
    rf"\\b|\(\?<?[!=](?:[^()\\\[]|\\.|{_CLASS})*\)|\(\?:\^\|(?:[^()\\\[]|\\.|{_CLASS})*\)"
)


def _unguarded(pattern: str) -> str:
    """`pattern` without its leading guards: matches wherever `pattern` does, and more."""
    while m := _GUARD.match(pattern):
        pattern = pattern[m.end() :]
    return pattern


Feature = int | bytes  # a symbol byte, or a word atom
_WORD = re.compile(r"[a-z0-9_]+")
_WORD_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789_"
_TO_SPACE = bytes(c if c in _WORD_BYTES else 32 for c in range(256))
_DELETE = _WORD_BYTES + b" "
# Symbols from rarest to commonest in benign text; a rarer one makes a better feature.
_RANK = b"\x00\r\n`$|{}<>;\\^~@#*![]\"'()=%&?+:-,/. \t"
_MEMO_MAX = 16_384  # distinct word tokens remembered per Matcher
_MEMO_TOKEN_MAX = 48  # longer tokens (blobs) are not remembered


def _feature(atom: str) -> Feature:
    words = _WORD.findall(atom)
    longest = max(words, key=len, default="")
    if len(longest) >= 3 or longest == atom:
        return longest.encode()
    data = atom.encode("ascii", "replace")
    return min((b for b in data if b not in _WORD_BYTES), key=_rank)


def _rank(b: int) -> int:
    i = _RANK.find(bytes((b,)))
    return i if i >= 0 else len(_RANK)


def _weight(f: Feature) -> int:
    return len(f) if isinstance(f, bytes) else (3 if _rank(f) < 12 else 1)


class _Gate:
    """One rule: its regex, and the feature sets each of which a match meets."""

    __slots__ = ("clauses", "detector", "order", "regex", "rule_id")

    def __init__(self, order: int, rule: Rule) -> None:
        self.order = order
        self.rule_id = rule.id
        self.regex = re.compile(rule.pattern or "")
        # Without its leading guard a pattern often starts with a literal, which `re`
        # skips to in C; it matches wherever the rule does (and more), so it runs first.
        unguarded = _unguarded(rule.pattern or "")
        self.detector = re.compile(unguarded) if unguarded != rule.pattern else None
        self.clauses = tuple(frozenset(_feature(a) for a in c) for c in clauses(rule.pattern or ""))

    def index_clause(self) -> frozenset[Feature]:
        """The clause to index the rule under: the one least often met by chance."""
        return max(self.clauses, key=lambda c: min(map(_weight, c)))


class _Plan:
    """The rules one kind of location runs on one form, indexed by feature."""

    __slots__ = ("always", "form", "index")

    def __init__(self, form: int, gates: list[_Gate]) -> None:
        self.form = form
        self.always = tuple(g for g in gates if not g.clauses)
        index: dict[Feature, list[_Gate]] = {}
        for g in gates:
            if g.clauses:
                for f in g.index_clause():
                    index.setdefault(f, []).append(g)
        self.index = {f: tuple(v) for f, v in index.items()}


class Matcher:
    """Compiled rules for a set of categories; immutable, shared between routes
    (its token memo is a cache of a pure function)."""

    __slots__ = ("_checks", "_memo", "_plan", "_word_atoms", "categories")

    def __init__(self, categories: Iterable[str]) -> None:
        self.categories = tuple(sorted(set(categories)))
        wanted = [r for r in RULES if r.category in self.categories]
        ordered = sorted(
            (r for r in wanted if r.pattern is not None), key=lambda r: (-r.score, r.id)
        )
        gates = {r.id: _Gate(i, r) for i, r in enumerate(ordered)}
        by_kind_form: dict[tuple[str, int], list[_Gate]] = {}
        for r in ordered:
            form = "cmd" if r.category == "rce" and r.form == "text" else r.form
            forms = {"decoded": (_DECODED,), "cmd": (_TEXT, _CMD)}.get(form, (_TEXT,))
            for kind in r.kinds:
                for f in forms:
                    by_kind_form.setdefault((kind, f), []).append(gates[r.id])
        self._plan = {
            k: tuple(_Plan(f, by_kind_form[(k, f)]) for f in (0, 1, 2) if (k, f) in by_kind_form)
            for k in KINDS
        }
        self._word_atoms = tuple(
            sorted(
                {f for g in gates.values() for c in g.clauses for f in c if isinstance(f, bytes)}
            )
        )
        self._memo: dict[bytes, frozenset[Feature]] = {}
        self._checks = {
            k: frozenset(r.id for r in wanted if r.pattern is None and k in r.kinds) for k in KINDS
        }

    def features(self, text: str) -> set[Feature]:
        """The symbol bytes of `text` and the word atoms its tokens contain."""
        data = text.encode("ascii", "replace")
        present: set[Feature] = set(data.translate(None, _DELETE))
        memo = self._memo
        for token in set(data.translate(_TO_SPACE).split()):
            found = memo.get(token)
            if found is None:
                found = frozenset(a for a in self._word_atoms if a in token)
                if len(token) <= _MEMO_TOKEN_MAX:
                    if len(memo) >= _MEMO_MAX:
                        memo.clear()
                    memo[token] = found
            if found:
                present |= found
        return present

    def scan(self, value: str, kind: str, location: str, hits: list[Hit]) -> None:
        """Append a (rule id, location) for every rule `value` matches (once per rule)."""
        if is_trivial(value):
            return
        forms = normalise(value, raw=kind in ("path", "query"), path=kind == "path")
        seen: set[int] = set()
        checks = self._checks[kind]
        for rule_id in forms.anomalies:
            if rule_id in checks:
                seen.add(rule_id)
        last_text: str | None = None
        present: set[Feature] = set()
        for plan in self._plan[kind]:
            form = plan.form
            text = forms.decoded if form == _DECODED else forms.text
            if form == _CMD:
                if forms.cmd is None:
                    continue
                text = forms.cmd
            if text != last_text:
                present = self.features(text)
                last_text = text
            index = plan.index
            candidates: set[_Gate] = set(plan.always)
            for f in present:
                gates = index.get(f)
                if gates is not None:
                    candidates.update(gates)
            for g in sorted(candidates, key=_order):
                if g.rule_id in seen:
                    continue
                if not all(not c.isdisjoint(present) for c in g.clauses):
                    continue
                if g.detector is not None and g.detector.search(text) is None:
                    continue
                if g.regex.search(text) is not None:
                    seen.add(g.rule_id)
        hits.extend((rule_id, location) for rule_id in seen)

    def flag(self, rule_id: int, kind: str, location: str, hits: list[Hit]) -> None:
        """Record a code check found outside `scan` (an unparseable body)."""
        if rule_id in self._checks[kind]:
            hits.append((rule_id, location))

    def __repr__(self) -> str:
        rules = {g.rule_id for plans in self._plan.values() for p in plans for g in p.always}
        rules |= {
            g.rule_id
            for plans in self._plan.values()
            for p in plans
            for v in p.index.values()
            for g in v
        }
        return (
            f"<Matcher categories={list(self.categories)} rules={len(rules)} "
            f"word_atoms={len(self._word_atoms)} memo={len(self._memo)}>"
        )


def _order(g: _Gate) -> int:
    return g.order


@functools.cache
def _compiled(categories: tuple[str, ...]) -> Matcher:
    return Matcher(categories)


def compile_rules(categories: Iterable[str]) -> Matcher:
    """The shared Matcher for these categories (compiled on first use, at config load)."""
    return _compiled(tuple(sorted(set(categories))))
