"""The controller on a fake clock with a real runtime: steps, gates, admin actions, reloads.

Traffic is recorded into the versions' stats directly (what the forwarder does per
request); tests/rollout/test_gateway.py sends real requests.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.config.load import validate_data
from gateway.rollout import Event, Rollout, RolloutStateError, State
from gateway.runtime import Runtime
from tests.rollout.conftest import PLAN, FakeClock, runtime_for, service_config

EP1, EP2 = ["http://127.0.0.1:9"], ["http://127.0.0.1:10"]


def setup(plan: dict[str, Any] | None = None) -> tuple[FakeClock, Runtime, Rollout]:
    clock = FakeClock()
    svc = {"rollout": plan} if plan is not None else None
    rt = runtime_for(service_config(EP1, EP2, svc), clock)
    return clock, rt, rt.rollouts.rollouts["users"]


def traffic(r: Rollout, canary: int, stable: int, canary_errors: int = 0) -> None:
    c = r.split.by_name["canary"].stats
    s = r.split.by_name["stable"].stats
    for i in range(canary):
        c.record(503 if i < canary_errors else 200, 0.02)
    for _ in range(stable):
        s.record(200, 0.02)


async def hold(clock: FakeClock, r: Rollout, seconds: float, per_interval: int = 50) -> None:
    """Let `seconds` pass in 30 s intervals, with traffic, ticking each."""
    for _ in range(int(seconds // 30)):
        traffic(r, per_interval, per_interval)
        clock.advance(30)
        await r.tick()


async def test_healthy_canary_is_promoted_through_every_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "gateway.rollout")
    clock, rt, r = setup()
    split = rt.splits["users"]
    assert (r.state, r.weight, split.by_name["canary"].buckets) == (State.PENDING, 0, 0)
    await r.tick()
    seen = [(r.state, r.weight)]
    for _ in range(3):
        await hold(clock, r, 600)
        seen.append((r.state, r.weight))
        assert split.by_name["canary"].weight == r.weight
    assert seen == [
        (State.PROGRESSING, 5),
        (State.PROGRESSING, 25),
        (State.PROGRESSING, 50),
        (State.PROMOTED, 100),
    ]
    assert split.by_name["stable"].buckets == 0
    assert r.transitions[(State.PROGRESSING, State.PROGRESSING)] == 2
    assert r.transitions[(State.PROGRESSING, State.PROMOTED)] == 1
    steps = [m for m in caplog.messages if "step" in m and "->" in m]
    assert len(steps) == 4  # started, two steps, promoted: each logged with its gate values
    assert "canary_5xx_ratio=0" in steps[1] and "canary_p99_s=0.025" in steps[1]
    await r.tick()  # a promoted rollout only ticks
    assert r.state is State.PROMOTED


async def test_failing_canary_is_rolled_back_within_one_interval() -> None:
    clock, rt, r = setup()
    await r.tick()
    traffic(r, 200, 2000, canary_errors=40)  # 20% 5xx
    clock.advance(30)
    await r.tick()
    assert (r.state, r.weight) == (State.FAILED, 0)
    assert rt.splits["users"].by_name["canary"].buckets == 0
    assert r.record.reason.startswith("5xx ratio 0.200 > max_5xx_ratio 0.05")
    assert "canary_requests=200" in r.record.reason


async def test_too_little_traffic_is_not_judged_and_the_step_waits() -> None:
    clock, _, r = setup()
    await r.tick()
    await hold(clock, r, 1200, per_interval=2)  # 80 requests in 20 minutes, all failing?
    assert (r.state, r.record.step) == (State.PROGRESSING, 0)
    assert r.not_judged > 0
    traffic(r, 60, 60, canary_errors=0)  # enough now
    clock.advance(30)
    await r.tick()
    assert (r.state, r.record.step, r.weight) == (State.PROGRESSING, 1, 25)


async def test_failures_below_min_requests_do_not_fail_it() -> None:
    clock, _, r = setup()
    await r.tick()
    traffic(r, 50, 50, canary_errors=50)
    clock.advance(30)
    await r.tick()
    assert r.state is State.PROGRESSING


async def test_pause_holds_the_weight_but_not_the_safety_net() -> None:
    clock, _, r = setup()
    await r.tick()
    await r.act(Event.PAUSE)
    await hold(clock, r, 1200)
    assert (r.state, r.weight) == (State.PAUSED, 5)
    await r.act(Event.RESUME)
    started = r.record.step_started_at
    assert started == clock.now  # the hold starts again
    await r.act(Event.PAUSE)
    traffic(r, 100, 100, canary_errors=30)
    clock.advance(30)
    await r.tick()
    assert (r.state, r.weight) == (State.FAILED, 0)


@pytest.mark.parametrize(
    ("event", "state", "weight"),
    [(Event.PROMOTE, State.PROMOTED, 100), (Event.ABORT, State.ABORTED, 0)],
    ids=["promote", "abort"],
)
async def test_operator_promote_and_abort(event: Event, state: State, weight: float) -> None:
    _, rt, r = setup()
    await r.tick()
    await r.act(event)
    assert (r.state, r.weight, rt.splits["users"].by_name["canary"].weight) == (
        state,
        weight,
        weight,
    )
    assert r.record.reason == f"{event.value} by admin"
    with pytest.raises(RolloutStateError, match=f"cannot resume a rollout that is {state.value}"):
        await r.act(Event.RESUME)


async def test_illegal_actions_change_nothing() -> None:
    _, _, r = setup()
    with pytest.raises(RolloutStateError, match="cannot pause a rollout that is pending"):
        await r.act(Event.PAUSE)
    await r.tick()
    gen = r.record.gen
    with pytest.raises(RolloutStateError, match="cannot resume a rollout that is progressing"):
        await r.act(Event.RESUME)
    with pytest.raises(ValueError, match="not an operator action"):
        await r.act(Event.STEP_OK)
    assert r.record.gen == gen and r.state is State.PROGRESSING


async def test_reload_with_the_same_plan_keeps_state_and_stats() -> None:
    clock, rt, r = setup()
    await r.tick()
    await hold(clock, r, 600)
    await r.act(Event.PAUSE)
    cfg = service_config(EP1, EP2)
    cfg["routes"].append({"name": "other", "upstream": "users-v1"})
    new = Runtime.build(validate_data(cfg), "b", previous=rt)
    again = new.rollouts.rollouts["users"]
    assert again is r and r.split is new.splits["users"]
    assert (again.state, again.weight, new.splits["users"].by_name["canary"].weight) == (
        State.PAUSED,
        25,
        25,
    )
    assert new.splits["users"].by_name["canary"].stats is rt.splits["users"].by_name["canary"].stats


async def test_a_changed_plan_resets_the_rollout_loudly(caplog: pytest.LogCaptureFixture) -> None:
    clock, rt, r = setup()
    await r.tick()
    await hold(clock, r, 600)
    plan = {**PLAN, "steps": [{"weight": 10, "hold": "5m"}, {"weight": 100}]}
    new = Runtime.build(
        validate_data(service_config(EP1, EP2, {"rollout": plan})), "b", previous=rt
    )
    fresh = new.rollouts.rollouts["users"]
    assert fresh is not r and fresh.state is State.PENDING
    assert new.splits["users"].by_name["canary"].buckets == 0
    assert any("plan changed" in m and "was progressing at step 1" in m for m in caplog.messages)
    await new.rollouts.sync()  # the shared record is replaced by the new plan's
    assert any("discarding progressing at step 1" in m for m in caplog.messages)
    await fresh.tick()
    assert (fresh.state, fresh.weight) == (State.PROGRESSING, 10)


async def test_a_last_step_with_a_hold_is_judged_before_promotion() -> None:
    plan = {**PLAN, "steps": [{"weight": 50, "hold": "1m"}, {"weight": 100, "hold": "1m"}]}
    clock, _, r = setup(plan)
    await r.tick()
    await hold(clock, r, 60)
    assert (r.state, r.weight) == (State.PROGRESSING, 100)
    await hold(clock, r, 60)
    assert r.state is State.PROMOTED


def test_status_reads_like_the_admin_api() -> None:
    _, _, r = setup()
    st = r.status()
    assert st["name"] == "users" and st["state"] == "pending" and st["weight"] == 0
    assert st["steps"] == 4 and st["version"] == "canary" and st["baseline"] == "stable"
    assert repr(r) == "<Rollout users pending step=0 weight=0% gen=0>"
