"""The literal prefilter (atoms.py, matcher.py) changes cost, never verdicts: for every
value of both corpora, every kind of location, the gated scan finds exactly the rules
that running every rule's regex on the normalised forms finds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.filters.screening import RULES, compile_rules
from gateway.filters.screening.atoms import atoms, clauses
from gateway.filters.screening.normalise import is_trivial, normalise
from gateway.filters.screening.rules import KINDS

CORPUS = Path(__file__).resolve().parents[2] / "bench" / "corpus"
MATCHER = compile_rules({r.category for r in RULES})


def _values() -> list[str]:
    out: list[str] = []
    for name in ("attacks.jsonl", "benign.jsonl"):
        for line in (CORPUS / name).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            out.append(row["path"])
            out.extend(p.partition("=")[2] for p in (row["query"] or "").split("&"))
            out.extend(v for _, v in row["headers"])
            if row["body"]:
                out.append(row["body"])
    return [v for v in dict.fromkeys(out) if v]


def _brute(value: str, kind: str) -> set[int]:
    if is_trivial(value):
        return set()
    forms = normalise(value, raw=kind in ("path", "query"), path=kind == "path")
    found = {r for r in forms.anomalies if kind in RULES_KINDS[r]}
    for r in RULES:
        if r.pattern is None or kind not in r.kinds:
            continue
        texts = {
            "decoded": [forms.decoded],
            "text": [forms.text] + ([forms.cmd] if r.category == "rce" and forms.cmd else []),
            "cmd": [forms.text] + ([forms.cmd] if forms.cmd else []),
        }[r.form]
        if any(re.search(r.pattern, t) for t in texts):
            found.add(r.id)
    return found


RULES_KINDS = {r.id: r.kinds for r in RULES}
VALUES = _values()


@pytest.mark.parametrize("kind", KINDS)
def test_gated_scan_agrees_with_every_rule(kind: str) -> None:
    assert len(VALUES) > 500
    for value in VALUES:
        hits: list[tuple[int, str]] = []
        MATCHER.scan(value, kind, "x", hits)
        assert {r for r, _ in hits} == _brute(value, kind), value


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param(r"\bunion\b\s+select", [{"union"}, {"select"}], id="sequence"),
        pytest.param(r"(?:php|zip)://", [{"php://", "zip://"}], id="exact-product"),
        pytest.param(r"ab\s*c|de+f", [{"ab", "d"}], id="branch-union"),
        pytest.param(r"x?\w+", [], id="nothing-known"),
    ],
)
def test_clauses(pattern: str, expected: list[set[str]]) -> None:
    assert [set(c) for c in clauses(pattern)] == expected
    if expected:
        assert atoms(pattern) is not None
