"""Stats windows, the histogram's p99, and every gate's verdict."""

from __future__ import annotations

import math

import pytest

from gateway.rollout.gates import judge
from gateway.rollout.plan import Gates
from gateway.rollout.stats import VersionStats, Window


def window(n: int, errors: int = 0, latency_s: float = 0.02, slow: int = 0) -> Window:
    s = VersionStats("v")
    for i in range(n):
        s.record(503 if i < errors else 200, 2.5 if i < slow else latency_s)
    return s.snapshot()


def test_window_is_the_difference_of_snapshots() -> None:
    s = VersionStats("v")
    s.record(200, 0.01)
    start = s.snapshot()
    s.record(502, 0.2)
    s.record(404, 0.2)
    w = s.snapshot() - start
    assert (w.requests, w.errors) == (2, 1)
    assert w.error_ratio == 0.5 and w.p99 == 0.2


@pytest.mark.parametrize(
    ("latencies", "p99"),
    [([0.001] * 100, 0.005), ([0.04] * 99 + [3.0], 0.05), ([0.04] * 98 + [3.0] * 2, 3.0),
     ([20.0], math.inf), ([], 0.0)],
    ids=["fast", "one-slow-in-100", "two-slow-in-100", "beyond-10s", "empty"],
)  # fmt: skip
def test_p99_is_the_upper_bound_of_its_bucket(latencies: list[float], p99: float) -> None:
    s = VersionStats("v")
    for x in latencies:
        s.record(200, x)
    assert s.snapshot().p99 == p99


GATES = Gates(
    max_5xx_ratio=0.05, max_p99_s=0.5, max_5xx_ratio_delta=0.02, max_p99_ratio=1.5, min_requests=100
)


@pytest.mark.parametrize(
    ("canary", "baseline", "judged", "reasons"),
    [
        (window(99, errors=50), window(1000), False, []),
        (window(100), window(1000), True, []),
        (window(100, errors=20), window(1000), True,
         ["5xx ratio 0.200 > max_5xx_ratio 0.05",
          "5xx ratio 0.200 exceeds the baseline's 0.000 by more than 0.02"]),
        (window(100, errors=4), window(1000, errors=30), True, []),
        (window(100, errors=4), window(1000), True,
         ["5xx ratio 0.040 exceeds the baseline's 0.000 by more than 0.02"]),
        (window(100, slow=5), window(1000), True,
         ["p99 3s > max_p99 0.5s", "p99 3s is 120.00x the baseline's 0.025s (max_p99_ratio 1.5)"]),
        (window(100, latency_s=0.2), window(1000, latency_s=0.1), True,
         ["p99 0.2s is 2.00x the baseline's 0.1s (max_p99_ratio 1.5)"]),
        (window(100, errors=4), window(10), True, []),  # baseline too small: compare skipped
    ],
    ids=["too-few", "healthy", "errors", "errors-like-baseline", "errors-vs-baseline",
         "slow", "slower-than-baseline", "baseline-too-small"],
)  # fmt: skip
def test_judge(canary: Window, baseline: Window, judged: bool, reasons: list[str]) -> None:
    v = judge(GATES, canary, baseline)
    assert (v.judged, list(v.reasons), v.ok) == (judged, reasons, not reasons)
    assert v.values["canary_requests"] == canary.requests
    if not judged:
        assert v.values["not_judged"] == "99 < min_requests 100"


def test_skipped_comparison_says_so() -> None:
    v = judge(GATES, window(100), window(10))
    assert v.values["vs_stable"] == "skipped: baseline 10 < 100"
