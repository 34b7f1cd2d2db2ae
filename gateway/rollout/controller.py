"""The rollout controller: one `Rollout` per service with a plan, `Rollouts` per worker.

Every `interval` (and on each admin action) a rollout syncs with its state store,
judges the window since its step began, and maybe moves (machine.py has the table):

- PENDING: start step 0.
- PROGRESSING / PAUSED: judge the canary's window (gates.py). A judged, failing window
  fails the rollout at once, weight 0, the reasons recorded (also while paused). A
  PROGRESSING step whose hold is over moves on when the window was judged healthy;
  too few requests: not judged, the step waits (counted in `not_judged`). Passing the
  last held step, or reaching a step without hold, promotes (100%).

Weights follow the state: pending 0, progressing/paused the step's, promoted 100,
failed/aborted 0; `apply()` writes them into the service's VersionSplit.

Which wins (config vs admin): the plan comes from the config, the state from the
controller and the admin API. A reload that leaves the plan's fingerprint unchanged
keeps the state, pauses and promotions included; a changed plan resets the rollout
to pending, logged as a warning with the state it discards. Weights of a service with
a rollout cannot be written in the config (the model refuses them), so the two never
fight silently.

Stats windows are local: each instance judges the traffic it served since it
adopted the current step (the hold time is shared, on the record). Any instance that
sees a failing canary fails it for all; known gap: the windows are not summed across
instances, so a process with little traffic judges less often (min_requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable

from gateway.config.model import Config
from gateway.config.ratelimit_model import RedisSettings
from gateway.rollout.gates import Verdict, judge
from gateway.rollout.machine import TERMINAL, Event, RolloutStateError, State, next_state
from gateway.rollout.plan import Plan
from gateway.rollout.stats import Window
from gateway.rollout.store import (
    MemoryStateStore,
    Record,
    RedisStateStore,
    StateStore,
    StoreUnavailable,
)
from gateway.routing.split import VersionSplit

__all__ = ["Rollout", "RolloutStateError", "Rollouts"]

log = logging.getLogger("gateway.rollout")
Clock = Callable[[], float]
# Terminal states -> the outcome counted (gateway_rollout_outcomes_total) by the
# instance that decided it (not by those adopting it from the shared store).
OUTCOMES = {State.PROMOTED: "promoted", State.FAILED: "rolled_back", State.ABORTED: "aborted"}


class Rollout:
    def __init__(self, plan: Plan, split: VersionSplit, store: StateStore, clock: Clock) -> None:
        self.plan = plan
        self.store = store
        self.clock = clock
        self.record = Record(State.PENDING, 0, clock(), "", plan.fingerprint)
        self.split = split
        self._start = (Window(), Window())
        self.transitions: Counter[tuple[State, State]] = Counter()
        self.evaluations = 0
        self.not_judged = 0
        self.store_errors = 0
        self.outcomes: Counter[str] = Counter()  # see OUTCOMES
        self.last_verdict: Verdict | None = None
        self.rebind(split)

    @property
    def name(self) -> str:
        return self.plan.service

    @property
    def state(self) -> State:
        return self.record.state

    @property
    def weight(self) -> float:
        rec = self.record
        if rec.state in (State.PROGRESSING, State.PAUSED):
            return self.plan.steps[rec.step].weight
        return 100.0 if rec.state is State.PROMOTED else 0.0

    def rebind(self, split: VersionSplit) -> None:
        """Serve through `split` (a reload's new one), at this rollout's weight."""
        self.split = split
        split.set_weight(self.weight)

    def _windows(self) -> tuple[Window, Window]:
        canary = self.split.by_name[self.plan.version].stats.snapshot()
        baseline = self.split.by_name[self.plan.baseline].stats.snapshot()
        return canary - self._start[0], baseline - self._start[1]

    def _restart_window(self) -> None:
        self._start = (
            self.split.by_name[self.plan.version].stats.snapshot(),
            self.split.by_name[self.plan.baseline].stats.snapshot(),
        )

    # -- store ------------------------------------------------------------------------

    async def sync(self) -> None:
        """Adopt the stored record if it is newer; a stored record of another plan is
        replaced by this one (a config change resets the rollout, loudly)."""
        try:
            stored = await self.store.load(self.name)
        except StoreUnavailable as exc:
            self.store_errors += 1
            log.warning(
                "rollout %s: state store unavailable, keeping local state: %s", self.name, exc
            )
            return
        if stored is None:
            if self.record.gen:  # the store lost it (flushed): write ours back
                await self._write(dataclasses.replace(self.record, gen=1), 0)
            return
        if stored.fingerprint != self.plan.fingerprint:
            log.warning(
                "rollout %s: the plan changed in the config; resetting the rollout "
                "(discarding %s at step %d: %s)",
                self.name, stored.state.value, stored.step, stored.reason or "-",
            )  # fmt: skip
            fresh = Record(State.PENDING, 0, self.clock(), "plan changed", self.plan.fingerprint)
            await self._write(dataclasses.replace(fresh, gen=stored.gen + 1), stored.gen)
            return
        if stored.gen != self.record.gen:
            self._adopt(stored, None)

    async def _write(self, new: Record, expected_gen: int) -> bool:
        try:
            winner = await self.store.cas(self.name, new, expected_gen)
        except StoreUnavailable as exc:
            self.store_errors += 1
            if new.state in (State.FAILED, State.ABORTED):
                log.error(
                    "rollout %s: store unavailable (%s); rolling back locally", self.name, exc
                )
                self._count_outcome(new)
                self._adopt(new, None)
            else:
                log.warning("rollout %s: store unavailable, %s not applied: %s",
                            self.name, new.state.value, exc)  # fmt: skip
            return False
        if winner is not None:  # another instance moved first: follow it
            if winner.fingerprint == self.plan.fingerprint:
                self._adopt(winner, None)
            return False
        self._count_outcome(new)
        self._adopt(new, None)
        return True

    def _count_outcome(self, new: Record) -> None:
        outcome = OUTCOMES.get(new.state)
        if outcome is not None and self.record.state is not new.state:
            self.outcomes[outcome] += 1

    def _adopt(self, new: Record, verdict: Verdict | None) -> None:
        old = self.record
        self.record = new
        if old.state is not new.state or old.step != new.step:
            self.transitions[(old.state, new.state)] += 1
            values = verdict.describe() if verdict is not None else ""
            level = logging.WARNING if new.state in (State.FAILED, State.ABORTED) else logging.INFO
            log.log(
                level,
                "rollout %s: %s step %d -> %s step %d, weight %g%%: %s %s",
                self.name, old.state.value, old.step, new.state.value, new.step,
                self.weight, new.reason or "-", values,
            )  # fmt: skip
        if (old.step, old.step_started_at, old.state) != (
            new.step,
            new.step_started_at,
            new.state,
        ):
            self._restart_window()
        self.split.set_weight(self.weight)

    async def _move(self, event: Event, new: Record, verdict: Verdict | None = None) -> bool:
        """Apply `event` (checked against the table), through the store."""
        rec = self.record
        target = next_state(rec.state, event)
        new = dataclasses.replace(new, state=target, gen=rec.gen + 1)
        self.last_verdict = verdict if verdict is not None else self.last_verdict
        if verdict is not None:
            new = dataclasses.replace(new, reason=f"{new.reason} [{verdict.describe()}]")
        return await self._write(new, rec.gen)

    # -- the controller ---------------------------------------------------------------

    async def tick(self) -> None:
        await self.sync()
        rec = self.record
        now = self.clock()
        if rec.state in TERMINAL:
            next_state(rec.state, Event.TICK)
            return
        if rec.state is State.PENDING:
            await self._move(Event.TICK, dataclasses.replace(rec, step=0, step_started_at=now,
                                                             reason="started"))  # fmt: skip
            return
        self.evaluations += 1
        canary, baseline = self._windows()
        verdict = judge(self.plan.gates, canary, baseline)
        self.last_verdict = verdict
        if verdict.judged and not verdict.ok:
            await self._move(
                Event.GATE_FAILED,
                dataclasses.replace(rec, reason="; ".join(verdict.reasons)),
                verdict,
            )
            return
        step = self.plan.steps[rec.step]
        if (
            rec.state is State.PAUSED
            or step.hold_s is None
            or now - rec.step_started_at < step.hold_s
        ):
            next_state(rec.state, Event.TICK)
            return
        if not verdict.judged:
            self.not_judged += 1
            log.info("rollout %s: step %d not judged, waiting: %s", self.name, rec.step,
                     verdict.describe())  # fmt: skip
            return
        nxt = rec.step + 1
        last = len(self.plan.steps) - 1
        if nxt > last or self.plan.steps[nxt].hold_s is None:
            new = dataclasses.replace(rec, step=min(nxt, last), step_started_at=now,
                                      reason="every step passed")  # fmt: skip
            await self._move(Event.PROMOTE, new, verdict)
        else:
            new = dataclasses.replace(rec, step=nxt, step_started_at=now, reason="gates passed")
            await self._move(Event.STEP_OK, new, verdict)

    async def act(self, event: Event, who: str = "admin") -> Record:
        """An operator's pause / resume / promote / abort; RolloutStateError if illegal."""
        if event not in (Event.PAUSE, Event.RESUME, Event.PROMOTE, Event.ABORT):
            raise ValueError(f"{event.value} is not an operator action")
        await self.sync()
        rec = self.record
        next_state(rec.state, event)  # raise before touching anything
        now = self.clock()
        new = dataclasses.replace(rec, reason=f"{event.value} by {who}")
        if event is Event.RESUME:
            new = dataclasses.replace(new, step_started_at=now)  # the hold starts again
        elif event is Event.PROMOTE:
            new = dataclasses.replace(new, step=len(self.plan.steps) - 1, step_started_at=now)
        if not await self._move(event, new):
            raise StoreUnavailable(f"rollout {self.name}: the action was not stored; retry")
        return self.record

    def status(self) -> dict[str, object]:
        rec = self.record
        step = self.plan.steps[rec.step]
        canary, baseline = self._windows()
        return {
            "name": self.name,
            "state": rec.state.value,
            "step": rec.step,
            "steps": len(self.plan.steps),
            "weight": self.weight,
            "hold_s": step.hold_s,
            "held_s": round(self.clock() - rec.step_started_at, 3),
            "reason": rec.reason,
            "version": self.plan.version,
            "baseline": self.plan.baseline,
            "generation": rec.gen,
            "plan": self.plan.fingerprint,
            "window": judge(self.plan.gates, canary, baseline).values,
            "evaluations": self.evaluations,
            "not_judged": self.not_judged,
            "store_errors": self.store_errors,
            "transitions": {f"{a.value}->{b.value}": n for (a, b), n in self.transitions.items()},
        }

    def __repr__(self) -> str:
        rec = self.record
        return (
            f"<Rollout {self.name} {rec.state.value} step={rec.step} weight={self.weight:g}%"
            f" gen={rec.gen}>"
        )


class Rollouts:
    """A worker's rollouts and their store, carried across reloads by `build`."""

    def __init__(
        self,
        rollouts: dict[str, Rollout],
        store: StateStore,
        redis: RedisSettings | None,
        clock: Clock,
    ) -> None:
        self.rollouts = rollouts
        self.store = store
        self.redis = redis
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def empty(cls, clock: Clock = time.time) -> Rollouts:
        return cls({}, MemoryStateStore(), None, clock)

    @classmethod
    def build(
        cls,
        config: Config,
        splits: dict[str, VersionSplit],
        previous: Rollouts | None,
        clock: Clock | None = None,
    ) -> Rollouts:
        if clock is None:
            clock = previous.clock if previous is not None else time.time
        store: StateStore
        if previous is not None and previous.redis == config.redis:
            store = previous.store
        elif config.redis is not None:
            store = RedisStateStore(config.redis)
        else:
            store = MemoryStateStore()
        old = previous.rollouts if previous is not None else {}
        out: dict[str, Rollout] = {}
        for name, svc in config.services.items():
            if svc.rollout is None:
                continue
            plan = Plan.from_config(name, svc)
            prev = old.get(name)
            if prev is not None and prev.plan == plan and prev.store is store:
                prev.rebind(splits[name])  # same plan: state, pauses and windows kept
                out[name] = prev
                continue
            if prev is not None and prev.plan.fingerprint != plan.fingerprint:
                log.warning(
                    "rollout %s: the plan changed in the config; the rollout restarts "
                    "(was %s at step %d)", name, prev.state.value, prev.record.step,
                )  # fmt: skip
            out[name] = Rollout(plan, splits[name], store, clock)
        return cls(out, store, config.redis, clock)

    @property
    def interval_s(self) -> float:
        return min((r.plan.interval_s for r in self.rollouts.values()), default=30.0)

    async def sync(self) -> None:
        for r in self.rollouts.values():
            await r.sync()

    async def tick(self) -> None:
        for r in self.rollouts.values():
            try:
                await r.tick()
            except Exception:
                log.exception("rollout %s: tick failed", r.name)

    def start(self) -> None:
        """Tick every `interval_s` in the running loop (idempotent)."""
        if self._task is None and self.rollouts:
            self._task = asyncio.create_task(self._run(), name="rollouts")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.tick()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self, successor: Rollouts | None = None) -> None:
        await self.stop()
        if successor is None or successor.store is not self.store:
            await self.store.close()

    def status(self) -> list[dict[str, object]]:
        return [r.status() for r in self.rollouts.values()]

    def __repr__(self) -> str:
        return f"<Rollouts {list(self.rollouts.values())!r} {self.store!r}>"
