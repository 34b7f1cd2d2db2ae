"""Token-bucket arithmetic on a fake clock: refill, cap, costs, retry-after, reset."""

from __future__ import annotations

import math

import pytest

from gateway.store.bucket import Decision, Limit, take

TEN_PER_S = Limit(rate=10.0, burst=5)


def run(times: list[float], limit: Limit, cost: int = 1) -> list[Decision]:
    """Requests at `times` against one bucket; returns the decisions."""
    tokens: float | None = None
    last = 0.0
    out = []
    for now in times:
        d, tokens = take(tokens, last, now, limit, cost)
        last = max(last, now)
        out.append(d)
    return out


def test_new_bucket_is_full_and_burst_then_limited() -> None:
    ds = run([0.0] * 6, TEN_PER_S)
    assert [d.allowed for d in ds] == [True] * 5 + [False]
    assert [d.remaining for d in ds] == [4, 3, 2, 1, 0, 0]


def test_refill_is_continuous_at_rate() -> None:
    ds = run([0.0] * 5 + [0.05, 0.1, 0.1], TEN_PER_S)
    assert [d.allowed for d in ds[5:]] == [False, True, False]


def test_refill_caps_at_burst() -> None:
    ds = run([0.0, 100.0, *[100.0] * 5], TEN_PER_S)
    assert [d.allowed for d in ds] == [True] * 6 + [False]


@pytest.mark.parametrize(
    ("rate", "burst", "seconds"),
    [(10.0, 5, 3.0), (20.0, 40, 10.0), (1000 / 60, 1000, 60.0), (5 / 3600, 5, 7200.0)],
    ids=["10/s-b5", "20/s-b40", "1000/min", "5/h"],
)
def test_admitted_over_a_window_is_rate_times_time_plus_burst(
    rate: float, burst: int, seconds: float
) -> None:
    # A client asking 3x the rate: admitted exactly burst + rate * T (+1 for the edge).
    step = 1 / (3 * rate)
    times = [i * step for i in range(int(seconds / step) + 1)]
    admitted = sum(d.allowed for d in run(times, Limit(rate, burst)))
    assert admitted == burst + math.floor(rate * times[-1] + 1e-9)


def test_cost_above_one_takes_that_many() -> None:
    ds = run([0.0, 0.0, 0.0], Limit(10.0, 10), cost=4)
    assert [(d.allowed, d.remaining) for d in ds] == [(True, 6), (True, 2), (False, 2)]
    assert ds[2].retry_after_s == pytest.approx(0.2)  # 2 tokens short at 10/s


def test_cost_above_burst_is_never_admitted() -> None:
    d, level = take(None, 0.0, 0.0, Limit(10.0, 5), cost=6)
    assert (d.allowed, d.retry_after_s, level) == (False, math.inf, 5.0)
    d, _ = take(5.0, 0.0, 1e9, Limit(10.0, 5), cost=6)
    assert not d.allowed  # however long it waited


def test_zero_cost_is_always_admitted_and_free() -> None:
    d, level = take(0.0, 0.0, 0.0, TEN_PER_S, cost=0)
    assert (d.allowed, d.remaining, level) == (True, 0, 0.0)


def test_refused_request_spends_nothing() -> None:
    d, level = take(0.5, 0.0, 0.0, TEN_PER_S, cost=1)
    assert (d.allowed, level) == (False, 0.5)
    assert d.retry_after_s == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("tokens", "cost", "allowed", "remaining", "retry_s", "reset_s"),
    [
        (5.0, 1, True, 4, 0.0, 0.1),
        (1.0, 1, True, 0, 0.0, 0.5),
        (0.0, 1, False, 0, 0.1, 0.5),
        (0.0, 3, False, 0, 0.3, 0.5),
        (2.5, 3, False, 2, 0.05, 0.25),
    ],
    ids=["full", "last-token", "empty", "empty-cost-3", "fractional"],
)
def test_remaining_retry_after_and_reset(
    tokens: float, cost: int, allowed: bool, remaining: int, retry_s: float, reset_s: float
) -> None:
    d, _ = take(tokens, 0.0, 0.0, TEN_PER_S, cost)
    assert (d.allowed, d.remaining) == (allowed, remaining)
    assert d.retry_after_s == pytest.approx(retry_s)
    assert d.reset_s == pytest.approx(reset_s)


def test_clock_going_backwards_refills_nothing() -> None:
    d, level = take(1.0, 10.0, 5.0, TEN_PER_S, cost=1)
    assert (d.allowed, level) == (True, 0.0)


def test_float_drift_does_not_refuse_an_earned_token() -> None:
    tokens: float | None = 0.0
    last = 0.0
    for now in (0.1, 0.2, 0.3):  # 0.1 + 0.1 + 0.1 != 0.3 in floats
        _, tokens = take(tokens, last, now, Limit(1.0, 5), cost=0)
        last = now
    d, _ = take(tokens, last, last, Limit(1.0, 5), cost=0)
    d, _ = take(tokens, last, last + 0.7, Limit(1.0, 5), cost=1)
    assert d.allowed


def test_fill_time() -> None:
    assert Limit(20.0, 40).fill_s == 2.0
