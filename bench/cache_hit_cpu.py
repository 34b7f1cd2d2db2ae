"""CPU per cache hit, measured three ways (issue 8's cache-hit target).

    .venv/bin/python bench/cache_hit_cpu.py [--duration 10] [--redis-url redis://...]

1. `wrk`: a gateway Worker in this process (uvloop), one route with `cache: {}`, a
   117-byte JSON body marked max-age=3600 with an ETag (bench/run.py's cache-hit
   scenario); wrk -t1 -c50 drives hits; this process's CPU time / requests is the CPU
   per hit, aiohttp's request handling and the socket syscalls included. With
   --redis-url the same against a Redis store.
2. `floor`: the same aiohttp server (gateway.server.GatewayServer) answering every
   request with a constant RawResponse: what any hit costs at least on this stack.
3. `lookup`: the memory store read as the filter reads it (a plain call) against the
   same read behind an `await` (the async interface a shared store needs), per call.

CPU per request is less sensitive to a busy machine than requests/s, but run it on a
quiet one for figures to record. Needs wrk on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path
from typing import Any

import uvloop
import yaml
from aiohttp import web
from multidict import CIMultiDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway import respond as gw_respond  # noqa: E402
from gateway import server as gw_server  # noqa: E402
from gateway.cache.entry import Entry  # noqa: E402
from gateway.cache.policy import parse_cache_control  # noqa: E402
from gateway.cache.store import MemoryStore  # noqa: E402
from gateway.worker import Worker  # noqa: E402
from tests.support import free_port, serve_app  # noqa: E402

BODY = b'{"id":12345,"name":"bench","items":[1,2,3],"ok":true,"pad":"' + b"x" * 55 + b'"}'


async def wrk(url: str, duration_s: int) -> int:
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t1", "-c50", f"-d{duration_s}s", url, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    m = re.search(r"(\d+) requests in", out.decode())
    if m is None:
        raise RuntimeError(f"wrk said: {out.decode()}")
    return int(m.group(1))


async def cpu_per_request(url: str, duration_s: int) -> tuple[float, float]:
    """(us of this process's CPU per request, requests/s) under wrk."""
    await wrk(url, 1)  # warm-up
    c0 = time.process_time()
    n = await wrk(url, duration_s)
    return (time.process_time() - c0) * 1e6 / n, n / duration_s


async def gateway_hits(duration_s: int, redis_url: str | None) -> tuple[float, float, str]:
    async def upstream(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "max-age=3600", "ETag": '"v1"'}
        return web.Response(body=BODY, headers=headers, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", upstream)
    async with serve_app(app) as up_port:
        port = free_port()
        cfg: dict[str, Any] = {
            "listeners": [{"address": f"127.0.0.1:{port}"}],
            "admin": {"address": f"127.0.0.1:{free_port()}"},
            "upstreams": {"b": {"endpoints": [f"http://127.0.0.1:{up_port}"]}},
            "routes": [
                {"name": "all", "match": {"path": {"prefix": "/"}}, "upstream": "b", "cache": {}}
            ],
        }
        if redis_url is not None:
            prefix = f"bench:{uuid.uuid4().hex[:8]}:"
            redis = {"url": redis_url, "key_prefix": prefix, "timeout": "1s"}
            cfg["cache_store"] = {"backend": "redis", "redis": redis}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gateway.yaml"
            path.write_text(yaml.safe_dump(cfg))
            worker = Worker(path)
            await worker.start()
            try:
                url = f"http://127.0.0.1:{port}/"
                import aiohttp

                async with aiohttp.ClientSession() as s:
                    for _ in range(2):
                        async with s.get(url) as r:
                            status = r.headers.get("Cache-Status", "")
                            await r.read()
                        await worker.runtime.cache.flush()
                us, rps = await cpu_per_request(url, duration_s)
            finally:
                await worker.stop()
    return us, rps, status


async def floor(duration_s: int) -> tuple[float, float]:
    headers: CIMultiDict[str] = CIMultiDict(
        {"Cache-Control": "max-age=3600", "ETag": '"v1"', "Content-Type": "application/json"}
    )

    async def handle(request: Any) -> web.StreamResponse:
        return gw_respond.RawResponse(200, "OK", headers, BODY)

    srv = gw_server.GatewayServer(
        handle,
        header_timeout_s=10,
        max_request_line=8190,
        max_header_field=8191,
        max_headers=100,
        keepalive_timeout_s=75,
    )
    server = await asyncio.get_running_loop().create_server(srv, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await cpu_per_request(f"http://127.0.0.1:{port}/", duration_s)
    finally:
        server.close()


def lookup_cost() -> tuple[float, float]:
    """(us per plain lookup_now, us per awaited lookup) on a memory store hit."""
    store = MemoryStore(1 << 20)
    primary = "127.0.0.1/\x00all\x00http\x00"
    cc = parse_cache_control(["max-age=3600"])
    headers = [("Content-Type", "application/json"), ("Cache-Control", "max-age=3600")]
    store.store(
        Entry(primary=primary, key=primary + "\x01", status=200, reason="OK", headers=headers,
              body=BODY, cc=cc, lifetime=3600, stored_at=store.clock(), age0=0)
    )  # fmt: skip
    h: CIMultiDict[str] = CIMultiDict({"Host": "127.0.0.1"})
    n = 200_000

    async def plain() -> None:
        for _ in range(n):
            store.lookup_now(primary, h)

    async def awaited() -> None:
        for _ in range(n):
            await store.lookup(primary, h)

    loop = asyncio.new_event_loop()
    try:
        out = []
        for fn in (plain, awaited):
            best = min(timeit.repeat(lambda f=fn: loop.run_until_complete(f()), number=1, repeat=5))
            out.append(best / n * 1e6)
    finally:
        loop.close()
    return out[0], out[1]


async def main(args: argparse.Namespace) -> None:
    us, rps = await floor(args.duration)
    print(f"floor:  aiohttp + constant RawResponse  {us:5.1f} us CPU/request  {rps:8,.0f} req/s")
    us, rps, status = await gateway_hits(args.duration, None)
    print(f"wrk:    gateway memory-store hits        {us:5.1f} us CPU/request  {rps:8,.0f} req/s"
          f"  ({status})")  # fmt: skip
    if args.redis_url:
        us, rps, status = await gateway_hits(args.duration, args.redis_url)
        print(f"wrk:    gateway redis-store hits         {us:5.1f} us CPU/request  {rps:8,.0f}"
              f" req/s  ({status})")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--redis-url", default=None, help="also measure a Redis store")
    plain, awaited = lookup_cost()  # its own loop, before uvloop runs
    print(f"lookup: memory store plain call {plain:.2f} us, behind an await {awaited:.2f} us")
    uvloop.run(main(parser.parse_args()))
