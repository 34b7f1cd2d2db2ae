"""A rolling window of two counters, in fixed time buckets.

The breaker counts (requests, failures) and the retry budget (requests, retries)
over the last `window_s` seconds. The window is `BUCKETS` buckets of `window_s /
BUCKETS` each, a ring indexed by `int(now / bucket_s)`; running totals are kept,
so `add()` is a division, a compare and four additions, and reading the totals is
free. Buckets are cleared lazily when time moves on: a quiet period of any length
costs at most `BUCKETS` steps. The window is therefore coarse by one bucket (the
oldest bucket is counted whole until it expires), as in Hystrix's rolling counters.

Time comes from the caller (`now`, seconds on any monotonic clock), so tests drive
it with a fake clock.
"""

from __future__ import annotations

BUCKETS = 10


class RollingPair:
    __slots__ = ("_a", "_b", "_bucket_s", "_idx", "a", "b")

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self._bucket_s = window_s / BUCKETS
        self._a = [0] * BUCKETS
        self._b = [0] * BUCKETS
        self._idx = 0  # absolute index of the newest bucket
        self.a = 0  # totals over the window
        self.b = 0

    def add(self, now: float, a: int, b: int) -> None:
        idx = int(now / self._bucket_s)
        if idx != self._idx:
            if idx < self._idx:  # a clock going backwards: count in the newest bucket
                idx = self._idx
            else:
                self._advance(idx)
        slot = idx % BUCKETS
        self._a[slot] += a
        self._b[slot] += b
        self.a += a
        self.b += b

    def totals(self, now: float) -> tuple[int, int]:
        """(a, b) over the window ending at `now`."""
        idx = int(now / self._bucket_s)
        if idx != self._idx:
            self._advance(idx)
        return self.a, self.b

    def clear(self) -> None:
        self._a = [0] * BUCKETS
        self._b = [0] * BUCKETS
        self.a = self.b = 0

    def _advance(self, idx: int) -> None:
        if idx < self._idx:
            return
        steps = min(idx - self._idx, BUCKETS)
        for i in range(idx - steps + 1, idx + 1):
            slot = i % BUCKETS
            self.a -= self._a[slot]
            self.b -= self._b[slot]
            self._a[slot] = 0
            self._b[slot] = 0
        self._idx = idx

    def __repr__(self) -> str:
        return f"<RollingPair a={self.a} b={self.b} window={self._bucket_s * BUCKETS:g}s>"
