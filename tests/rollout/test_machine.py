"""The rollout state machine: every (state, event) pair, legal and illegal."""

from __future__ import annotations

import itertools

import pytest

from gateway.rollout.machine import TRANSITIONS, Event, RolloutStateError, State, next_state

S, E = State, Event

EXPECTED: dict[tuple[State, Event], State] = {
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

ALL = list(itertools.product(State, Event))


def test_the_table_is_exactly_the_documented_machine() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("state", "event"), ALL, ids=[f"{s.value}-{e.value}" for s, e in ALL])
def test_every_pair(state: State, event: Event) -> None:
    if (state, event) in EXPECTED:
        assert next_state(state, event) is EXPECTED[(state, event)]
    else:
        with pytest.raises(RolloutStateError) as info:
            next_state(state, event)
        assert str(info.value) == f"cannot {event.value} a rollout that is {state.value}"
        assert (info.value.state, info.value.event) == (state, event)


def test_terminal_states_only_tick() -> None:
    for state in (S.PROMOTED, S.FAILED, S.ABORTED):
        assert [e for e in Event if (state, e) in TRANSITIONS] == [E.TICK]
