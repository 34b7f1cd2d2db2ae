"""The access log: one JSON line per request, written off the event loop.

How: `Handler.handle` (server.py) tests one attribute (`handler.access_log`, None
when the log is off) and, when it is on, calls `AccessLog.record`, which draws the
sample and appends a tuple of the raw values (time.time() included) to a deque:
~0.4 us on the event loop. A daemon thread per worker wakes every DRAIN_INTERVAL_S
(sooner when WAKE_LINES wait), takes everything queued, makes the lines (time stamp
with the per-second part cached, a dict, orjson) into one buffer and writes it:

- a regular file (opened O_APPEND) gets one `os.write` per batch of whole lines:
  with O_APPEND the kernel moves to the end and writes under the inode lock, so the
  batches of several workers appending to one file never interleave inside a line;
- a pipe or terminal (stdout) gets writes of at most PIPE_BUF bytes, each cut at a
  line end: POSIX makes writes up to PIPE_BUF atomic on a pipe, larger ones may
  interleave with other writers' (a line longer than PIPE_BUF goes in one write of
  its own, the best that can be done).

The event loop never waits on the disk: the deque is bounded by `max_queued_lines`
(checked before the append); a full queue drops the line and counts it (STATS, then
gateway_access_log_dropped_total). `deque.append` and `popleft` are atomic, so the
loop and the writer thread share the deque without a lock.

Cost (bench/proxy_cpu.py --access-log against without): about 1-2 us of CPU per
request, writer included (it was ~10 us when the loop built and encoded each line
and the writer joined hundreds of held bytes objects: allocator churn, see _encode).

Fields (absent, null, when they do not apply): time (RFC 3339, UTC, milliseconds),
request_id, client (the resolved client address), method, path (the raw path; with
`include_query`, its query too), status, bytes_in (request body bytes received),
bytes_out (response body bytes: the in-memory body, the announced Content-Length
of a streamed one, or the bytes relayed for one without), duration_ms, route,
upstream, endpoint, version, region, cache (the Cache-Status outcome: hit, miss,
stale, ...), rate_limit (allowed, limited, shadow, store_error) and screening
(passed, blocked, shadow).

Rotation: a reload (SIGHUP) reopens the file, so `logrotate` with a postrotate
`kill -HUP` (or `copytruncate`) works.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
import time
from collections import deque
from random import random
from typing import TYPE_CHECKING, Any

import orjson

from gateway.errors import ConfigError, ConfigErrors

if TYPE_CHECKING:
    from gateway.config.accesslog_model import AccessLog as AccessLogConfig

__all__ = ["STATS", "AccessLog", "AccessLogStats", "cache_outcome", "rfc3339"]

DRAIN_INTERVAL_S = 0.05
WAKE_LINES = 1024  # lines queued that wake the writer before its interval
MAX_BATCH_LINES = 16_384  # lines taken from the queue per batch
PIPE_BUF = getattr(os, "PIPE_BUF", None) or 4096  # select.PIPE_BUF on Linux: 4096
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]  # the stamp's tail, made once
_now = time.time

# What `record` queues: time (s since the epoch), request_id, client, method, path,
# status, bytes_in, bytes_out, seconds, route, upstream, endpoint, version, region,
# cache, rate_limit, screening.
Row = tuple[Any, ...]


class AccessLogStats:
    """Lines written and dropped by this process (exported by features.py). Each
    field has one writing thread: `dropped` the event loop's, the rest the writer's."""

    __slots__ = ("dropped", "lines", "lost", "write_errors")

    def __init__(self) -> None:
        self.lines = 0
        self.dropped = 0  # the queue was full
        self.lost = 0  # a write failed (disk full, closed pipe)
        self.write_errors = 0

    def __repr__(self) -> str:
        return f"<AccessLogStats lines={self.lines} dropped={self.dropped} lost={self.lost}>"


STATS = AccessLogStats()


class _Clock:
    """RFC 3339 UTC timestamps, the date-time part formatted once per second (the
    writer thread's: lines come in time order, so the cache nearly always hits)."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def stamp(self, t: float) -> str:
        second = int(t)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self.prefix + _MILLIS[int((t - second) * 1000)]

    def __repr__(self) -> str:
        return f"<_Clock {self.prefix!r}>"


def rfc3339(t: float) -> str:
    second = int(t)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{stamp}.{int((t - second) * 1000):03d}Z"


def cache_outcome(cache_status: str) -> str:
    """The Cache-Status (RFC 9211) the cache filter wrote, as one word: hit, stale,
    revalidated, miss or bypass."""
    parts = cache_status.split("; ")
    what = parts[1] if len(parts) > 1 else ""
    if what == "hit":
        return "stale" if "detail=stale-while-revalidate" in cache_status else "hit"
    if not what.startswith("fwd="):
        return what or "unknown"
    fwd = what[4:]
    if fwd in ("method", "request", "bypass"):
        return "bypass"
    if "detail=stale-if-error" in cache_status:
        return "stale"
    if fwd == "stale" and "fwd-status=304" in cache_status:
        return "revalidated"
    return "miss"


def _open(output: str) -> tuple[int, bool]:
    """(fd, whether this log owns it) for 'stdout' or a file path; OSError if not."""
    if output == "stdout":
        return sys.stdout.fileno(), False
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    return fd, True


class AccessLog:
    """One worker's access log: sampling, line encoding, the queue and its writer."""

    __slots__ = (
        "_clock",
        "_closing",
        "_fd",
        "_owns_fd",
        "_queue",
        "_reopen",
        "_thread",
        "_wake",
        "config",
        "errors",
        "include_query",
        "max_lines",
        "rate",
        "regular",
    )

    def __init__(self, config: AccessLogConfig) -> None:
        self.config = config
        self.rate = 1.0 if config.mode == "full" else config.sample_rate
        self.errors = config.always_log_errors
        self.include_query = config.include_query
        self.max_lines = config.max_queued_lines
        try:
            self._fd, self._owns_fd = _open(config.output)
        except OSError as exc:
            raise ConfigErrors(
                "access_log", [ConfigError("access_log.output", f"cannot open: {exc}")]
            ) from None
        self.regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._queue: deque[Row] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._reopen = False
        self._clock = _Clock()
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, config: AccessLogConfig) -> AccessLog | None:
        """The log for `config`, None when it is off; ConfigErrors if the file fails."""
        return cls(config) if config.enabled else None

    # -- the event loop's side ----------------------------------------------------------

    def record(
        self,
        *,
        request_id: str,
        client: str,
        method: str,
        path: str,
        query: str,
        status: int,
        bytes_in: int,
        bytes_out: int | None,
        seconds: float,
        route: str | None,
        state: dict[str, Any] | None,
        region: str | None,
        cache: str | None,
    ) -> None:
        if self.rate < 1.0 and random() >= self.rate and not (self.errors and status >= 500):
            return
        queue = self._queue
        if len(queue) >= self.max_lines:
            STATS.dropped += 1
            return
        if self.include_query and query:
            path = f"{path}?{query}"
        # A tuple of the raw values: the dict, the time stamp and the JSON are made by
        # the writer thread, a batch at a time (off the event loop's path).
        if state:
            endpoint = state.get("endpoint")
            queue.append((
                _now(), request_id, client, method, path, status, bytes_in, bytes_out,
                seconds, route, state.get("upstream"),
                endpoint.key if endpoint is not None else None, state.get("version"),
                region, cache, state.get("ratelimit"), state.get("screening_outcome"),
            ))  # fmt: skip
        else:
            queue.append((
                _now(), request_id, client, method, path, status, bytes_in, bytes_out,
                seconds, route, None, None, None, region, cache, None, None,
            ))  # fmt: skip
        if len(queue) == WAKE_LINES:
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------

    def reopen(self) -> None:
        """Open the file again at the writer's next batch (after log rotation)."""
        self._reopen = True
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, stop the thread, close the file (blocks: use a thread)."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout_s)
        if self._owns_fd:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    # -- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait(DRAIN_INTERVAL_S)
            self._wake.clear()
            if self._reopen:
                self._reopen = False
                self._do_reopen()
            closing = self._closing
            while queue:
                self._write_batch(queue)
            if closing:
                return

    def _do_reopen(self) -> None:
        if not self._owns_fd:
            return
        try:
            fd, _ = _open(self.config.output)
        except OSError as exc:
            STATS.write_errors += 1
            print(f"access log: cannot reopen {self.config.output}: {exc}", file=sys.stderr)
            return
        old, self._fd = self._fd, fd
        self.regular = stat.S_ISREG(os.fstat(fd).st_mode)
        with contextlib.suppress(OSError):
            os.close(old)

    def _encode(self, queue: deque[Row], n_rows: int) -> bytearray:
        """The JSON lines of the first `n_rows` queued (a dict each, keys in the
        documented order), taken off the queue. Each line is added to one buffer as
        soon as it is made: holding hundreds of small bytes objects until a join costs
        several times more (allocator churn) than the encoding itself."""
        stamp = self._clock.stamp
        dumps = orjson.dumps
        nl = orjson.OPT_APPEND_NEWLINE
        pop = queue.popleft
        data = bytearray()
        for _ in range(n_rows):
            (
                t, rid, client, method, path, status, bytes_in, bytes_out, seconds, route,
                upstream, endpoint, version, region, cache, rate_limit, screening,
            ) = pop()  # fmt: skip
            data += dumps(
                {
                    "time": stamp(t),
                    "request_id": rid,
                    "client": client,
                    "method": method,
                    "path": path,
                    "status": status,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    # n / 1000 for an integer n prints as n's 3-decimal form
                    "duration_ms": int(seconds * 1e6 + 0.5) / 1000,
                    "route": route,
                    "upstream": upstream,
                    "endpoint": endpoint,
                    "version": version,
                    "region": region,
                    "cache": cache,
                    "rate_limit": rate_limit,
                    "screening": screening,
                },
                option=nl,
            )
        return data

    def _write_batch(self, queue: deque[Row]) -> None:
        """Write what is queued now: a regular file in one write (whole lines), a pipe
        in writes of at most PIPE_BUF bytes cut at line ends."""
        n_rows = min(len(queue), MAX_BATCH_LINES)
        data = self._encode(queue, n_rows)
        if self.regular:
            self._write(data, n_rows)
            return
        view = memoryview(data)
        start, size = 0, len(data)
        while start < size:
            end = data.rfind(b"\n", start, start + PIPE_BUF) + 1
            if end <= start:  # a line longer than PIPE_BUF: in a write of its own
                end = data.index(b"\n", start) + 1
            self._write(view[start:end], data.count(b"\n", start, end))
            start = end

    def _write(self, data: bytearray | memoryview, n_lines: int) -> None:
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            STATS.write_errors += 1
            STATS.lost += n_lines
            if STATS.write_errors == 1 or STATS.write_errors % 1000 == 0:
                print(f"access log: write failed: {exc}", file=sys.stderr)
            return
        STATS.lines += n_lines

    def __repr__(self) -> str:
        return (
            f"<AccessLog {self.config.mode} rate={self.rate:g} -> {self.config.output} "
            f"queued={len(self._queue)} {STATS!r}>"
        )
