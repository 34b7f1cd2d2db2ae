"""Plan: a rollout's config compiled once (steps, gates, interval) and its fingerprint.

The fingerprint (a hash of the plan and of the upstreams the versions name) is stored
with the rollout's state: a config edit that changes it resets the rollout, loudly;
one that does not (a new route, a timeout) keeps the state, admin actions included.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from gateway.config.rollout_model import Service

__all__ = ["Gates", "Plan", "Step"]


@dataclass(frozen=True, slots=True)
class Step:
    weight: float
    hold_s: float | None  # None: the last step, reached means promoted


@dataclass(frozen=True, slots=True)
class Gates:
    max_5xx_ratio: float | None = None
    max_p99_s: float | None = None
    max_5xx_ratio_delta: float | None = None
    max_p99_ratio: float | None = None
    min_requests: int = 100


@dataclass(frozen=True, slots=True)
class Plan:
    service: str
    version: str  # the version rolled out
    baseline: str
    steps: tuple[Step, ...]
    gates: Gates
    interval_s: float
    fingerprint: str

    @classmethod
    def from_config(cls, name: str, svc: Service) -> Plan:
        r = svc.rollout
        if r is None:
            raise ValueError(f"service {name!r} has no rollout")
        g = r.gates
        fp_source = {
            "rollout": r.model_dump(mode="json"),
            "versions": {k: v.upstream for k, v in sorted(svc.versions.items())},
            "baseline": svc.baseline,
        }
        fingerprint = hashlib.sha256(orjson.dumps(fp_source, option=orjson.OPT_SORT_KEYS))
        return cls(
            service=name,
            version=r.version,
            baseline=svc.baseline,
            steps=tuple(Step(s.weight, s.hold) for s in r.steps),
            gates=Gates(
                max_5xx_ratio=g.max_5xx_ratio,
                max_p99_s=g.max_p99,
                max_5xx_ratio_delta=g.vs_stable.max_5xx_ratio_delta,
                max_p99_ratio=g.vs_stable.max_p99_ratio,
                min_requests=g.min_requests,
            ),
            interval_s=r.interval,
            fingerprint=fingerprint.hexdigest()[:16],
        )
