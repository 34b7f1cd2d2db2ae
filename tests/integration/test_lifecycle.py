"""The gateway as operators run it: a subprocess, signals, reloads, big bodies."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.support import (
    GatewayProcess,
    free_port,
    gateway_config,
    serve_app,
    upstream_app,
    write_config,
)

MB = 1024 * 1024


def base_config(up_port: int, port: int, admin: int, extra_routes: int = 0, **kw: Any) -> Any:
    routes: list[dict[str, Any]] = [
        {
            "name": f"new-{i}",
            "match": {"path": {"prefix": f"/new-{i}"}},
            "rewrite": {"prefix": f"/via-new-{i}"},
            "upstream": "up",
        }
        for i in range(extra_routes)
    ]
    routes.append({"name": "all", "match": {"path": {"prefix": "/"}}, "upstream": "up"})
    return gateway_config(
        port=port,
        admin_port=admin,
        upstreams={"up": [f"http://127.0.0.1:{up_port}"]},
        routes=routes,
        **kw,
    )


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path, config: dict[str, Any], workers: int = 1
) -> AsyncIterator[GatewayProcess]:
    path = tmp_path / "gateway.yaml"
    write_config(path, config)
    port = int(config["listeners"][0]["address"].rsplit(":", 1)[1])
    admin = int(config["admin"]["address"].rsplit(":", 1)[1])
    gw = GatewayProcess(path, port, admin, workers)
    try:
        await gw.wait_ready()
        yield gw
    finally:
        await asyncio.to_thread(gw.stop)


@pytest.fixture
async def up() -> AsyncIterator[int]:
    async with serve_app(upstream_app("up")) as port:
        yield port


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
async def test_reload_under_load_drops_nothing(tmp_path: Path, up: int, workers: int) -> None:
    port, admin = free_port(), free_port()
    config = base_config(up, port, admin, workers=workers)
    async with running_gateway(tmp_path, config, workers) as gw:
        failures: list[str] = []
        done = 0
        stop = asyncio.Event()

        async def client(s: aiohttp.ClientSession) -> None:
            nonlocal done
            while not stop.is_set() and done < 2000:
                try:
                    async with s.get(gw.url + "/steady") as r:
                        await r.read()
                        if r.status != 200:
                            failures.append(f"status {r.status}")
                except aiohttp.ClientError as exc:
                    failures.append(repr(exc))
                done += 1

        async with aiohttp.ClientSession() as s:
            clients = [asyncio.create_task(client(s)) for _ in range(8)]
            for i in range(1, 11):
                write_config(gw.config_path, base_config(up, port, admin, i, workers=workers))
                # New routes take effect: /new-{i-1} answers through its own route
                # in every worker (each connection may land on any worker).
                deadline = time.monotonic() + 10
                while True:
                    oks = 0
                    for _ in range(2 * workers):
                        async with (
                            aiohttp.ClientSession() as fresh,  # new conn: any worker
                            fresh.get(gw.url + f"/new-{i - 1}?probe") as r,
                        ):
                            oks += r.status == 200 and (await r.json())["path"].startswith(
                                f"/via-new-{i - 1}"
                            )
                    if oks == 2 * workers:
                        break
                    assert time.monotonic() < deadline, gw.log()
                    await asyncio.sleep(0.05)
            await asyncio.gather(*clients)
        assert done >= 2000
        assert failures == []
        # Every worker ended on the final file (a worker may fold two quick edits
        # into one reload, so count workers at the final hash, not reload lines).
        # The probes may all have landed on one worker (SO_REUSEPORT picks): give the
        # others a bounded moment to log their own last reload.
        final = hashlib.sha256(gw.config_path.read_bytes()).hexdigest()[:12]
        deadline = time.monotonic() + 10
        while True:
            log = gw.log()
            pids = set(re.findall(rf"\[(\d+)\] config reloaded: \w+ -> {final}", log))
            if len(pids) == workers or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert len(pids) == workers, log
        assert log.count("config reloaded") >= 10


async def test_invalid_reload_keeps_old_config(tmp_path: Path, up: int) -> None:
    port, admin = free_port(), free_port()
    async with running_gateway(tmp_path, base_config(up, port, admin)) as gw:
        gw.config_path.write_text(
            gw.config_path.read_text().replace("upstream: up", "upstream: nowhere", 1)
            + "bogus_key: 1\n"
        )
        gw.signal(signal.SIGHUP)
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 10
            while "reload rejected" not in gw.log():
                assert time.monotonic() < deadline, gw.log()
                await asyncio.sleep(0.05)
            async with s.get(gw.url + "/still-works") as r:
                assert r.status == 200
            async with s.get(f"http://127.0.0.1:{admin}/readyz") as r:
                st = await r.json()
        assert st["reloads"]["failed"] >= 1
        errors = "\n".join(st["last_reload_errors"])
        assert "routes[0].upstream: unknown upstream 'nowhere'" in errors
        assert "bogus_key" in errors
        assert "routes[0].upstream" in gw.log()


async def test_sigterm_lets_in_flight_request_finish(tmp_path: Path, up: int) -> None:
    port, admin = free_port(), free_port()
    async with running_gateway(tmp_path, base_config(up, port, admin)) as gw:
        async with aiohttp.ClientSession() as s:
            slow = asyncio.create_task(s.get(gw.url + "/slow?delay=1.5"))
            await asyncio.sleep(0.4)
            gw.signal(signal.SIGTERM)
            r = await slow
            assert r.status == 200
            assert await r.text() == "slept 1.5"
            r.release()
        assert await asyncio.to_thread(gw.proc.wait, 10) == 0
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as s, s.get(gw.url + "/x"):
                pass


async def test_two_workers_share_the_port(tmp_path: Path, up: int) -> None:
    port, admin = free_port(), free_port()
    async with running_gateway(tmp_path, base_config(up, port, admin), workers=2) as gw:
        children = [
            c
            for c in psutil.Process(gw.proc.pid).children()
            if "resource_tracker" not in " ".join(c.cmdline())
        ]
        assert len(children) == 2
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{admin}/readyz") as r:
            assert (await r.json())["workers_ready"] == 2
        for _ in range(20):
            async with aiohttp.ClientSession() as s, s.get(gw.url + "/x") as r:
                assert r.status == 200


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        self.max_rss = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.max_rss = max(self.max_rss, max(p.memory_info().rss for p in self.procs))
            await asyncio.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_200mb_streams_each_way_in_bounded_memory(tmp_path: Path, up: int) -> None:
    port, admin = free_port(), free_port()
    size = 200 * MB
    async with running_gateway(tmp_path, base_config(up, port, admin)) as gw:
        chunk = b"z" * MB

        async def body() -> AsyncIterator[bytes]:
            for _ in range(size // MB):
                yield chunk

        timeout = aiohttp.ClientTimeout(total=120)
        with RssSampler(gw.proc.pid) as rss:
            async with aiohttp.ClientSession(timeout=timeout) as s:
                async with s.post(gw.url + "/upload", data=body()) as r:
                    assert r.status == 200
                    assert (await r.json())["body_bytes"] == size
                got = 0
                async with s.get(gw.url + f"/bytes/{size}") as r:
                    assert r.status == 200
                    async for part in r.content.iter_any():
                        got += len(part)
                assert got == size
        assert rss.max_rss < 150 * MB, f"gateway RSS peaked at {rss.max_rss / MB:.0f} MB"


async def test_dead_worker_is_replaced(tmp_path: Path, up: int) -> None:
    port, admin = free_port(), free_port()
    async with running_gateway(tmp_path, base_config(up, port, admin), workers=2) as gw:
        workers = [
            c
            for c in psutil.Process(gw.proc.pid).children()
            if "resource_tracker" not in " ".join(c.cmdline())
        ]
        workers[0].kill()
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as s:
            while True:
                async with s.get(f"http://127.0.0.1:{admin}/readyz") as r:
                    st = await r.json()
                alive = [c.pid for c in psutil.Process(gw.proc.pid).children()]
                if r.status == 200 and st["workers_ready"] == 2 and workers[0].pid not in alive:
                    break
                assert time.monotonic() < deadline, gw.log()
                await asyncio.sleep(0.1)
            for _ in range(10):
                async with aiohttp.ClientSession() as fresh, fresh.get(gw.url + "/x") as r:
                    assert r.status == 200
        assert "restarting" in gw.log()
