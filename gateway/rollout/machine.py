"""The rollout state machine, as a table (h11's `_state.py` style).

    PENDING     --tick-->         PROGRESSING  the controller starts step 0
    PROGRESSING --step_ok-->      PROGRESSING  the hold passed, gates green: next step
    PROGRESSING --tick-->         PROGRESSING  an evaluation that changed nothing
    PROGRESSING --gate_failed-->  FAILED       weight 0 at once, with the reason
    PAUSED      --gate_failed-->  FAILED       a pause holds the weight, not the safety net
    PROGRESSING --pause-->        PAUSED       hold the current weight
    PAUSED      --resume-->       PROGRESSING  the hold window starts again
    PAUSED      --tick-->         PAUSED
    PENDING|PROGRESSING|PAUSED --promote-->  PROMOTED  100% (an operator, or the last step)
    PENDING|PROGRESSING|PAUSED --abort-->    ABORTED   0%
    PROMOTED|FAILED|ABORTED --tick-->  same    terminal: only a new plan starts again

Anything else raises `RolloutStateError` (the admin API answers 409 with it).
"""

from __future__ import annotations

import enum

__all__ = ["TERMINAL", "TRANSITIONS", "Event", "RolloutStateError", "State", "next_state"]


class State(enum.Enum):
    PENDING = "pending"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTED = "promoted"
    FAILED = "failed"
    ABORTED = "aborted"


class Event(enum.Enum):
    TICK = "tick"
    STEP_OK = "step_ok"
    GATE_FAILED = "gate_failed"
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ABORT = "abort"


S, E = State, Event

TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.PENDING, E.TICK): S.PROGRESSING,
    (S.PENDING, E.PROMOTE): S.PROMOTED,
    (S.PENDING, E.ABORT): S.ABORTED,
    (S.PROGRESSING, E.TICK): S.PROGRESSING,
    (S.PROGRESSING, E.STEP_OK): S.PROGRESSING,
    (S.PROGRESSING, E.GATE_FAILED): S.FAILED,
    (S.PROGRESSING, E.PAUSE): S.PAUSED,
    (S.PROGRESSING, E.PROMOTE): S.PROMOTED,
    (S.PROGRESSING, E.ABORT): S.ABORTED,
    (S.PAUSED, E.TICK): S.PAUSED,
    (S.PAUSED, E.GATE_FAILED): S.FAILED,
    (S.PAUSED, E.RESUME): S.PROGRESSING,
    (S.PAUSED, E.PROMOTE): S.PROMOTED,
    (S.PAUSED, E.ABORT): S.ABORTED,
    (S.PROMOTED, E.TICK): S.PROMOTED,
    (S.FAILED, E.TICK): S.FAILED,
    (S.ABORTED, E.TICK): S.ABORTED,
}

TERMINAL = frozenset({S.PROMOTED, S.FAILED, S.ABORTED})


class RolloutStateError(Exception):
    """An event the rollout's state has no transition for."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"cannot {event.value} a rollout that is {state.value}")
        self.state = state
        self.event = event


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise RolloutStateError(state, event) from None
