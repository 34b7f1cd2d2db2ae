"""Idle keep-alive connections held by one gateway process, and what they cost (issue 12).

One run starts, on loopback only, each in its own process group (killed at the end):
- an upstream (this script with ``--serve-upstream``, aiohttp) answering a fixed body;
- the gateway (``python -m gateway run``, 1 worker, ``keepalive_timeout`` long enough
  to outlive the run) in front of it.

Then, in this process:
1. warm-up: ``--warm`` requests over a few connections; the gateway's RSS is read
   (psutil, the worker process) as *before*;
2. ``--connections`` clients connect (``--batch`` at a time), each sends one request,
   reads the answer and stays connected, idle, in keep-alive;
3. with all of them held, normal traffic: ``--clients`` closed-loop clients (aiohttp,
   their own keep-alive connections) for ``--duration`` s; every answer must be 200;
   its rate and p50/p99 are printed;
4. RSS *after*, the difference per idle connection, the gateway's open descriptors,
   and a check that the idle connections are still served: ``--probe`` of them send a
   second request and must get 200.

RLIMIT_NOFILE: this process raises its soft limit to the hard one (each idle client
is a descriptor here too); the gateway raises its own at start
(gateway/supervisor.py `raise_nofile_limit`). With a hard limit under connections +
a margin the run stops with the number to raise it to (``ulimit -Hn``, as root).

    .venv/bin/python bench/idle_connections.py                      # 10,000 idle
    .venv/bin/python bench/idle_connections.py --connections 1000 --duration 3  # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]  # no stubs installed
import yaml
from procs import free_port, start, stop, wait_ok

BODY = b'{"ok": true, "bench": "idle_connections"}'
REQUEST = b"GET /idle HTTP/1.1\r\nHost: bench\r\n\r\n"


def raise_nofile(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"open-file hard limit {hard} < {needed}: raise it (ulimit -Hn {needed})")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


# -- the upstream ------------------------------------------------------------------------


def serve_upstream(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# -- processes -----------------------------------------------------------------------------


def gateway_config(port: int, admin: int, upstream: int) -> dict[str, Any]:
    return {
        "listeners": [{"address": f"127.0.0.1:{port}"}],
        "admin": {"address": f"127.0.0.1:{admin}"},
        "workers": 1,
        "server": {"watch_config": False, "keepalive_timeout": "1h"},
        "upstreams": {"svc": {"endpoints": [f"http://127.0.0.1:{upstream}"]}},
        "routes": [{"name": "r", "upstream": "svc"}],
    }


def serving_process(pid: int) -> psutil.Process:
    """The process holding the listeners: the gateway itself with 1 worker."""
    proc = psutil.Process(pid)
    children = proc.children(recursive=True)
    return children[0] if children else proc


# -- clients -------------------------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def open_idle(
    port: int, n: int, batch: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        if await read_response(reader) != 200:
            raise RuntimeError("idle client's first request failed")
        held.append((reader, writer))

    for i in range(0, n, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, n - i))))
    return held


async def traffic(url: str, clients: int, duration_s: float) -> tuple[int, int, list[float]]:
    ok = failed = 0
    latencies: list[float] = []
    end = time.monotonic() + duration_s
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def client() -> None:
            nonlocal ok, failed
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    async with s.get(url) as r:
                        await r.read()
                        if r.status == 200:
                            ok += 1
                        else:
                            failed += 1
                except aiohttp.ClientError:
                    failed += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(client() for _ in range(clients)))
    return ok, failed, sorted(latencies)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


async def main(args: argparse.Namespace) -> int:
    limit = raise_nofile(args.connections + 1000)
    print(f"open-file soft limit here: {limit}")
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        up_port, gw_port, admin = free_port(), free_port(), free_port()
        procs = []
        try:
            up = start([sys.executable, __file__, "--serve-upstream", str(up_port)], tmp / "up.log")
            procs.append(up)
            cfg = tmp / "gateway.yaml"
            cfg.write_text(yaml.safe_dump(gateway_config(gw_port, admin, up_port)))
            gw = start([sys.executable, "-m", "gateway", "run", str(cfg)], tmp / "gw.log")
            procs.append(gw)
            await wait_ok(f"http://127.0.0.1:{up_port}/", up, tmp / "up.log")
            url = f"http://127.0.0.1:{gw_port}/ok"
            await wait_ok(url, gw, tmp / "gw.log")
            worker = serving_process(gw.pid)
            gw_soft = worker.rlimit(psutil.RLIMIT_NOFILE)[0]
            print(f"gateway pid {worker.pid}, its open-file soft limit: {gw_soft}")
            await traffic(url, 4, args.warm)
            before = worker.memory_info().rss
            fds_before = worker.num_fds()
            t0 = time.monotonic()
            held = await open_idle(gw_port, args.connections, args.batch)
            opened_s = time.monotonic() - t0
            held_rss = worker.memory_info().rss
            print(
                f"{len(held)} idle keep-alive connections opened in {opened_s:.1f} s; "
                f"gateway fds {fds_before} -> {worker.num_fds()}"
            )
            ok, failed, lat = await traffic(url, args.clients, args.duration)
            rate = ok / args.duration
            print(
                f"traffic meanwhile: {ok} ok, {failed} failed in {args.duration:g} s "
                f"({rate:.0f} req/s), p50 {pct(lat, 0.5):.2f} ms, p99 {pct(lat, 0.99):.2f} ms"
            )
            after = worker.memory_info().rss
            probes = held[:: max(1, len(held) // args.probe)][: args.probe]
            statuses = []
            for reader, writer in probes:
                writer.write(REQUEST)
                statuses.append(await read_response(reader))
            alive = sum(1 for s in statuses if s == 200)
            print(f"idle connections still served: {alive}/{len(probes)} probed")
            per_conn = (held_rss - before) / max(1, len(held))
            print(
                f"gateway RSS: before {mib(before)}, with {len(held)} idle {mib(held_rss)}, "
                f"after traffic {mib(after)}; {per_conn / 1024:.1f} KiB per idle connection"
            )
            for _, writer in held:
                writer.transport.abort()
            return 0 if failed == 0 and alive == len(probes) else 1
        finally:
            for p in reversed(procs):
                stop(p)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-upstream":
        serve_upstream(int(sys.argv[2]))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=10_000, help="idle keep-alive clients")
    ap.add_argument("--batch", type=int, default=500, help="connections opened at once")
    ap.add_argument("--clients", type=int, default=20, help="clients of the normal traffic")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of normal traffic")
    ap.add_argument("--warm", type=float, default=2.0, help="seconds of warm-up traffic")
    ap.add_argument("--probe", type=int, default=200, help="idle connections re-used at the end")
    sys.exit(asyncio.run(main(ap.parse_args())))
