"""Retry policy and the retry budget that keeps retries from multiplying an outage.

The budget (Envoy's `retry_budget`, Finagle's `RetryBudget`): over a rolling window,
retries may be at most `percent` of the requests plus a floor of
`min_retries_per_s` per second of window, so a quiet route can still retry now and
then. When every endpoint fails, each request may retry only while the budget
lasts; the load the service sees stays under (1 + percent/100) times the offered
load instead of (1 + attempts) times. A refused retry is counted (`exhausted`) and
the request ends with the failure it had.

`on_request` is called once per request that could retry (a rolling-window add);
`try_retry` on the cold path only, when a try failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.upstream.window import RollingPair


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 1  # extra tries after the first; 0: no retries on status or timeout
    per_try_timeout_s: float = 0.0  # 0: only the route's timeouts
    on_statuses: frozenset[int] = frozenset({502, 503, 504})
    budget_percent: float = 20.0
    min_retries_per_s: float = 3.0
    window_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.per_try_timeout_s < 0 or self.min_retries_per_s < 0:
            raise ValueError("attempts, per_try_timeout_s, min_retries_per_s must be >= 0")
        if not 0 <= self.budget_percent <= 100:
            raise ValueError("budget_percent must be within 0..100")


class RetryBudget:
    __slots__ = ("_floor", "_share", "_window", "exhausted", "policy", "requests", "retries")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._share = policy.budget_percent / 100.0
        self._floor = policy.min_retries_per_s * policy.window_s
        self._window = RollingPair(policy.window_s)  # (requests, retries)
        self.requests = 0  # ever, for metrics
        self.retries = 0
        self.exhausted = 0

    def on_request(self, now: float) -> None:
        self.requests += 1
        self._window.add(now, 1, 0)

    def try_retry(self, now: float) -> bool:
        """Take one retry from the budget; False (and counted) when it is spent."""
        requests, retries = self._window.totals(now)
        if retries + 1 > self._share * requests + self._floor:
            self.exhausted += 1
            return False
        self.retries += 1
        self._window.add(now, 0, 1)
        return True

    def __repr__(self) -> str:
        return (
            f"<RetryBudget {self.policy.budget_percent:g}% + {self.policy.min_retries_per_s:g}/s "
            f"window={self._window.b}/{self._window.a} retries={self.retries} "
            f"exhausted={self.exhausted}>"
        )
