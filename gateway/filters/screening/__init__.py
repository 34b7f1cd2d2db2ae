"""Pattern screening: rules with anomaly scores, matched on normalised request values.

rules.py      the rule table: id, category, severity score, pattern, where it applies
normalise.py  the forms a value is matched in (URL/HTML/JS decoding, NFKC, case, SQL
              comments, whitespace, shell quoting) and the protocol checks done in code
prefilter.py  every rule's relaxed pattern in one Hyperscan scan over many values
matcher.py    Matcher: rules compiled at load; scan() one value, scan_items() many
body.py       which values of a body are scanned: JSON, form, multipart, text
scoring.py    Exclusions and the anomaly score per location -> Verdict
filter.py     ScreeningFilter: what is scanned (path, query, headers, cookies, body
              prefix), block or shadow, counters; ReplayBody
"""

from gateway.filters.screening.filter import ReplayBody, ScreeningCounters, ScreeningFilter
from gateway.filters.screening.matcher import Matcher, compile_rules
from gateway.filters.screening.rules import RULES, RULES_BY_ID, Rule

__all__ = [
    "RULES",
    "RULES_BY_ID",
    "Matcher",
    "ReplayBody",
    "Rule",
    "ScreeningCounters",
    "ScreeningFilter",
    "compile_rules",
]
