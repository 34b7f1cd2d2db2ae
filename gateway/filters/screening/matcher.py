"""The matcher: every rule compiled, once, into a few combined regexes.

How it works. The pattern rules of one category that apply to the same kinds of
location and see the same form are a group. Each group is compiled twice: a
*detector*, one alternation of all its rules with their leading zero-width guards
(`\b`, look-behinds, `(?:^|[...])`) dropped, without capture groups; and the rules
one by one. A scan runs the detector; only when it matches somewhere (rare for
benign values) are the group's rules searched one by one to learn which matched. The
detector can only over-approximate (dropping a guard widens a pattern), so nothing is
missed. Why not one alternation of named groups with `m.lastgroup`: CPython's `re`
rejects an alternative cheaply only when it starts with a literal or a character set;
a named group or a look-behind in front defeats that and made the combined regex
three to four times slower, and one alternation also reports only the first rule that
matches at a position, hiding "... from information_schema" inside "select ... from".

`compile_rules(categories)` is cached: every route with the same categories shares
one `Matcher`, built when the first config using it loads, never per request.

`Matcher.scan(value, kind, location, hits)` normalises the value (normalise.py), runs
the code checks and the regexes that apply to that kind of location, and appends
`(rule_id, location)` for each rule that matched. Which form each category sees:
each rule's `form`: the decoded text with its line breaks (CR/LF rules), the
collapsed text and the command-line form (shell rules), or the collapsed text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from gateway.filters.screening.normalise import is_trivial, normalise
from gateway.filters.screening.rules import KINDS, RULES, Rule

__all__ = ["Hit", "Matcher", "compile_rules"]

Hit = tuple[int, str]
"""(rule id, location), location like 'query:q', 'body:$.comment', 'header:User-Agent'."""

_DECODED, _TEXT, _CMD = 0, 1, 2


# A leading `\b`, look-around or `(?:^|[...])` guard, as written in rules.py.
_CLASS = r"\[(?:[^\]\\]|\\.)*\]"  # a character class, escapes included
_GUARD = re.compile(
    rf"\\b|\(\?<?[!=](?:[^()\\\[]|\\.|{_CLASS})*\)|\(\?:\^\|(?:[^()\\\[]|\\.|{_CLASS})*\)"
)


def _unguarded(pattern: str) -> str:
    """`pattern` without its leading guards: matches wherever `pattern` does, and more."""
    while m := _GUARD.match(pattern):
        pattern = pattern[m.end() :]
    return pattern


class _Group:
    __slots__ = ("detector", "rules")

    def __init__(self, rules: Iterable[Rule]) -> None:
        ordered = sorted(rules, key=lambda r: (-r.score, r.id))
        self.detector = re.compile("|".join(f"(?:{_unguarded(r.pattern or '')})" for r in ordered))
        self.rules = tuple((r.id, re.compile(r.pattern or "")) for r in ordered)


class Matcher:
    """Compiled rules for a set of categories; immutable, shared between routes."""

    __slots__ = ("_checks", "_plan", "categories")

    def __init__(self, categories: Iterable[str]) -> None:
        self.categories = tuple(sorted(set(categories)))
        wanted = [r for r in RULES if r.category in self.categories]
        # kind -> ((form, combined regex), ...) and kind -> code-check rule ids.
        plan: dict[str, list[tuple[int, _Group]]] = {k: [] for k in KINDS}
        groups: dict[tuple[str, frozenset[str], str], list[Rule]] = {}
        for r in wanted:
            if r.pattern is not None:
                form = "cmd" if r.category == "rce" and r.form == "text" else r.form
                groups.setdefault((r.category, r.kinds, form), []).append(r)
        for (_, kinds, form), rules in groups.items():
            group = _Group(rules)
            forms = {"decoded": (_DECODED,), "cmd": (_TEXT, _CMD)}.get(form, (_TEXT,))
            for kind in kinds:
                plan[kind].extend((f, group) for f in forms)
        self._plan = {k: tuple(v) for k, v in plan.items()}
        self._checks = {
            k: frozenset(r.id for r in wanted if r.pattern is None and k in r.kinds) for k in KINDS
        }

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
        for form, group in self._plan[kind]:
            text = forms.decoded if form == _DECODED else forms.text
            if form == _CMD:
                if forms.cmd is None:
                    continue
                text = forms.cmd
            if group.detector.search(text) is None:
                continue
            for rule_id, regex in group.rules:
                if rule_id not in seen and regex.search(text) is not None:
                    seen.add(rule_id)
        hits.extend((rule_id, location) for rule_id in seen)

    def flag(self, rule_id: int, kind: str, location: str, hits: list[Hit]) -> None:
        """Record a code check found outside `scan` (an unparseable body)."""
        if rule_id in self._checks[kind]:
            hits.append((rule_id, location))

    def __repr__(self) -> str:
        groups = {id(g) for plan in self._plan.values() for _, g in plan}
        return f"<Matcher categories={list(self.categories)} groups={len(groups)}>"


@functools.cache
def _compiled(categories: tuple[str, ...]) -> Matcher:
    return Matcher(categories)


def compile_rules(categories: Iterable[str]) -> Matcher:
    """The shared Matcher for these categories (compiled on first use, at config load)."""
    return _compiled(tuple(sorted(set(categories))))
