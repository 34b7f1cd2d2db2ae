"""Bulkhead per upstream: at most `max_concurrent` requests in flight, `max_queued` waiting.

A request takes a slot before it picks an endpoint and gives it back when its
response ends (body streamed, or failed): `UpstreamResponse.when_done`. Past the
limit it waits in FIFO order, at most `max_queued` of them, for at most
`queue_timeout_s`; past the queue, or after that wait, the answer is 503 at once,
so one slow service cannot take every worker's capacity from the others.

A freed slot is handed straight to the first waiter (no barging), as the pool does.
`enter()` is the fast path: one compare and one increment.
"""

from __future__ import annotations

import asyncio
from collections import deque


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class Bulkhead:
    __slots__ = (
        "_waiters",
        "active",
        "admitted",
        "max_concurrent",
        "max_queued",
        "queue_timeout_s",
        "rejected",
    )

    def __init__(self, max_concurrent: int, max_queued: int = 0, queue_timeout_s: float = 1.0):
        if max_concurrent < 1 or max_queued < 0 or queue_timeout_s <= 0:
            raise ValueError("max_concurrent >= 1, max_queued >= 0, queue_timeout_s > 0")
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.active = 0
        self.admitted = 0
        self.rejected = 0  # 503s: queue full or queue wait over
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def enter(self) -> bool:
        """Take a slot if one is free now."""
        if self.active < self.max_concurrent:
            self.active += 1
            self.admitted += 1
            return True
        return False

    async def wait(self) -> bool:
        """Queue for a slot; False (counted) when the queue is full or the wait ran out."""
        if self.queued >= self.max_queued:
            self.rejected += 1
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(fut)
        timer = loop.call_later(self.queue_timeout_s, _expire, fut)
        try:
            granted = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.leave()  # granted just as we were cancelled: pass it on
            raise
        finally:
            timer.cancel()
        if not granted:
            self.rejected += 1
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(True)  # the slot passes to the waiter: active unchanged
                return
        self.active -= 1

    def __repr__(self) -> str:
        return (
            f"<Bulkhead active={self.active}/{self.max_concurrent} "
            f"queued={self.queued}/{self.max_queued} rejected={self.rejected}>"
        )
