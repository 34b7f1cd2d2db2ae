"""The Redis circuit breaker: every (state, event) pair of the table, then the wrapper."""

from __future__ import annotations

import itertools

import pytest

from gateway.store.breaker import TRANSITIONS, Breaker, BreakerError, Event, State, transition
from tests.ratelimit.conftest import FakeClock

C, OPEN, H = State.CLOSED, State.OPEN, State.HALF_OPEN
EXPECTED: dict[tuple[State, Event], State | None] = {
    (C, Event.SUCCESS): C,
    (C, Event.FAILURE): C,
    (C, Event.TRIP): OPEN,
    (C, Event.ELAPSED): None,
    (OPEN, Event.SUCCESS): None,
    (OPEN, Event.FAILURE): None,
    (OPEN, Event.TRIP): None,
    (OPEN, Event.ELAPSED): H,
    (H, Event.SUCCESS): C,
    (H, Event.FAILURE): OPEN,
    (H, Event.TRIP): None,
    (H, Event.ELAPSED): None,
}
PAIRS = list(itertools.product(State, Event))


def test_the_expectations_cover_every_pair() -> None:
    assert set(EXPECTED) == set(PAIRS)
    assert {k: v for k, v in EXPECTED.items() if v is not None} == TRANSITIONS


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=[f"{s.value}-{e.value}" for s, e in PAIRS])
def test_transition(state: State, event: Event) -> None:
    expected = EXPECTED[(state, event)]
    if expected is None:
        with pytest.raises(BreakerError, match=f"illegal event {event.value} in state"):
            transition(state, event)
    else:
        assert transition(state, event) is expected


def breaker(clock: FakeClock) -> Breaker:
    return Breaker(failures=3, open_for_s=1.0, max_open_for_s=3.0, clock=clock)


def test_trips_after_consecutive_failures_only(clock: FakeClock) -> None:
    b = breaker(clock)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert b.state is C and b.allow()
    b.record_failure()
    assert b.state is OPEN and b.opened == 1
    assert not b.allow()


def test_open_then_probe_closes(clock: FakeClock) -> None:
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.advance(0.99)
    assert not b.allow()
    clock.advance(0.01)
    assert b.allow() and b.state is H and b.probing
    assert not b.allow()  # one probe at a time
    b.record_success(probe=True)
    assert b.state is C and b.backoff_s == 1.0 and b.consecutive_failures == 0


def test_failed_probes_double_the_backoff_up_to_the_cap(clock: FakeClock) -> None:
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    backoffs = []
    for _ in range(4):
        clock.advance(b.backoff_s)
        assert b.allow()
        b.record_failure(probe=True)
        assert b.state is OPEN
        backoffs.append(b.backoff_s)
    assert backoffs == [2.0, 3.0, 3.0, 3.0]
    clock.advance(2.99)
    assert not b.allow()


def test_stale_results_are_ignored(clock: FakeClock) -> None:
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    b.record_success()  # a call admitted before the breaker opened
    b.record_failure()
    assert b.state is OPEN and b.opened == 1
    clock.advance(1.0)
    assert b.allow()
    b.record_success()  # not the probe: ignored
    b.record_failure()
    assert b.state is H
    assert "half_open" in repr(b)
