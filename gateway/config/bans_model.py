"""Abusive-client bans: the top-level `bans` section (gateway/filters/bans.py applies it).

    bans:
      mode: enforce              # or shadow: decide, log and count, let banned clients pass
      after_blocks: 5            # blocks of one client address within `window` -> a ban
      window: 1m
      ban_for: 15m               # the first ban; each repeat ban is repeat_factor times
      repeat_factor: 2           # longer than the one before, up to max_ban
      max_ban: 24h
      forget_after: 24h          # a client's ban count resets this long after its last ban
      allow: [10.0.0.0/8]        # never banned, never denied, blocks not counted
      deny: [198.51.100.0/24]    # always 403
      user_agent_deny: ["(?i)sqlmap", "(?i)nikto"]   # Python regexes searched in User-Agent
      store: redis               # or memory; default redis when `redis` is configured
      sync_interval: 1s          # how often a process reads the shared bans from Redis
      max_clients: 100000        # client addresses whose recent blocks a process tracks

What counts as a block: a request the screening filter answered 403 in block mode
(`ex.state["blocked_by"]`, set by any filter that blocks on abuse). Shadow-mode
screening does not count: the screen is not trusted to block yet, so it is not trusted
to ban either. Size-limit rejections (405/413/414/415/431) do not count: they are cheap
to answer, rejected before a body is read, and the usual source is a misconfigured
client, not an attacker. A route exempts itself with `bans: false`.

An address in both `allow` and `deny` is allowed (allow wins, as it does for bans).
Cross-field rule (`checks.py`): `store: redis` needs the top-level `redis` section.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gateway.config.fields import Cidr, StrictModel, choice, unit
from gateway.config.units import Duration

__all__ = ["Bans"]


def _check_ua_regex(v: Any) -> Any:
    if not isinstance(v, str) or not v:
        raise ValueError(f"invalid user_agent_deny pattern {v!r}: expected a non-empty regex")
    try:
        re.compile(v)
    except re.error as e:
        raise ValueError(f"invalid regex {v!r}: {e}") from None
    return v


UaPattern = Annotated[str, BeforeValidator(_check_ua_regex)]


class Bans(StrictModel):
    """Ban client addresses that keep getting blocked; allow- and deny-lists; UA deny."""

    mode: Annotated[
        Literal["enforce", "shadow"], BeforeValidator(choice("mode", ("enforce", "shadow")))
    ] = Field(
        default="enforce",
        description="'shadow': bans are decided, logged and counted but nobody is refused.",
    )
    after_blocks: int = Field(
        default=5, ge=1, description="Blocks of one client address within `window` that ban it."
    )
    window: Duration = Field(
        default=unit("1m"), gt=0, description="The time in which `after_blocks` blocks ban."
    )
    ban_for: Duration = Field(default=unit("15m"), gt=0, description="Length of a first ban.")
    repeat_factor: float = Field(
        default=2.0, ge=1, description="Each repeat ban lasts this many times the one before."
    )
    max_ban: Duration = Field(default=unit("24h"), gt=0, description="Longest ban.")
    forget_after: Duration = Field(
        default=unit("24h"),
        description="A client's ban count (for repeat_factor) resets this long after its "
        "last ban ended.",
    )
    allow: list[Cidr] = Field(
        default=[], description="Addresses and networks never banned or denied."
    )
    deny: list[Cidr] = Field(default=[], description="Addresses and networks always refused.")
    user_agent_deny: list[UaPattern] = Field(
        default=[], description="Python regexes searched in User-Agent; a match is refused."
    )
    store: (
        Annotated[Literal["memory", "redis"], BeforeValidator(choice("store", ("memory", "redis")))]
        | None
    ) = Field(
        default=None,
        description="'memory' (per process) or 'redis' (bans shared by every gateway "
        "process); default redis when a redis section is configured, else memory.",
    )
    sync_interval: Duration = Field(
        default=unit("1s"),
        gt=0,
        description="How often a process reads the shared bans from Redis (their "
        "propagation delay to other processes).",
    )
    max_clients: int = Field(
        default=100_000,
        ge=1,
        description="Client addresses whose recent blocks are tracked per process (least "
        "recently blocked dropped first).",
    )

    @field_validator("allow", "deny", "user_agent_deny")
    @classmethod
    def _unique(cls, v: list[str], info: Any) -> list[str]:
        seen: set[str] = set()
        for item in v:
            if item in seen:
                raise ValueError(f"{item!r} given twice")
            seen.add(item)
        return v

    @model_validator(mode="after")
    def _max_covers_first(self) -> Bans:
        if self.max_ban < self.ban_for:
            raise ValueError("max_ban must be >= ban_for")
        return self

    def uses_redis(self, redis_configured: bool) -> bool:
        return self.store == "redis" or (self.store is None and redis_configured)
