"""The circuit breaker per endpoint: a table-driven state machine on an injected clock.

States and events (`TRANSITIONS` is the whole machine; anything not in it raises
`BreakerStateError`, as h11's `_state.py` does):

    CLOSED    --TRIP-->             OPEN       failures crossed a threshold
    OPEN      --COOL_DOWN-->        HALF_OPEN  the ejection time is over
    HALF_OPEN --PROBE_SUCCEEDED-->  CLOSED     a probe request succeeded
    HALF_OPEN --PROBE_FAILED-->     OPEN       a probe failed: ejected again, longer
    any       --RESET-->            CLOSED     an operator's reset

Tripping: `consecutive_failures` failures in a row, or a failure ratio of at least
`failure_ratio` over the rolling `window_s` once it holds `min_requests` results.
A failure is a connect error, a timeout or a status in `failure_statuses` (5xx only;
a 4xx is the client's fault). The ejection lasts `base_ejection_s` times the number
of consecutive ejections (Envoy's outlier detection), capped at `max_ejection_s`;
the count starts again once the breaker stayed closed for `max_ejection_s`.

Half-open admits `half_open_probes` requests at a time; `admits` turns False while
they are out, so the balancers skip the endpoint. Results of requests that were not
probes (admitted while closed, finishing late) are ignored outside CLOSED.

Max ejection: the breakers of one upstream share an `EjectionGroup` that lets at
most `max_ejection_percent` of them be out (at least one, as Envoy does), so a
service-wide problem (every endpoint answering 503) does not empty the pool. The
cap does not hold for an endpoint that is truly unreachable (its recent failures
were all connect errors): sending it traffic could only fail.

Hot path: `admits` is a plain attribute; recording a result is a few compares and
a rolling-window add. The OPEN -> HALF_OPEN move is lazy: the group keeps
`wake_at`, the earliest end of an ejection, and the forwarder calls `wake(now)`
when the clock passed it (one float compare per request otherwise).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

from gateway.upstream.window import RollingPair


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Event(enum.Enum):
    TRIP = "trip"
    COOL_DOWN = "cool_down"
    PROBE_SUCCEEDED = "probe_succeeded"
    PROBE_FAILED = "probe_failed"
    RESET = "reset"


CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN

TRANSITIONS: dict[tuple[State, Event], State] = {
    (CLOSED, Event.TRIP): OPEN,
    (OPEN, Event.COOL_DOWN): HALF_OPEN,
    (HALF_OPEN, Event.PROBE_SUCCEEDED): CLOSED,
    (HALF_OPEN, Event.PROBE_FAILED): OPEN,
    (CLOSED, Event.RESET): CLOSED,
    (OPEN, Event.RESET): CLOSED,
    (HALF_OPEN, Event.RESET): CLOSED,
}


class BreakerStateError(Exception):
    """An event the state machine has no transition for (a bug in the caller)."""


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    enabled: bool = True
    consecutive_failures: int = 5  # 0: off
    failure_ratio: float = 0.5  # 0: off
    min_requests: int = 20
    window_s: float = 10.0
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    half_open_probes: int = 1
    failure_statuses: frozenset[int] = frozenset({502, 503, 504})
    max_ejection_percent: int = 50

    def __post_init__(self) -> None:
        if any(not 500 <= s <= 599 for s in self.failure_statuses):
            raise ValueError("failure_statuses must be 5xx")
        if self.half_open_probes < 1 or self.min_requests < 1:
            raise ValueError("half_open_probes and min_requests must be >= 1")
        if not 0 < self.base_ejection_s <= self.max_ejection_s:
            raise ValueError("0 < base_ejection_s <= max_ejection_s")


def _nothing() -> None:
    pass


class Breaker:
    __slots__ = (
        "_consecutive",
        "_unreachable_streak",
        "_window",
        "admits",
        "closed_at",
        "ejections",
        "failure_statuses",
        "group",
        "name",
        "on_change",
        "open_until",
        "policy",
        "probes_out",
        "state",
        "suppressed",
        "transitions",
    )

    def __init__(self, policy: BreakerPolicy, name: str = "", now: float = 0.0) -> None:
        self.policy = policy
        self.name = name
        self.failure_statuses = policy.failure_statuses
        self.state = CLOSED
        self.admits = True
        self.open_until = 0.0
        self.closed_at = now
        self.ejections = 0  # consecutive ejections: the multiplier of the ejection time
        self.probes_out = 0
        self.suppressed = 0  # trips refused by the group's max ejection percent
        self.transitions: dict[tuple[State, State], int] = {}
        self.group: EjectionGroup | None = None
        self.on_change: Callable[[], None] = _nothing
        self._consecutive = 0
        self._unreachable_streak = 0
        self._window = RollingPair(policy.window_s)

    @property
    def ejections_total(self) -> int:
        """Every move into OPEN, ever (counters for metrics)."""
        return sum(n for (_, to), n in self.transitions.items() if to is OPEN)

    # -- the machine -------------------------------------------------------------------

    def fire(self, event: Event, now: float) -> State:
        old = self.state
        new = TRANSITIONS.get((old, event))
        if new is None:
            raise BreakerStateError(
                f"breaker {self.name}: no transition for {event.name} in {old.name}"
            )
        self.state = new
        self.transitions[(old, new)] = self.transitions.get((old, new), 0) + 1
        self.probes_out = 0
        if new is OPEN:
            if now - self.closed_at >= self.policy.max_ejection_s and event is Event.TRIP:
                self.ejections = 0  # stayed healthy long enough: start again at base
            self.ejections += 1
            p = self.policy
            self.open_until = now + min(p.base_ejection_s * self.ejections, p.max_ejection_s)
            self.admits = False
        else:
            self.admits = True
            if new is CLOSED:
                self.closed_at = now
                self._consecutive = 0
                self._unreachable_streak = 0
                self._window.clear()
                if event is Event.RESET:
                    self.ejections = 0
        if self.group is not None:
            self.group.changed()
        self.on_change()
        return new

    # -- results -----------------------------------------------------------------------

    def on_success(self, now: float) -> None:
        """A request admitted while CLOSED succeeded."""
        if self.state is CLOSED:
            self._consecutive = 0
            self._unreachable_streak = 0
            self._window.add(now, 1, 0)

    def on_failure(self, now: float, unreachable: bool = False) -> None:
        """A request admitted while CLOSED failed; `unreachable`: nothing was sent."""
        if self.state is not CLOSED or not self.policy.enabled:
            return
        self._consecutive += 1
        self._unreachable_streak = self._unreachable_streak + 1 if unreachable else 0
        w = self._window
        w.add(now, 1, 1)
        p = self.policy
        if (p.consecutive_failures and self._consecutive >= p.consecutive_failures) or (
            p.failure_ratio and w.a >= p.min_requests and w.b >= p.failure_ratio * w.a
        ):
            self._trip(now)

    def _trip(self, now: float) -> None:
        group = self.group
        if group is not None and not group.may_eject():
            streak = max(self.policy.consecutive_failures, 1)
            if self._unreachable_streak < streak:
                self.suppressed += 1  # keep serving: too many of the pool are out
                self._consecutive = 0
                self._window.clear()
                return
        self.fire(Event.TRIP, now)

    def start_probe(self) -> None:
        """A HALF_OPEN breaker's endpoint was picked: one probe slot is taken."""
        self.probes_out += 1
        if self.probes_out >= self.policy.half_open_probes and self.admits:
            self.admits = False
            self.on_change()

    def probe_result(self, now: float, ok: bool | None) -> None:
        """A probe ended: succeeded, failed, or `None` (abandoned: no verdict)."""
        if self.state is not HALF_OPEN:
            return  # reset or re-opened meanwhile
        if ok is None:
            self.probes_out = max(self.probes_out - 1, 0)
            if not self.admits:
                self.admits = True
                self.on_change()
            return
        self.fire(Event.PROBE_SUCCEEDED if ok else Event.PROBE_FAILED, now)

    def reset(self, now: float) -> None:
        self.fire(Event.RESET, now)

    def __repr__(self) -> str:
        extra = f" until={self.open_until:.3f}" if self.state is OPEN else ""
        return (
            f"<Breaker {self.name} {self.state.value}{extra} ejections={self.ejections} "
            f"consecutive={self._consecutive} window={self._window.b}/{self._window.a} "
            f"probes_out={self.probes_out} suppressed={self.suppressed}>"
        )


class EjectionGroup:
    """The breakers of one upstream: the max-ejection cap and the lazy cool-down."""

    __slots__ = ("breakers", "max_ejected", "wake_at")

    def __init__(self, breakers: list[Breaker], max_ejection_percent: int) -> None:
        self.breakers = tuple(breakers)
        self.max_ejected = max(1, len(breakers) * max_ejection_percent // 100)
        self.wake_at = math.inf
        for b in breakers:
            b.group = self
        self.changed()

    @property
    def ejected(self) -> int:
        return sum(1 for b in self.breakers if b.state is not CLOSED)

    def may_eject(self) -> bool:
        return self.ejected < self.max_ejected

    def changed(self) -> None:
        self.wake_at = min(
            (b.open_until for b in self.breakers if b.state is OPEN), default=math.inf
        )

    def wake(self, now: float) -> None:
        """Move every breaker whose ejection is over to HALF_OPEN."""
        for b in self.breakers:
            if b.state is OPEN and b.open_until <= now:
                b.fire(Event.COOL_DOWN, now)
        self.changed()

    def retry_after_s(self, now: float) -> float | None:
        """Seconds until the earliest ejection ends; None when no breaker is open."""
        if self.wake_at == math.inf:
            return None
        return max(self.wake_at - now, 0.0)

    def __repr__(self) -> str:
        return f"<EjectionGroup ejected={self.ejected}/{self.max_ejected} of {len(self.breakers)}>"
