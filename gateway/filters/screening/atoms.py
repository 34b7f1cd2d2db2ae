"""Prefilter atoms: literal strings at least one of which a rule's match must contain.

Why. CPython's `re` skips ahead quickly only when a pattern starts with a literal or a
character set; rules that start with a word alternation, a look-behind or `\\b` are
tried at every position, and a value cost ~50 us against every rule. Most values
(prose, URLs, names) cannot match most rules, and a cheap literal test says so.

How (the atom analysis of RE2's prefilter and Hyperscan's literal decomposition, kept
small). `atoms(pattern)` parses the pattern with the stdlib's own parser and returns a
set of strings such that every match of the pattern contains at least one of them, or
None when no such set is found (the rule is then always run):

- a node that matches exactly one of a finite set of strings (a literal, a small
  character class, an alternation or group of such) is *exact*; adjacent exact nodes of
  a sequence concatenate (the product of their sets, bounded by _MAX_SET);
- a sequence needs one of its elements' sets: the one whose shortest atom is longest
  (then the smallest set) is kept, since longer atoms occur less often in benign text;
- an alternation needs one atom of each branch (the union; None when a branch has none);
- a repeat with min >= 1 needs its item's atoms; zero-width nodes and optional parts
  need nothing.

Soundness rests only on that reasoning (no IGNORECASE rules; patterns see lower-cased
text), and tests/screening check that every rule matches its own attack cases with the
prefilter on. `AtomIndex` finds every atom of a text in one regex pass: a trie-ordered
alternation inside a look-ahead, so overlapping occurrences are all seen; an atom that
is a substring of a found atom counts as found too (the alternation reports the
longest at a position).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from re import _constants as C  # type: ignore[attr-defined]
from re import _parser as P  # type: ignore[attr-defined]
from typing import Any

__all__ = ["AtomIndex", "atoms"]

_MAX_SET = 64  # at most this many strings in an exact set or an atom set
_MAX_CLASS = 6  # a character class of at most this many characters is exact

Atoms = frozenset[str]


def _class_chars(items: list[tuple[Any, Any]]) -> Atoms | None:
    chars: set[str] = set()
    for op, av in items:
        if op is C.LITERAL:
            chars.add(chr(av))
        elif op is C.RANGE and av[1] - av[0] < _MAX_CLASS:
            chars.update(chr(c) for c in range(av[0], av[1] + 1))
        else:  # NEGATE, CATEGORY, wide ranges
            return None
        if len(chars) > _MAX_CLASS:
            return None
    return frozenset(chars)


def _exact(node: tuple[Any, Any]) -> Atoms | None:
    """The finite set of strings `node` matches exactly, or None."""
    op, av = node
    if op is C.LITERAL:
        return frozenset({chr(av)})
    if op is C.IN:
        return _class_chars(av)
    if op is C.SUBPATTERN:
        return _exact_seq(av[3])
    if op is C.BRANCH:
        out: set[str] = set()
        for alt in av[1]:
            e = _exact_seq(alt)
            if e is None:
                return None
            out |= e
        return frozenset(out) if len(out) <= _MAX_SET else None
    return None


def _exact_seq(seq: Iterable[tuple[Any, Any]]) -> Atoms | None:
    out: Atoms = frozenset({""})
    for node in seq:
        e = _exact(node)
        if e is None:
            return None
        out = frozenset(a + b for a in out for b in e)
        if len(out) > _MAX_SET:
            return None
    return out


def _better(a: Atoms | None, b: Atoms | None) -> Atoms | None:
    if a is None or not a or "" in a:
        return b
    if b is None or not b or "" in b:
        return a
    ka = (min(map(len, a)), -len(a))
    kb = (min(map(len, b)), -len(b))
    return a if ka >= kb else b


def _needed(node: tuple[Any, Any]) -> Atoms | None:
    """Atoms one of which any match of `node` contains, or None."""
    op, av = node
    e = _exact(node)
    if e is not None:
        return e if "" not in e else None
    if op is C.SUBPATTERN:
        return _needed_seq(av[3])
    if op is C.BRANCH:
        out: set[str] = set()
        for alt in av[1]:
            a = _needed_seq(alt)
            if a is None:
                return None
            out |= a
        return frozenset(out) if len(out) <= _MAX_SET else None
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT) and av[0] >= 1:
        return _needed_seq(av[2])
    if op is C.ATOMIC_GROUP:
        return _needed_seq(av)
    return None  # AT, ASSERT, ASSERT_NOT, ANY, NOT_LITERAL, optional repeats, ...


def _exact_run(nodes: list[Any], i: int) -> tuple[Atoms | None, int]:
    """The longest run of exact nodes from `i`, concatenated (None if none), and where
    it ends."""
    run: Atoms | None = None
    j = i
    while j < len(nodes):
        e = _exact(nodes[j])
        if e is None:
            break
        nxt = frozenset(a + b for a in (run or {""}) for b in e)
        if len(nxt) > _MAX_SET:
            break
        run = nxt
        j += 1
    return run, j


def _needed_seq(seq: Any) -> Atoms | None:
    nodes = list(seq)
    best: Atoms | None = None
    i = 0
    while i < len(nodes):
        run, j = _exact_run(nodes, i)
        if run is not None:
            best = _better(best, run)
            i = j
            continue
        best = _better(best, _needed(nodes[i]))
        i += 1
    return best


def atoms(pattern: str) -> Atoms | None:
    """Strings one of which every match of `pattern` contains; None if unknown."""
    return _needed_seq(P.parse(pattern))


def clauses(pattern: str) -> list[Atoms]:
    """Atom sets *each* of which every match of `pattern` meets (one per element of
    its top-level sequence that has one); [] when nothing is known."""
    nodes = list(P.parse(pattern))
    if len(nodes) == 1 and nodes[0][0] is C.BRANCH:
        a = _needed(nodes[0])
        return [a] if a else []
    out: list[Atoms] = []
    i = 0
    while i < len(nodes):
        run, j = _exact_run(nodes, i)
        if run is not None:
            if "" not in run:
                out.append(run)
            i = j
            continue
        a = _needed(nodes[i])
        if a and "" not in a:
            out.append(a)
        i += 1
    return out


def _trie_regex(words: Iterable[str]) -> str:
    """An alternation of `words` factored by common prefixes, longest alternative first."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: Mapping[str, Any]) -> str:
        alts = []
        end = False
        for ch in sorted(node):
            if ch == "":
                end = True
                continue
            alts.append(re.escape(ch) + build(node[ch]))
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if end else body

    return build(trie)


class AtomIndex:
    """Which of a fixed set of atoms occur in a text, in one regex pass."""

    __slots__ = ("_closure", "_regex", "atoms")

    def __init__(self, all_atoms: Iterable[str]) -> None:
        self.atoms = frozenset(all_atoms)
        self._regex = re.compile(f"(?=({_trie_regex(self.atoms)}))") if self.atoms else None
        # A found atom implies every atom that is a substring of it.
        self._closure = {a: frozenset(b for b in self.atoms if b in a) for a in self.atoms}

    def found(self, text: str) -> set[str]:
        if self._regex is None:
            return set()
        out: set[str] = set()
        closure = self._closure
        for a in set(self._regex.findall(text)):
            out |= closure[a]
        return out

    def __repr__(self) -> str:
        return f"<AtomIndex {len(self.atoms)} atoms>"
