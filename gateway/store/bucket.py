"""Token-bucket arithmetic: pure functions on (tokens, last_ts), time passed in.

A bucket holds at most `burst` tokens and gains `rate` tokens per second, continuously.
A request of `cost` tokens is admitted when the bucket holds at least `cost`, and then
takes them; a refused request takes nothing (so a client hammering a full limit is
admitted again at exactly the refill rate). A bucket never seen is full.

Over any interval of length T a key is admitted at most `burst + rate * T` tokens' worth
of requests, and exactly that when it asks for more all along.

The Redis Lua script (`gateway.store.redis`) is a transcription of `take` in
milliseconds; the memory store calls `take` itself. Keep the two in step.

Edge cases, decided here once:
- time going backwards (`now < last`, a clock step) refills nothing and is not an error;
- `cost > burst` is never admitted, whatever the wait: `retry_after_s` is `math.inf`
  (the config refuses such costs, `RateLimitPolicy._cost_fits_burst`);
- `cost == 0` is always admitted and takes nothing;
- a tiny epsilon absorbs float drift, so 0.1 + 0.2 tokens pay for a cost of 0.3.
- `remaining` is the whole tokens left after this request; `reset_s` the time until
  the bucket is full again (when an absent key and this one are the same thing,
  which is also when its Redis key may expire).
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["EPSILON", "Decision", "Limit", "take"]

EPSILON = 1e-9


class Limit(NamedTuple):
    """A bucket's shape: `rate` tokens per second refill a bucket of `burst` tokens."""

    rate: float
    burst: int

    @property
    def fill_s(self) -> float:
        """Seconds to fill an empty bucket."""
        return self.burst / self.rate


class Decision(NamedTuple):
    """The answer for one bucket check."""

    allowed: bool
    remaining: int  # whole tokens left after this request
    retry_after_s: float  # 0 when allowed; when a retry could pass (inf: never)
    reset_s: float  # until the bucket is full again


def refill(tokens: float, last: float, now: float, limit: Limit) -> float:
    """Tokens at `now`, from `tokens` at `last`."""
    if now <= last:
        return tokens
    return min(float(limit.burst), tokens + (now - last) * limit.rate)


def take(
    tokens: float | None, last: float, now: float, limit: Limit, cost: int
) -> tuple[Decision, float]:
    """Check and spend `cost` tokens; returns the decision and the tokens now held.

    `tokens` None is a bucket never seen (full). The caller stores the new tokens with
    `now` as their timestamp (or `last`, if `now` went backwards: `max(last, now)`).
    """
    level = float(limit.burst) if tokens is None else refill(tokens, last, now, limit)
    if level + EPSILON >= cost:
        level = max(0.0, level - cost)
        allowed, retry = True, 0.0
    elif cost > limit.burst:
        allowed, retry = False, math.inf
    else:
        allowed, retry = False, (cost - level) / limit.rate
    remaining = math.floor(level + EPSILON)
    reset = max(0.0, (limit.burst - level) / limit.rate)
    return Decision(allowed, remaining, retry, reset), level
