"""Per-version request stats: counts, 5xx and a fixed-bucket latency histogram.

The forwarder calls `record(status, latency_s)` once per request (a bisect over 18
bounds and three adds, nothing allocated). Counters only grow; the rollout
controller takes a `snapshot()` when a hold window starts and judges `since(start)`,
the difference, so no request path ever resets anything and a reload that keeps
the object keeps its counts.

p99 is read from the histogram as the upper bound of the bucket holding the 99th
percentile: it over-estimates by at most one bucket's width, never under-estimates
(the safe side for a gate). Latency is to the response head, on the event loop's
clock (real time, also under a fake clock: it is a measurement, not a schedule).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

__all__ = ["LATENCY_BOUNDS_S", "VersionStats", "Window"]

LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, math.inf,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Window:
    """What a version did between two snapshots."""

    requests: int = 0
    errors: int = 0
    buckets: tuple[int, ...] = (0,) * len(LATENCY_BOUNDS_S)

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile `q` (0.0 without requests)."""
        if not self.requests:
            return 0.0
        need = math.ceil(q * self.requests)
        seen = 0
        for bound, n in zip(LATENCY_BOUNDS_S, self.buckets, strict=True):
            seen += n
            if seen >= need:
                return bound
        return math.inf

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    def __sub__(self, other: Window) -> Window:
        return Window(
            self.requests - other.requests,
            self.errors - other.errors,
            tuple(a - b for a, b in zip(self.buckets, other.buckets, strict=True)),
        )


class VersionStats:
    __slots__ = ("buckets", "errors", "name", "requests")

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0
        self.errors = 0  # 5xx answers, gateway-made ones included (no endpoint, timeout)
        self.buckets = [0] * len(LATENCY_BOUNDS_S)

    def record(self, status: int, latency_s: float) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        self.buckets[bisect.bisect_left(LATENCY_BOUNDS_S, latency_s)] += 1

    def snapshot(self) -> Window:
        return Window(self.requests, self.errors, tuple(self.buckets))

    def __repr__(self) -> str:
        return f"<VersionStats {self.name} requests={self.requests} errors={self.errors}>"
