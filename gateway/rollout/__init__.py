"""Automated canary rollouts: plans of weighted steps judged by the gateway's own metrics.

    stats.py       VersionStats (count, 5xx, latency histogram) the forwarder records into;
                   Window (the difference of two snapshots), p99 from the histogram
    plan.py        Plan, Step, Gates: a service's rollout config compiled; its fingerprint
    gates.py       judge(gates, canary, baseline) -> Verdict (judged? ok? reasons, values)
    machine.py     State, Event, TRANSITIONS: the state machine as a table
    store.py       Record; MemoryStateStore, RedisStateStore (compare-and-set on a generation)
    controller.py  Rollout (one service: tick, admin actions, weights into its split) and
                   Rollouts (a worker's, reused across reloads; the periodic task)

The split itself (sticky buckets, overrides) is gateway/routing/split.py. Who wins
between a config edit and the admin API is explained in controller.py.
"""

from gateway.rollout.controller import Rollout, Rollouts
from gateway.rollout.machine import TRANSITIONS, Event, RolloutStateError, State
from gateway.rollout.plan import Plan
from gateway.rollout.stats import VersionStats, Window

__all__ = [
    "TRANSITIONS",
    "Event",
    "Plan",
    "Rollout",
    "RolloutStateError",
    "Rollouts",
    "State",
    "VersionStats",
    "Window",
]
