"""Adaptive concurrency per upstream: a limit on requests in flight that follows latency.

The controller is Envoy's adaptive_concurrency "gradient controller" (itself after
Netflix's concurrency-limits), chosen over AIMD because it needs no latency target
from the operator: the target is the upstream's own latency when it is not queueing.

- min RTT: the latency of the upstream at low concurrency. It is measured when the
  limiter starts and then every `min_rtt_interval` (plus up to 10% jitter, so the
  workers of one host do not measure at once): for `min_rtt_requests` samples the
  limit is pinned to `min_limit`, and min RTT is their median. Pinning is what keeps
  min RTT honest: measured under load it would include queueing, and each new
  measurement would ratchet the target up (the drift gradient2 suffers from).
- The recent sample: the mean latency of the requests whose response head arrived
  within one `update_interval` window (the window is the smoothing).
- At the end of each window:
      gradient = clamp(min_rtt * (1 + buffer) / sample, 0.5, 2.0)
      limit    = clamp(gradient * limit (+ sqrt(limit) if gradient >= 1),
                       min_limit, max_limit)
  Latency at or below min RTT plus the buffer grows the limit; latency above it
  shrinks it (at most halving per window). The sqrt headroom lets the limit probe
  upwards while latency allows; it is left out while shrinking, so the limit can
  reach min_limit (with it, 0.5 * L + sqrt(L) stops falling at 4). At equilibrium
  the latency sits near min_rtt * (1 + buffer): the queueing the gateway lets build
  at the upstream stays bounded.
- The limit grows only while it is used: a window whose peak in flight stayed below
  half the limit leaves a higher limit unchanged (gradient2's app-limited rule), so a
  quiet period does not arm a huge limit for the next burst.

Latency is measured from admission (after the bulkhead) to the response head; the
slot is held until the body ends (as the bulkhead's). Timeouts and broken responses
are samples too (a slow upstream is the signal); a cancelled request or a connect
failure is not. Windows are closed lazily by the sample that arrives after their
end, so the limiter owns no task and costs nothing between requests.

Invariants: min_limit <= limit <= max_limit; `cap` (what admission compares with) is
int(limit), or min_limit while measuring; a request is admitted only while
in_flight < cap (in_flight may exceed a cap that just shrank; admission then waits
for it to drain). Over the cap: refused at once (the forwarder answers 503 with
Retry-After), counted, and logged at most once per LOG_EVERY_S per upstream.

Known gaps: the samples that open a measurement may still come from requests
admitted before it (the `_skip` count discards as many as were awaiting their head);
min RTT is per worker process, each measuring on its own; an upgraded connection
(WebSocket) samples its fast 101 and holds its slot for its whole life, as it does
the bulkhead's; while min RTT is measured the upstream gets at most min_limit
requests (for min_rtt_requests samples: ~40 ms at 5 ms and min_limit 3, but seconds
for a slow upstream), the price Envoy pays too for an honest baseline.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

from gateway.config.overload_model import AdaptiveConcurrency

__all__ = ["LOG_EVERY_S", "AdaptiveLimiter"]

log = logging.getLogger("gateway.adaptive")

LOG_EVERY_S = 5.0
JITTER = 0.1  # share of min_rtt_interval added at random to each measurement's time
MIN_GRADIENT, MAX_GRADIENT = 0.5, 2.0


class AdaptiveLimiter:
    """One upstream's adaptive concurrency limit (see the module note)."""

    __slots__ = (
        "_log_at",
        "_n",
        "_next_min_rtt",
        "_peak",
        "_pending",
        "_probe",
        "_refused_since_log",
        "_rng",
        "_skip",
        "_sum",
        "_window_end",
        "cap",
        "clock",
        "in_flight",
        "limit",
        "measuring",
        "min_rtt_s",
        "name",
        "rejected",
        "sample_rtt_s",
        "settings",
        "updates",
    )

    def __init__(
        self,
        name: str,
        settings: AdaptiveConcurrency,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock
        self._rng = rng
        self.limit = float(settings.min_limit)
        self.cap = settings.min_limit
        self.in_flight = 0
        self.min_rtt_s = 0.0  # unknown until the first measurement ends
        self.sample_rtt_s = 0.0
        self.rejected = 0
        self.updates = 0  # windows that recomputed the limit
        self._pending = 0  # admitted, response head not yet sampled
        self._peak = 0
        self._sum = 0.0
        self._n = 0
        now = clock()
        self._window_end = now + settings.update_interval
        self._next_min_rtt = now
        self._log_at = 0.0
        self._refused_since_log = 0
        self.measuring = False
        self._probe: list[float] = []
        self._skip = 0
        self._start_measuring()

    # -- the request path ---------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Admit one request if in flight is under the cap; else count the refusal."""
        if self.in_flight >= self.cap:
            self.rejected += 1
            self._refused()
            return False
        self.in_flight += 1
        self._pending += 1
        if self.in_flight > self._peak:
            self._peak = self.in_flight
        return True

    def sample(self, started: float) -> None:
        """The response head of a request admitted at `started` arrived (or it failed
        in a way that says something about the upstream: a timeout)."""
        now = self.clock()
        self._pending -= 1
        rtt = now - started
        if self.measuring:
            if self._skip > 0:
                self._skip -= 1  # admitted before the measurement: under the old limit
                return
            self._probe.append(rtt)
            if len(self._probe) >= self.settings.min_rtt_requests:
                self._finish_measuring(now)
            return
        self._sum += rtt
        self._n += 1
        if now >= self._window_end:
            self._update(now)

    def unsampled(self) -> None:
        """The request ends without a latency sample (cancelled, connect failure)."""
        self._pending -= 1

    def release(self) -> None:
        """The request's slot is free (its response ended, or it failed)."""
        self.in_flight -= 1

    # -- the controller -----------------------------------------------------------------

    def _update(self, now: float) -> None:
        s = self.settings
        sample = self._sum / self._n
        self._sum, self._n = 0.0, 0
        self.sample_rtt_s = sample
        peak, self._peak = self._peak, self.in_flight
        self._window_end = now + s.update_interval
        if now >= self._next_min_rtt:
            self._start_measuring()
            return
        self.updates += 1
        limit = self.limit
        gradient = self.min_rtt_s * (1.0 + s.buffer) / sample if sample > 0 else MAX_GRADIENT
        gradient = min(MAX_GRADIENT, max(MIN_GRADIENT, gradient))
        new = gradient * limit
        if gradient >= 1.0:
            new += math.sqrt(limit)  # headroom: probe upwards while latency allows
        if new > limit and peak < limit / 2:
            new = limit  # not used: no reason to believe more would be fine
        self.limit = min(float(s.max_limit), max(float(s.min_limit), new))
        self.cap = int(self.limit)

    def _start_measuring(self) -> None:
        self.measuring = True
        self.cap = self.settings.min_limit
        self._probe = []
        self._skip = self._pending

    def _finish_measuring(self, now: float) -> None:
        s = self.settings
        probe = sorted(self._probe)
        self._probe = []
        self.min_rtt_s = probe[len(probe) // 2]
        self.measuring = False
        self.cap = int(self.limit)
        self._sum, self._n = 0.0, 0
        self._peak = self.in_flight
        self._window_end = now + s.update_interval
        self._next_min_rtt = now + s.min_rtt_interval * (1.0 + JITTER * self._rng())

    def _refused(self) -> None:
        self._refused_since_log += 1
        now = self.clock()
        if now >= self._log_at:
            log.warning(
                "upstream %s over its adaptive concurrency limit %d (min RTT %.1f ms, "
                "recent %.1f ms): %d request(s) refused since the last report",
                self.name,
                self.cap,
                self.min_rtt_s * 1000,
                self.sample_rtt_s * 1000,
                self._refused_since_log,
            )
            self._refused_since_log = 0
            self._log_at = now + LOG_EVERY_S

    def __repr__(self) -> str:
        state = "measuring" if self.measuring else "adapting"
        return (
            f"<AdaptiveLimiter {self.name} {state} limit={self.limit:.1f} cap={self.cap}"
            f" in_flight={self.in_flight} min_rtt={self.min_rtt_s * 1000:.1f}ms"
            f" sample={self.sample_rtt_s * 1000:.1f}ms rejected={self.rejected}>"
        )
