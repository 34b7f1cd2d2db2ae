"""The access log: one JSON line per request (gateway/observability/accesslog.py).

    access_log:
      mode: full               # off (default) | sampled | full
      sample_rate: 0.01        # sampled: the share of requests logged
      always_log_errors: true  # sampled: 5xx answers are logged whatever the draw
      output: /var/log/gateway/access.log   # or stdout (the default)
      include_query: false     # the path is logged without its query string

Why `off` by default: it is what the proxies operators run next to this one do (Envoy,
Caddy and Traefik log nothing until asked; nginx is the exception), a full log is
one line per request (at this gateway's rates, gigabytes a day) and it holds client
addresses, which is personal data to be switched on knowingly. The gateway's own
log (stderr) still reports every error and rejection. The example config turns it on.

The query string is off by default for the same reason: tokens and personal data
travel in queries (OWASP logging cheat sheet).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator

from gateway.config.fields import StrictModel, choice

__all__ = ["AccessLog"]

Mode = Literal["off", "sampled", "full"]


class AccessLog(StrictModel):
    """Where and how much of the traffic is logged, one JSON object per line."""

    mode: Annotated[Mode, BeforeValidator(choice("mode", ("off", "sampled", "full")))] = Field(
        default="off",
        description="off: nothing; sampled: a share of requests (sample_rate); full: every "
        "request.",
    )
    sample_rate: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="In sampled mode, the share of requests logged (0 < rate <= 1).",
    )
    always_log_errors: bool = Field(
        default=True, description="In sampled mode, log every 5xx answer whatever the draw."
    )
    output: str = Field(
        default="stdout",
        min_length=1,
        description="'stdout', or the path of a file appended to (each worker appends whole "
        "lines; reopened on reload, for log rotation).",
    )
    include_query: bool = Field(
        default=False,
        description="Log the path with its query string (queries may carry tokens).",
    )
    max_queued_lines: int = Field(
        default=65_536,
        ge=1,
        description="Lines waiting for the writer thread, per worker; past it lines are "
        "dropped and counted (gateway_access_log_dropped_total).",
    )

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be 'stdout' or a file path")
        return v

    @property
    def enabled(self) -> bool:
        return self.mode != "off"
