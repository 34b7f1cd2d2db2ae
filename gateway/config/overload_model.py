"""Overload protection and request deduplication: the config sections.

Per upstream, `adaptive_concurrency` (gateway/upstream/adaptive.py applies it):

    adaptive_concurrency:
      min_limit: 3              # the limit never goes below (and is pinned here while
      max_limit: 1000           #   min RTT is measured); never above max_limit
      update_interval: 100ms    # one latency window: its mean is the recent sample
      buffer: 0.25              # latency allowed above min RTT before the limit shrinks
      min_rtt_interval: 60s     # how often min RTT is measured again
      min_rtt_requests: 25      # samples one min RTT measurement takes

Top level, `overload` (gateway/overload.py measures, gateway/filters/overload.py
sheds): pressure is event-loop lag over `lag_threshold` and requests in flight in
this worker over `max_in_flight`; a route's `priority` sheds once the pressure reaches
its `shed_at` fraction. Critical routes are shed by in-flight requests only, never by
lag alone.

    overload:
      lag_threshold: 200ms
      max_in_flight: 2000
      check_interval: 50ms
      shed_at: {low: 0.5, normal: 0.7, high: 0.9, critical: 1.0}
      retry_after: 1s
      mode: enforce             # or shadow: count, never shed

Per route, `priority: critical|high|normal|low` (default normal) and `dedup`
(gateway/filters/dedup.py):

    dedup:
      key: {header: Idempotency-Key}   # or {json: "$.data.message_id"}
      window: 10m
      methods: [POST, PUT, PATCH, DELETE]
      max_body_bytes: 1MiB       # responses larger than this are not stored
      max_request_bytes: 1MiB    # request bodies read to fingerprint them; 413 beyond
      on_in_flight: wait         # or conflict: 409 while the first is in flight
      on_store_error: open       # open: pass through undeduplicated; closed: 503
      header: Idempotent-Replayed

The store is the worker's memory, or Redis when the config has a `redis` section.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gateway.config.fields import Method, StrictModel, Token, choice, unit
from gateway.config.units import Duration, Size

__all__ = [
    "PRIORITIES",
    "AdaptiveConcurrency",
    "Dedup",
    "DedupKey",
    "Overload",
    "Priority",
    "ShedAt",
    "parse_json_path",
]

# Lowest first: the index is the priority's rank (gateway/filters/overload.py).
PRIORITIES = ("low", "normal", "high", "critical")

Priority = Annotated[
    Literal["low", "normal", "high", "critical"], BeforeValidator(choice("priority", PRIORITIES))
]


class AdaptiveConcurrency(StrictModel):
    """A concurrency limit that follows measured latency (gradient, as Envoy's filter)."""

    min_limit: int = Field(
        default=3, ge=1, description="The lowest limit; also the limit while min RTT is measured."
    )
    max_limit: int = Field(default=1000, ge=1, description="The highest limit.")
    update_interval: Duration = Field(
        default=unit("100ms"),
        gt=0,
        description="Length of a latency window; the limit is recomputed at its end.",
    )
    buffer: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Share of latency above min RTT tolerated before the limit shrinks.",
    )
    min_rtt_interval: Duration = Field(
        default=unit("60s"), gt=0, description="Time between min RTT measurements."
    )
    min_rtt_requests: int = Field(
        default=25, ge=1, le=10_000, description="Latency samples one min RTT measurement takes."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AdaptiveConcurrency:
        if self.max_limit < self.min_limit:
            raise ValueError("max_limit must be >= min_limit")
        return self


class ShedAt(StrictModel):
    """Pressure (fraction of the overload thresholds) at which each priority is shed."""

    low: float = Field(default=0.5, gt=0, le=1, description="Pressure that sheds low routes.")
    normal: float = Field(default=0.7, gt=0, le=1, description="Pressure that sheds normal routes.")
    high: float = Field(default=0.9, gt=0, le=1, description="Pressure that sheds high routes.")
    critical: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="In-flight pressure that sheds critical routes (lag never does).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ShedAt:
        if not self.low <= self.normal <= self.high <= self.critical:
            raise ValueError("must rise with priority: low <= normal <= high <= critical")
        return self

    def fractions(self) -> tuple[float, float, float, float]:
        """In PRIORITIES order."""
        return (self.low, self.normal, self.high, self.critical)


class Overload(StrictModel):
    """Gateway self-protection: shed requests by route priority under pressure."""

    lag_threshold: Duration = Field(
        default=unit("200ms"),
        gt=0,
        description="Event-loop lag that is pressure 1.0 (the lag sheds priorities whose "
        "shed_at it reaches).",
    )
    max_in_flight: int = Field(
        default=2000, ge=1, description="Requests in flight per worker that are pressure 1.0."
    )
    check_interval: Duration = Field(
        default=unit("50ms"), gt=0, description="How often the event-loop lag is measured."
    )
    shed_at: ShedAt = Field(default=ShedAt(), description="Pressure that sheds each priority.")
    retry_after: Duration = Field(
        default=unit("1s"), gt=0, description="Retry-After of a shed request (whole seconds)."
    )
    mode: Annotated[
        Literal["enforce", "shadow"], BeforeValidator(choice("mode", ("enforce", "shadow")))
    ] = Field(default="enforce", description="'shadow': count what would be shed, shed nothing.")


# '$.data.items[0].id', 'data.message_id': names and [index] steps.
_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")


def parse_json_path(text: str) -> tuple[str | int, ...]:
    """'$.a.b[0]' or 'a.b[0]' -> ('a', 'b', 0); ValueError if not of that shape."""
    rest = text[1:] if text.startswith("$") else text
    steps: list[str | int] = []
    pos = 0
    while pos < len(rest):
        m = _STEP.match(rest, pos)
        if m is None or (pos == 0 and text.startswith("$") and rest[0] not in ".["):
            raise ValueError(
                f"invalid json path {text!r}: expected names and [index] steps, "
                "like '$.id' or 'data.items[0].id'"
            )
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not steps:
        raise ValueError(f"invalid json path {text!r}: it names nothing")
    return tuple(steps)


def _check_json_path(v: Any) -> Any:
    if isinstance(v, str):
        parse_json_path(v)
    return v


class DedupKey(StrictModel):
    """Where the idempotency key is: a request header, or a value in a JSON body."""

    header: Token | None = Field(default=None, description="A request header's value.")
    json_path: Annotated[str, BeforeValidator(_check_json_path)] | None = Field(
        default=None,
        alias="json",
        description="A JSON body path, '$.id' or 'data.message_id' ([n] indexes a list).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DedupKey:
        if (self.header is None) == (self.json_path is None):
            raise ValueError("give exactly one of header, json")
        return self


def _unique(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("a method is given twice")
    return v


class Dedup(StrictModel):
    """Process each idempotency key once within `window`; repeats get the stored answer."""

    key: DedupKey = Field(
        default=DedupKey(header="Idempotency-Key"),
        description="{header: NAME} or {json: PATH}; requests without a key pass through.",
    )
    window: Duration = Field(
        default=unit("10m"), gt=0, description="How long a response is kept for repeats."
    )
    methods: Annotated[list[Method], Field(min_length=1)] = Field(
        default=["POST", "PUT", "PATCH", "DELETE"], description="Methods deduplicated."
    )
    max_body_bytes: Size = Field(
        default=unit("1MiB"),
        ge=0,
        description="Responses with larger bodies are not stored (the key is released).",
    )
    max_request_bytes: Size = Field(
        default=unit("1MiB"),
        gt=0,
        description="Request bodies are read whole to fingerprint them; larger ones get 413.",
    )
    on_in_flight: Annotated[
        Literal["wait", "conflict"],
        BeforeValidator(choice("on_in_flight", ("wait", "conflict"))),
    ] = Field(
        default="wait",
        description="A repeat while the first is in flight: 'wait' for its answer (up to the "
        "route's total timeout), or 'conflict' (409).",
    )
    on_store_error: Annotated[
        Literal["open", "closed"], BeforeValidator(choice("on_store_error", ("open", "closed")))
    ] = Field(
        default="open",
        description="Redis unusable: 'open' passes requests through undeduplicated, "
        "'closed' answers 503.",
    )
    header: Token = Field(
        default="Idempotent-Replayed",
        description="Response header ('true') on answers replayed from the store.",
    )

    _unique_methods = field_validator("methods")(_unique)

    @property
    def json_steps(self) -> tuple[str | int, ...] | None:
        p = self.key.json_path
        return parse_json_path(p) if p is not None else None
