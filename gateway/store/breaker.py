"""A circuit breaker for the Redis store, as a transition table (h11's `_state.py` style).

    CLOSED    --success-->  CLOSED      calls go to Redis
    CLOSED    --failure-->  CLOSED      one more consecutive failure, below the threshold
    CLOSED    --trip----->  OPEN        `failures` consecutive failures
    OPEN      --elapsed-->  HALF_OPEN   the backoff is over: the next call is the probe
    HALF_OPEN --success-->  CLOSED      the probe worked: backoff back to its start
    HALF_OPEN --failure-->  OPEN        the probe failed: backoff doubles, up to a cap

Every other (state, event) pair is illegal and raises `BreakerError`; the wrapper
never fires one. While OPEN, or HALF_OPEN with its one probe out, `allow` says no at
once, so an outage costs callers nothing (no connect attempt, no timeout): they fall
back or fail as their policy says. Results of calls admitted before the breaker opened
that arrive while it is OPEN are stale and dropped (`record_*` ignores them), and so
are successes or failures of non-probe calls in HALF_OPEN.

Time is injected (`clock`), so tests walk it with a fake clock and no sleeps.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["TRANSITIONS", "Breaker", "BreakerError", "Event", "State", "transition"]


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Event(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    TRIP = "trip"
    ELAPSED = "elapsed"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.CLOSED, Event.SUCCESS): State.CLOSED,
    (State.CLOSED, Event.FAILURE): State.CLOSED,
    (State.CLOSED, Event.TRIP): State.OPEN,
    (State.OPEN, Event.ELAPSED): State.HALF_OPEN,
    (State.HALF_OPEN, Event.SUCCESS): State.CLOSED,
    (State.HALF_OPEN, Event.FAILURE): State.OPEN,
}


class BreakerError(Exception):
    """An event that is not allowed in the current state."""


def transition(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise BreakerError(f"illegal event {event.value} in state {state.value}") from None


class Breaker:
    __slots__ = (
        "backoff_s",
        "clock",
        "consecutive_failures",
        "failures",
        "max_open_for_s",
        "open_for_s",
        "open_until",
        "opened",
        "probing",
        "state",
    )

    def __init__(
        self,
        failures: int = 3,
        open_for_s: float = 0.25,
        max_open_for_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.open_for_s = open_for_s
        self.max_open_for_s = max_open_for_s
        self.clock = clock
        self.state = State.CLOSED
        self.consecutive_failures = 0
        self.backoff_s = open_for_s
        self.open_until = 0.0
        self.probing = False
        self.opened = 0  # times the breaker opened (a counter for metrics)

    def _fire(self, event: Event) -> None:
        self.state = transition(self.state, event)

    def allow(self) -> bool:
        """May a call go to Redis now? In HALF_OPEN the first yes is the probe."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self.clock() < self.open_until:
                return False
            self._fire(Event.ELAPSED)
            self.probing = True
            return True
        return False  # HALF_OPEN: the probe is out; everyone else waits for its answer

    def record_success(self, probe: bool = False) -> None:
        if self.state is State.CLOSED:
            self.consecutive_failures = 0
            self._fire(Event.SUCCESS)
        elif self.state is State.HALF_OPEN and probe:
            self.consecutive_failures = 0
            self.backoff_s = self.open_for_s
            self.probing = False
            self._fire(Event.SUCCESS)

    def record_failure(self, probe: bool = False) -> None:
        if self.state is State.CLOSED:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.failures:
                self._open(self.open_for_s)
                self._fire(Event.TRIP)
            else:
                self._fire(Event.FAILURE)
        elif self.state is State.HALF_OPEN and probe:
            self.probing = False
            self._open(min(self.backoff_s * 2, self.max_open_for_s))
            self._fire(Event.FAILURE)

    def _open(self, backoff_s: float) -> None:
        self.backoff_s = backoff_s
        self.open_until = self.clock() + backoff_s
        self.opened += 1

    def __repr__(self) -> str:
        return (
            f"<Breaker {self.state.value} failures={self.consecutive_failures}/{self.failures}"
            f" backoff={self.backoff_s:g}s opened={self.opened}>"
        )
