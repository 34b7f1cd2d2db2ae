"""Process model: one process, or a supervisor with N workers.

`--workers 1` (the default) runs everything in one process: proxy listeners, admin
listener, optional demo upstreams. With N > 1 the supervisor runs the admin listener
and the demo upstreams and starts N worker processes (spawned, not forked, so no
event-loop state is shared); each binds the proxy ports itself with SO_REUSEPORT,
so the kernel spreads connections across them, and each watches the config file.
Bans: in one process the admin API reaches the worker's bans; with N workers only
bans shared through Redis can be listed and lifted (see gateway/admin/app.py).
The supervisor forwards SIGHUP (reload) and SIGTERM (drain, stop) to every worker,
restarts a worker that dies unexpectedly, and reports ready when all have said so.
Metrics: `run` points prometheus-client's multiprocess mode at a fresh directory
before anything is served (removed at exit); the admin listener merges it, and a
worker that dies is marked dead there (its live gauges dropped, counters kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from gateway.admin.app import make_admin_app, start_admin
from gateway.config.load import config_hash, load_config
from gateway.config.model import Config
from gateway.errors import ConfigErrors
from gateway.observability.metrics import disable_multiprocess, enable_multiprocess, mark_dead
from gateway.store.bans import BanStore
from gateway.worker import ListenError, Worker

log = logging.getLogger("gateway.supervisor")


def event_loop_runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


async def run_single(path: Path, config: Config, demo: bool) -> None:
    from gateway.demo import start_demo_upstreams

    demos = await start_demo_upstreams(config) if demo else []
    worker = Worker(path)
    worker.install_signals()
    await worker.start()

    def status() -> dict[str, Any]:
        return {
            "ready": worker.ready,
            "workers": 1,
            "config_hash": worker.runtime.config_hash,
            "reloads": {"ok": worker.reloads.ok, "failed": worker.reloads.failed},
            "last_reload_errors": worker.reloads.last_errors,
        }

    admin = None
    if config.admin.enabled:
        app = make_admin_app(
            status, rollouts=lambda: worker.runtime.rollouts, bans=lambda: worker.runtime.bans
        )
        admin = await start_admin(app, config.admin.host, config.admin.port)
    try:
        await worker.serve_until_stopped()
    finally:
        if admin is not None:
            await admin.cleanup()
        for runner in demos:
            await runner.cleanup()


def worker_main(path: str, worker_id: int, ready: MpEvent, log_level: str) -> None:
    from gateway.cli import setup_logging

    setup_logging(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop

    async def main() -> None:
        worker = Worker(path, worker_id=worker_id)
        worker.on_ready = ready.set
        worker.install_signals()
        await worker.start()
        await worker.serve_until_stopped()

    with event_loop_runner() as runner:
        runner.run(main())


class Supervisor:
    def __init__(self, path: Path, config: Config, workers: int, log_level: str) -> None:
        self.path = path
        self.config = config
        self.n = workers
        self.log_level = log_level
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = [None] * workers
        self.ready: list[MpEvent] = [self.ctx.Event() for _ in range(workers)]
        self.stopping = False
        self.config_hash = config_hash(path)

    def spawn(self, i: int) -> None:
        self.ready[i].clear()
        p = self.ctx.Process(
            target=worker_main,
            args=(str(self.path), i, self.ready[i], self.log_level),
            name=f"gateway-worker-{i}",
        )
        p.start()
        self.procs[i] = p
        log.info("worker %d started (pid %d)", i, p.pid)

    def status(self) -> dict[str, Any]:
        alive = [p is not None and p.is_alive() for p in self.procs]
        ready = [a and e.is_set() for a, e in zip(alive, self.ready, strict=True)]
        return {
            "ready": all(ready) and not self.stopping,
            "workers": self.n,
            "workers_ready": sum(ready),
            "config_hash": self.config_hash,
        }

    def signal_all(self, sig: int) -> None:
        for p in self.procs:
            if p is not None and p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, sig)

    def on_hup(self) -> None:
        with contextlib.suppress(OSError):
            self.config_hash = config_hash(self.path)
        self.signal_all(signal.SIGHUP)

    async def run(self, demo: bool) -> None:
        from gateway.demo import start_demo_upstreams

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, self.on_hup)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        demos = await start_demo_upstreams(self.config) if demo else []
        for i in range(self.n):
            self.spawn(i)
        admin = None
        # Bans shared through Redis can be listed and lifted from here (a store of our
        # own, never synced in the background); per-worker memory bans cannot (501).
        bans = BanStore.for_config(self.config)
        if bans is not None and bans.redis is None:
            bans = None
        if self.config.admin.enabled:
            app = make_admin_app(self.status, bans=(lambda: bans) if bans is not None else None)
            admin = await start_admin(app, self.config.admin.host, self.config.admin.port)
        restarts: list[float] = []
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                for i, p in enumerate(self.procs):
                    if not stop.is_set() and p is not None and not p.is_alive():
                        log.error("worker %d exited with %s; restarting", i, p.exitcode)
                        if p.pid is not None:
                            mark_dead(p.pid)
                        restarts = [t for t in restarts if time.monotonic() - t < 10] + [
                            time.monotonic()
                        ]
                        if len(restarts) > 5 * self.n:
                            log.critical("workers keep dying; giving up")
                            stop.set()
                            break
                        self.spawn(i)
        finally:
            self.stopping = True
            self.signal_all(signal.SIGTERM)
            deadline = time.monotonic() + self.config.server.shutdown_timeout + 5
            for p in self.procs:
                if p is None:
                    continue
                while p.is_alive() and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # a child process: nothing to await on
                if p.is_alive():
                    log.error("worker pid %d did not stop in time; killing", p.pid)
                    p.kill()
                p.join(1)
                if p.pid is not None:
                    mark_dead(p.pid)
            if admin is not None:
                await admin.cleanup()
            if bans is not None:
                await bans.retire(None)
            for runner in demos:
                await runner.cleanup()


def run(path: str | Path, *, workers: int | None, demo: bool, log_level: str) -> int:

    path = Path(path)
    try:
        config = load_config(path)
    except ConfigErrors as exc:
        print(exc, file=sys.stderr)
        return 2
    n = workers if workers is not None else config.workers
    # Metrics: every process (this one, spawned workers) writes to a fresh directory
    # that the admin listener's /metrics merges; set before any metric value exists.
    metrics_dir = enable_multiprocess()
    try:
        with event_loop_runner() as runner:
            if n <= 1:
                runner.run(run_single(path, config, demo))
            else:
                runner.run(Supervisor(path, config, n, log_level).run(demo))
    except ListenError as exc:
        log.critical("%s", exc)
        return 1
    except ConfigErrors as exc:  # files the config names (certificates) failed to load
        print(exc, file=sys.stderr)
        return 2
    finally:
        disable_multiprocess(metrics_dir)
    return 0
