"""Services with versions, sticky splits, rollout plans, and regions: the config side.

A route's `upstream` may name a service instead of an upstream:

    region: eu-west                      # the gateway's own region (top level)
    services:
      users:
        versions:                        # each version is a named upstream
          stable: {upstream: users-v1}
          canary: {upstream: users-v2}
        baseline: stable                 # the version that holds the rest (default stable)
        sticky: {key: cookie, name: gw_users}   # cookie | header | client_ip | api_key
        override: {header: X-Canary, cookie: canary}   # always | never | a version name
        version_header: X-Served-Version
        rollout:
          version: canary                # the version rolled out (default canary)
          steps: [{weight: 5, hold: 10m}, {weight: 25, hold: 10m}, {weight: 100}]
          gates: {max_5xx_ratio: 0.05, max_p99: 500ms, min_requests: 100,
                  vs_stable: {max_5xx_ratio_delta: 0.02, max_p99_ratio: 1.5}}
          interval: 30s

Weights are percents with two decimals (10,000 hash buckets). Who sets them: without
a rollout the config does (they must add up to 100); with a rollout the rollout does
and a `weight` in the config is an error, so a config edit and the controller can
never fight silently. Admin actions (pause, resume, promote, abort) change the
rollout's state, kept until the plan changes; a config edit of the plan resets the
rollout to its first step (logged as a warning). See gateway/rollout/__init__.py.

Regions: an endpoint may carry `region:`; an upstream's `regions` section orders
failover (`failover: [eu-west, us-east]`, default own region first, then the order
of first appearance) and may split across regions (`weights: {eu-west: 80, ...}`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from gateway.config.fields import Name, StrictModel, Token, choice, unit
from gateway.config.units import Duration

__all__ = [
    "Gates",
    "Override",
    "Regions",
    "RolloutPlan",
    "RolloutStep",
    "Service",
    "ServiceVersion",
    "Sticky",
    "VsStable",
]

Percent = Annotated[float, Field(ge=0, le=100)]
StickyKind = Literal["cookie", "header", "client_ip", "api_key"]
_KINDS = ("cookie", "header", "client_ip", "api_key")


def _int_or_float(v: Any) -> Any:
    # Strict mode refuses an int for a float field; `weight: 5` is the common case.
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


Weight = Annotated[Percent, BeforeValidator(_int_or_float)]
Ratio = Annotated[float, Field(ge=0, le=1), BeforeValidator(_int_or_float)]


def _hundredths(v: float) -> bool:
    return abs(v * 100 - round(v * 100)) < 1e-9


class ServiceVersion(StrictModel):
    """One version of a service: a named upstream and, without a rollout, its share."""

    upstream: Name = Field(description="Name of an entry in upstreams.")
    weight: Weight | None = Field(
        default=None,
        description="Percent of the service's traffic (two decimals at most); required "
        "without a rollout, forbidden with one (the rollout sets it).",
    )

    @model_validator(mode="after")
    def _precision(self) -> ServiceVersion:
        if self.weight is not None and not _hundredths(self.weight):
            raise ValueError("weight: at most two decimals (10,000 buckets)")
        return self


class Sticky(StrictModel):
    """What keeps a client on its version: the key hashed into 10,000 buckets."""

    key: Annotated[StickyKind, BeforeValidator(choice("key", _KINDS))] = Field(
        default="client_ip",
        description="'cookie', 'header', 'client_ip' or 'api_key' (a header, default "
        "X-API-Key). A request without the header falls back to the client address.",
    )
    name: Token | None = Field(
        default=None,
        description="Cookie or header name; default 'gw_version' (cookie), 'X-API-Key' "
        "(api_key); required for header.",
    )
    set_cookie: bool | None = Field(
        default=None,
        description="cookie only (default true): a client without the cookie gets a random "
        "id in it, so it keeps its version on its next requests.",
    )
    max_age: Duration = Field(
        default=unit("720h"),
        gt=0,
        description="Max-Age of the cookie the gateway sets (default 30 days).",
    )

    @model_validator(mode="after")
    def _names(self) -> Sticky:
        if self.key == "header" and self.name is None:
            raise ValueError("key 'header' needs a name")
        if self.key == "client_ip" and self.name is not None:
            raise ValueError("key 'client_ip' takes no name")
        if self.set_cookie is not None and self.key != "cookie":
            raise ValueError("set_cookie is only for key 'cookie'")
        return self

    @property
    def key_name(self) -> str:
        if self.name is not None:
            return self.name
        return {"cookie": "gw_version", "api_key": "X-API-Key"}.get(self.key, "")


class Override(StrictModel):
    """Force a version per request: 'always' (the rolled-out version), 'never' (the
    baseline) or a version's name, in a header or a cookie (the header wins)."""

    header: Token | None = Field(default=None, description="Request header read.")
    cookie: Token | None = Field(default=None, description="Cookie read.")

    @model_validator(mode="after")
    def _one(self) -> Override:
        if self.header is None and self.cookie is None:
            raise ValueError("give header, cookie or both")
        return self


class VsStable(StrictModel):
    """Gates relative to the baseline's metrics over the same window."""

    max_5xx_ratio_delta: Ratio | None = Field(
        default=None, description="Canary 5xx ratio minus the baseline's, at most."
    )
    max_p99_ratio: float | None = Field(
        default=None, gt=0, description="Canary p99 over the baseline's p99, at most."
    )


class Gates(StrictModel):
    """What a step must show before the next one; any failing gate rolls back at once."""

    max_5xx_ratio: Ratio | None = Field(
        default=None, description="Share of canary responses that are 5xx, at most."
    )
    max_p99: Duration | None = Field(
        default=None, description="Canary p99 latency to the response head, at most."
    )
    vs_stable: VsStable = Field(default=VsStable(), description="Gates against the baseline.")
    min_requests: int = Field(
        default=100,
        ge=1,
        description="Canary requests in the window before it is judged; fewer: not judged "
        "(the step waits).",
    )


class RolloutStep(StrictModel):
    """A weight, held for `hold` while the gates judge it; the last step has no hold."""

    weight: Weight = Field(gt=0, description="Percent of traffic on the rolled-out version.")
    hold: Duration | None = Field(default=None, gt=0, description="Time at this weight.")


class RolloutPlan(StrictModel):
    """Steps of weight and hold time, with gates evaluated every `interval`."""

    version: Name = Field(default="canary", description="The version rolled out.")
    steps: list[RolloutStep] = Field(min_length=1, description="Weights in increasing order.")
    gates: Gates = Field(default=Gates(), description="Health gates.")
    interval: Duration = Field(default=unit("30s"), gt=0, description="Evaluation period.")

    @model_validator(mode="after")
    def _steps(self) -> RolloutPlan:
        last = len(self.steps) - 1
        for i, step in enumerate(self.steps):
            if not _hundredths(step.weight):
                raise ValueError(f"steps[{i}].weight: at most two decimals (10,000 buckets)")
            if i and step.weight <= self.steps[i - 1].weight:
                raise ValueError(f"steps[{i}].weight: must be above the previous step's")
            if i < last and step.hold is None:
                raise ValueError(f"steps[{i}].hold: required on every step but the last")
        if self.steps[-1].weight != 100:
            raise ValueError(f"steps[{last}].weight: the last step must be 100")
        return self


class Service(StrictModel):
    """A service with versions; routes name it in place of an upstream."""

    versions: dict[Name, ServiceVersion] = Field(
        min_length=2, description="Versions by name, each a named upstream."
    )
    baseline: Name = Field(
        default="stable", description="The version that takes what the others do not."
    )
    sticky: Sticky = Field(default=Sticky(), description="The client key of the split.")
    override: Override | None = Field(default=None, description="Per-request override.")
    version_header: Token | None = Field(
        default=None, description="Response header naming the version that served."
    )
    rollout: RolloutPlan | None = Field(default=None, description="An automated rollout.")

    @model_validator(mode="after")
    def _versions(self) -> Service:
        if self.baseline not in self.versions:
            raise ValueError(f"baseline: no version {self.baseline!r}")
        if self.rollout is not None:
            if self.rollout.version not in self.versions:
                raise ValueError(f"rollout.version: no version {self.rollout.version!r}")
            if self.rollout.version == self.baseline:
                raise ValueError("rollout.version: must differ from the baseline")
            if len(self.versions) != 2:
                raise ValueError("versions: a rollout needs exactly two (baseline and rolled out)")
            given = [n for n, v in self.versions.items() if v.weight is not None]
            if given:
                raise ValueError(
                    f"versions.{given[0]}.weight: set by rollout.steps; remove it "
                    "(or remove rollout to set weights by hand)"
                )
            return self
        missing = [n for n, v in self.versions.items() if v.weight is None]
        if missing:
            raise ValueError(f"versions.{missing[0]}.weight: required without a rollout")
        total = sum(v.weight or 0.0 for v in self.versions.values())
        if abs(total - 100) > 1e-6:
            raise ValueError(f"versions: weights must add up to 100 (they add up to {total:g})")
        return self


class Regions(StrictModel):
    """Locality: prefer the gateway's own region, fail over in `failover` order."""

    failover: list[Name] = Field(
        default=[],
        description="Regions in priority order; default: the gateway's region first, then "
        "the order the endpoints name them.",
    )
    weights: dict[Name, Annotated[int, Field(ge=0)]] = Field(
        default={},
        description="Split across regions by these weights instead of preferring one; "
        "a region with no available endpoint passes its share on.",
    )
