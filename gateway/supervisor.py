"""Process model: one process, or a supervisor with N workers.

`--workers 1` (the default) runs everything in one process: proxy listeners, admin
listener, optional demo upstreams. With N > 1 the supervisor runs the admin listener
and the demo upstreams and starts N worker processes (spawned, not forked, so no
event-loop state is shared); each binds the proxy ports itself with SO_REUSEPORT,
so the kernel spreads connections across them, and each watches the config file.
Admin: in one process the admin API acts on the worker in-process; with N workers
each worker serves a control socket in a private run directory (0700) and the
supervisor's admin API fans every operation out to them (gateway/admin/fanout.py).
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
import resource
import shutil
import signal
import sys
import tempfile
import time
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from gateway.admin.app import make_admin_app, resolve_token, start_admin
from gateway.admin.control import LocalControl, Target
from gateway.admin.fanout import FanoutControl, socket_path, start_control
from gateway.admin.ops import WorkerOps
from gateway.config.load import load_config
from gateway.config.model import Config
from gateway.errors import ConfigErrors
from gateway.observability.metrics import disable_multiprocess, enable_multiprocess, mark_dead
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

    token = resolve_token(config.admin, str(path))  # before serving: a bad file stops us
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
        app = make_admin_app(status, control=LocalControl(WorkerOps(worker)), token=token)
        admin = await start_admin(app, config.admin.host, config.admin.port)
    try:
        await worker.serve_until_stopped()
    finally:
        if admin is not None:
            await admin.cleanup()
        for runner in demos:
            await runner.cleanup()


def worker_main(
    path: str, worker_id: int, ready: MpEvent, log_level: str, control_path: str | None = None
) -> None:
    from gateway.cli import setup_logging

    setup_logging(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop

    async def main() -> None:
        worker = Worker(path, worker_id=worker_id)
        worker.install_signals()
        await worker.start()
        control = None
        if control_path is not None:  # the admin API's way in (gateway/admin/fanout.py)
            control = await start_control(WorkerOps(worker), control_path)
        ready.set()
        try:
            await worker.serve_until_stopped()
        finally:
            if control is not None:
                await control.cleanup()

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
        self.run_dir: str | None = None  # private (0700): the workers' control sockets

    def spawn(self, i: int) -> None:
        self.ready[i].clear()
        p = self.ctx.Process(
            target=worker_main,
            args=(str(self.path), i, self.ready[i], self.log_level, self.control_path(i)),
            name=f"gateway-worker-{i}",
        )
        p.start()
        self.procs[i] = p
        log.info("worker %d started (pid %d)", i, p.pid)

    def control_path(self, i: int) -> str | None:
        return socket_path(self.run_dir, i) if self.run_dir is not None else None

    def control_targets(self) -> list[Target]:
        """The workers the admin API can ask now: alive, ready, with a socket."""
        out = []
        for i, (p, ready) in enumerate(zip(self.procs, self.ready, strict=True)):
            path = self.control_path(i)
            if p is not None and p.pid is not None and p.is_alive() and ready.is_set() and path:
                out.append(Target(i, p.pid, path))
        return out

    def status(self) -> dict[str, Any]:
        alive = [p is not None and p.is_alive() for p in self.procs]
        ready = [a and e.is_set() for a, e in zip(alive, self.ready, strict=True)]
        return {
            "ready": all(ready) and not self.stopping,
            "workers": self.n,
            "workers_ready": sum(ready),
            # No config hash here: workers reload by themselves (file watch, the admin
            # API), so only they know what they serve; /api/status asks each of them.
        }

    def signal_all(self, sig: int) -> None:
        for p in self.procs:
            if p is not None and p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, sig)

    def on_hup(self) -> None:
        self.signal_all(signal.SIGHUP)

    async def run(self, demo: bool) -> None:
        from gateway.demo import start_demo_upstreams

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, self.on_hup)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        token = resolve_token(self.config.admin, str(self.path))
        demos = await start_demo_upstreams(self.config) if demo else []
        self.run_dir = tempfile.mkdtemp(prefix="gateway-run-")  # mode 0700 by mkdtemp
        os.chmod(self.run_dir, 0o700)
        for i in range(self.n):
            self.spawn(i)
        admin = None
        if self.config.admin.enabled:
            control = FanoutControl(self.control_targets)
            app = make_admin_app(self.status, control=control, token=token)
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
            if self.run_dir is not None:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            for runner in demos:
                await runner.cleanup()


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the open-file soft limit to the hard one (often 1024 -> 1M on Linux): every
    client and upstream connection is a descriptor, and 1024 would cap a public edge at
    a few hundred idle keep-alive clients. Workers inherit it (spawn keeps rlimits)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or (hard != unlimited and soft >= hard):
        return soft, hard
    target = hard if hard != unlimited else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft, hard
    return target, hard


def run(path: str | Path, *, workers: int | None, demo: bool, log_level: str) -> int:
    raise_nofile_limit()

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
