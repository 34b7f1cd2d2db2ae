"""Anomaly scoring and exclusions: from rule hits to a verdict.

Scoring (the OWASP Core Rule Set's model, one deliberate change). Each rule that
matches adds its severity score (critical 5, error 4, warning 3, notice 2) and the
request is blocked when the score reaches the route's threshold (default 5: one
critical rule, or two warnings). CRS adds across the whole request; here scores are
added *per location* (one query parameter, header, cookie, JSON value) and the
request's score is the highest location's. An API body carries many independent
free-text fields, and an apostrophe before "or" in a review plus `count(` in a code
snippet three fields away is not an attack; a warning and a notice in the *same*
value still add up. A rule counts once per location however often it matches.

Exclusions (compiled at load): `Exclusions.allows(rule, location, path)` is True when
some exclusion names that rule or its category and all of its conditions hold. Hits
are rare, so this runs only for the few that occur.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from gateway.config.screening_model import Exclusion
from gateway.filters.screening.matcher import Hit
from gateway.filters.screening.rules import RULES_BY_ID

__all__ = ["Exclusions", "Verdict", "score"]


class _Compiled(NamedTuple):
    path_prefix: str | None
    locations: frozenset[str] | None  # exact location names; None: any location
    json_key: str | None  # a JSON path ending in this key also matches


class Exclusions:
    """A route's exclusions, keyed by rule id or category."""

    __slots__ = ("_by_rule", "source")

    def __init__(self, exclusions: Sequence[Exclusion]) -> None:
        self.source = tuple(exclusions)
        by_rule: dict[int | str, list[_Compiled]] = {}
        for e in exclusions:
            locations: frozenset[str] | None = None
            json_key = None
            if e.parameter is not None:
                p = e.parameter
                locations = frozenset(
                    {f"query:{p}", f"body:{p}", f"body:{p if p.startswith('$') else '$.' + p}"}
                )
                json_key = None if p.startswith("$") else p
            elif e.header is not None:
                locations = frozenset({f"header:{e.header.lower()}"})
            elif e.cookie is not None:
                locations = frozenset({f"cookie:{e.cookie}"})
            by_rule.setdefault(e.rule, []).append(_Compiled(e.path_prefix, locations, json_key))
        self._by_rule = by_rule

    def allows(self, rule_id: int, location: str, path: str) -> bool:
        """True when an exclusion turns `rule_id` off at `location` for this path."""
        if not self._by_rule:
            return False
        rule = RULES_BY_ID[rule_id]
        for key in (rule_id, rule.category):
            for c in self._by_rule.get(key, ()):
                if c.path_prefix is not None and not path.startswith(c.path_prefix):
                    continue
                if c.locations is None or _located(c, location):
                    return True
        return False

    def __bool__(self) -> bool:
        return bool(self._by_rule)

    def __repr__(self) -> str:
        return f"<Exclusions {len(self.source)}>"


def _located(c: _Compiled, location: str) -> bool:
    assert c.locations is not None
    if location.startswith("header:"):
        location = location.lower()
    if location in c.locations:
        return True
    if c.json_key is not None and location.startswith("body:$"):
        tail = location.rpartition(".")[2]
        return tail == c.json_key or tail.startswith(c.json_key + "[")
    return False


class Verdict(NamedTuple):
    score: int  # the highest location's score
    hits: tuple[Hit, ...]  # what counted, exclusions removed
    excluded: tuple[Hit, ...]  # what matched but an exclusion turned off

    def describe(self) -> str:
        """'942100@query:q, 941110@body:$.comment' for the log line."""
        return ", ".join(f"{rule}@{where}" for rule, where in self.hits)


def score(hits: Iterable[Hit], exclusions: Exclusions, path: str) -> Verdict:
    counted: list[Hit] = []
    excluded: list[Hit] = []
    per_location: dict[str, int] = {}
    for rule_id, location in dict.fromkeys(hits):
        if exclusions and exclusions.allows(rule_id, location, path):
            excluded.append((rule_id, location))
            continue
        counted.append((rule_id, location))
        per_location[location] = per_location.get(location, 0) + RULES_BY_ID[rule_id].score
    top = max(per_location.values(), default=0)
    return Verdict(top, tuple(counted), tuple(excluded))
