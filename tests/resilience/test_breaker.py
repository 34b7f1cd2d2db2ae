"""The breaker state machine, table-driven on a fake clock: every (state, event) pair,
the legal transitions and the illegal ones; then the trip rules, ejection times,
probes and the max-ejection cap."""

from __future__ import annotations

import math

import pytest

from gateway.upstream.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    TRANSITIONS,
    Breaker,
    BreakerPolicy,
    BreakerStateError,
    EjectionGroup,
    Event,
    State,
)

FAST = BreakerPolicy(
    consecutive_failures=3,
    failure_ratio=0.5,
    min_requests=10,
    window_s=10.0,
    base_ejection_s=30.0,
    max_ejection_s=100.0,
    half_open_probes=2,
)


def breaker_in(state: State, now: float = 0.0) -> Breaker:
    """A breaker brought to `state` through legal transitions only."""
    b = Breaker(FAST, "t", now)
    if state is not CLOSED:
        b.fire(Event.TRIP, now)
    if state is HALF_OPEN:
        b.fire(Event.COOL_DOWN, now + 30)
    assert b.state is state
    return b


EXPECTED = {
    (CLOSED, Event.TRIP): OPEN,
    (CLOSED, Event.COOL_DOWN): None,
    (CLOSED, Event.PROBE_SUCCEEDED): None,
    (CLOSED, Event.PROBE_FAILED): None,
    (CLOSED, Event.RESET): CLOSED,
    (OPEN, Event.TRIP): None,
    (OPEN, Event.COOL_DOWN): HALF_OPEN,
    (OPEN, Event.PROBE_SUCCEEDED): None,
    (OPEN, Event.PROBE_FAILED): None,
    (OPEN, Event.RESET): CLOSED,
    (HALF_OPEN, Event.TRIP): None,
    (HALF_OPEN, Event.COOL_DOWN): None,
    (HALF_OPEN, Event.PROBE_SUCCEEDED): CLOSED,
    (HALF_OPEN, Event.PROBE_FAILED): OPEN,
    (HALF_OPEN, Event.RESET): CLOSED,
}


def test_expected_table_covers_every_pair_and_matches_the_machine() -> None:
    assert set(EXPECTED) == {(s, e) for s in State for e in Event}
    assert {k: v for k, v in EXPECTED.items() if v is not None} == TRANSITIONS


@pytest.mark.parametrize(
    ("state", "event", "after"),
    [(s, e, a) for (s, e), a in EXPECTED.items()],
    ids=[
        f"{s.value}-{e.value}-{'illegal' if a is None else a.value}"
        for (s, e), a in EXPECTED.items()
    ],
)
def test_every_transition(state: State, event: Event, after: State | None) -> None:
    b = breaker_in(state)
    before = dict(b.transitions)
    if after is None:
        with pytest.raises(BreakerStateError, match=event.name):
            b.fire(event, 40.0)
        assert b.state is state and b.transitions == before  # nothing changed
        return
    assert b.fire(event, 40.0) is after
    assert b.state is after
    assert b.transitions[(state, after)] == before.get((state, after), 0) + 1
    assert b.admits is (after is not OPEN)


def test_trips_on_consecutive_failures_and_a_success_resets_the_count() -> None:
    b = Breaker(FAST, "t")
    b.on_failure(1.0)
    b.on_failure(1.0)
    b.on_success(1.0)
    b.on_failure(1.0)
    b.on_failure(1.0)
    assert b.state is CLOSED
    b.on_failure(1.0)
    assert b.state is OPEN and not b.admits
    assert b.open_until == 31.0


def test_trips_on_ratio_only_with_min_requests() -> None:
    p = BreakerPolicy(consecutive_failures=0, failure_ratio=0.5, min_requests=10)
    b = Breaker(p, "t")
    for _ in range(4):  # 4 failures of 8: ratio reached, too few requests
        b.on_success(1.0)
        b.on_failure(1.0)
    assert b.state is CLOSED
    b.on_success(1.0)
    b.on_failure(1.0)  # 5 of 10
    assert b.state is OPEN


def test_ratio_window_forgets_old_results() -> None:
    p = BreakerPolicy(consecutive_failures=0, failure_ratio=0.5, min_requests=4, window_s=10)
    b = Breaker(p, "t")
    for _ in range(3):
        b.on_failure(0.0)
    b.on_success(20.0)  # the failures left the window
    b.on_success(20.0)
    b.on_failure(20.0)
    b.on_success(20.0)
    assert b.state is CLOSED  # 1 of 4


def test_ejection_grows_with_repeated_ejections_up_to_the_cap() -> None:
    b = breaker_in(OPEN, now=0.0)
    durations = [b.open_until - 0.0]
    now = 0.0
    for _ in range(4):
        now = b.open_until
        b.fire(Event.COOL_DOWN, now)
        b.probe_result(now, ok=False)
        durations.append(b.open_until - now)
    assert durations == [30.0, 60.0, 90.0, 100.0, 100.0]


def test_multiplier_starts_again_after_staying_closed() -> None:
    b = breaker_in(HALF_OPEN)
    b.probe_result(30.0, ok=True)
    assert b.state is CLOSED and b.ejections == 1
    b.fire(Event.TRIP, 50.0)  # soon after: grows
    assert b.open_until == 50.0 + 60.0
    b.fire(Event.COOL_DOWN, 110.0)
    b.probe_result(110.0, ok=True)
    b.fire(Event.TRIP, 110.0 + 100.0)  # closed for max_ejection_s: back to base
    assert b.open_until == 210.0 + 30.0


def test_half_open_admits_a_limited_number_of_probes() -> None:
    b = breaker_in(HALF_OPEN)
    assert b.admits
    b.start_probe()
    assert b.admits
    b.start_probe()
    assert not b.admits  # two probes out
    b.probe_result(31.0, ok=None)  # one abandoned: its slot is free again
    assert b.admits and b.state is HALF_OPEN
    b.start_probe()
    b.probe_result(31.0, ok=True)
    assert b.state is CLOSED and b.admits


def test_late_results_outside_closed_are_ignored() -> None:
    b = breaker_in(OPEN)
    b.on_failure(1.0)
    b.on_success(1.0)
    assert b.state is OPEN
    h = breaker_in(HALF_OPEN)
    h.on_failure(31.0)  # not a probe: no verdict
    assert h.state is HALF_OPEN
    c = breaker_in(CLOSED)
    c.probe_result(1.0, ok=False)  # a probe of a breaker reset meanwhile
    assert c.state is CLOSED


def test_disabled_breaker_never_trips() -> None:
    b = Breaker(BreakerPolicy(enabled=False), "t")
    for _ in range(100):
        b.on_failure(1.0, unreachable=True)
    assert b.state is CLOSED


@pytest.mark.parametrize(
    ("kw", "ok"),
    [
        ({"failure_statuses": frozenset({404})}, False),
        ({"half_open_probes": 0}, False),
        ({"base_ejection_s": 10.0, "max_ejection_s": 5.0}, False),
        ({}, True),
    ],
    ids=["4xx-status", "no-probes", "cap-below-base", "defaults"],
)
def test_policy_checks(kw: dict[str, object], ok: bool) -> None:
    if ok:
        BreakerPolicy(**kw)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError):
            BreakerPolicy(**kw)  # type: ignore[arg-type]


def group_of(n: int, percent: int = 50) -> tuple[list[Breaker], EjectionGroup]:
    breakers = [Breaker(FAST, f"b{i}") for i in range(n)]
    return breakers, EjectionGroup(breakers, percent)


def fail(b: Breaker, times: int, unreachable: bool = False) -> None:
    for _ in range(times):
        b.on_failure(1.0, unreachable=unreachable)


def test_max_ejection_percent_keeps_part_of_the_pool() -> None:
    (a, b, _), group = group_of(3, 50)
    assert group.max_ejected == 1
    fail(a, 3)
    fail(b, 3)
    assert (a.state, b.state) == (OPEN, CLOSED)
    assert b.suppressed == 1


def test_unreachable_endpoints_are_ejected_beyond_the_cap() -> None:
    (a, b, c), _ = group_of(3, 50)
    fail(a, 3)
    fail(b, 3, unreachable=True)
    fail(c, 2)
    fail(c, 1, unreachable=True)  # a mixed streak is not "unreachable"
    assert (a.state, b.state, c.state) == (OPEN, OPEN, CLOSED)


def test_at_least_one_may_be_ejected() -> None:
    (a,), _ = group_of(1, 10)
    fail(a, 3)
    assert a.state is OPEN


def test_group_wakes_breakers_lazily_and_tells_retry_after() -> None:
    (a, _, _), group = group_of(3, 100)
    assert group.wake_at == math.inf and group.retry_after_s(0.0) is None
    fail(a, 3)  # open until 31
    assert group.wake_at == 31.0
    assert group.retry_after_s(11.0) == 20.0
    group.wake(30.0)
    assert a.state is OPEN
    group.wake(31.0)
    assert a.state is HALF_OPEN and group.wake_at == math.inf


def test_repr_shows_state() -> None:
    b = breaker_in(OPEN)
    assert "open" in repr(b) and "until=30.000" in repr(b)
