"""Adaptive concurrency under an upstream that degrades with load (issue 11's acceptance).

One run starts, on loopback only, each in its own process group (killed at the end):

- an upstream (this script with ``--serve-upstream``, aiohttp): a service whose latency
  grows with its own requests in flight, ``5 ms * max(1, in_flight / slots) ** 2``
  capped at 500 ms: 5 ms up to ``--slots`` in flight, 500 ms from 10x that (lock and
  CPU contention, as a real service degrades);
- the gateway (``python -m gateway run``, 1 worker) in front of it, once without and
  once with ``adaptive_concurrency`` on the upstream (the targets ``plain`` and
  ``adaptive``).

Each target: a light warm-up (``--warm-clients`` for ``--warm`` s: the upstream at
5 ms, the adaptive limiter measures its min RTT), then the load: ``--clients``
closed-loop clients for ``--duration`` s (an aiohttp client in this process; a client
refused with 503 backs off ``--backoff-ms`` before its next request; ``--timeout`` s per
request). Printed per target, for the load phase: requests, accepted (any answer but
a 503) p50/p99, the share refused (503) and their p50/p99, timeouts/errors, and the
upstream's peak in flight.

    .venv/bin/python bench/overload.py                    # 150 clients, 15 s per target
    .venv/bin/python bench/overload.py --duration 3 --warm 1   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from procs import free_port, start, stop, wait_ok

# -- the upstream ------------------------------------------------------------------------


def serve_upstream(port: int, slots: int) -> None:
    from aiohttp import web

    state = {"in_flight": 0, "peak": 0}

    async def handle(request: web.Request) -> web.Response:
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        try:
            latency = min(0.5, 0.005 * max(1.0, state["in_flight"] / slots) ** 2)
            await asyncio.sleep(latency)
            return web.Response(text='{"ok": true}', content_type="application/json")
        finally:
            state["in_flight"] -= 1

    async def peak(request: web.Request) -> web.Response:
        p, state["peak"] = state["peak"], 0
        return web.Response(text=str(p))

    app = web.Application()
    app.router.add_get("/_peak", peak)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# -- processes -----------------------------------------------------------------------------


def gateway_config(port: int, admin: int, upstream: int, adaptive: bool) -> dict[str, Any]:
    up: dict[str, Any] = {"endpoints": [f"http://127.0.0.1:{upstream}"]}
    if adaptive:
        up["adaptive_concurrency"] = {}
    return {
        "listeners": [{"address": f"127.0.0.1:{port}"}],
        "admin": {"address": f"127.0.0.1:{admin}"},
        "server": {"watch_config": False},
        "upstreams": {"svc": up},
        "routes": [{"name": "r", "upstream": "svc", "retries": {"attempts": 0}}],
    }


# -- load ----------------------------------------------------------------------------------


async def load(
    url: str, clients: int, seconds: float, timeout_s: float, backoff_s: float
) -> list[tuple[str, float]]:
    """(outcome, seconds) per request: outcome 'ok' (not 503), '503', 'timeout', 'error'."""
    results: list[tuple[str, float]] = []
    stop_at = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def client(s: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            try:
                async with s.get(url) as r:
                    await r.read()
                    outcome = "503" if r.status == 503 else "ok"
            except TimeoutError:
                outcome = "timeout"
            except aiohttp.ClientError:
                outcome = "error"
            results.append((outcome, time.monotonic() - t0))
            if outcome != "ok":
                await asyncio.sleep(backoff_s)

    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        await asyncio.gather(*(client(s) for _ in range(clients)))
    return results


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1000:.1f}"


async def run_target(args: argparse.Namespace, adaptive: bool, tmp: Path) -> dict[str, Any]:
    up_port, gw_port, admin = free_port(), free_port(), free_port()
    name = "adaptive" if adaptive else "plain"
    procs = []
    try:
        up_log = tmp / f"upstream-{name}.log"
        procs.append(start([sys.executable, __file__, "--serve-upstream", str(up_port),
                            "--slots", str(args.slots)], up_log))  # fmt: skip
        await wait_ok(f"http://127.0.0.1:{up_port}/_peak", procs[-1], up_log)
        cfg = tmp / f"gateway-{name}.yaml"
        cfg.write_text(yaml.safe_dump(gateway_config(gw_port, admin, up_port, adaptive)))
        gw_log = tmp / f"gateway-{name}.log"
        procs.append(start([sys.executable, "-m", "gateway", "run", str(cfg)], gw_log))
        await wait_ok(f"http://127.0.0.1:{admin}/readyz", procs[-1], gw_log)
        url = f"http://127.0.0.1:{gw_port}/x"
        await load(url, args.warm_clients, args.warm, args.timeout, args.backoff_ms / 1000)
        async with aiohttp.ClientSession() as s:  # reset the upstream's peak
            await (await s.get(f"http://127.0.0.1:{up_port}/_peak")).read()
        results = await load(url, args.clients, args.duration, args.timeout,
                             args.backoff_ms / 1000)  # fmt: skip
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{up_port}/_peak") as r:
            peak = int(await r.text())
    finally:
        for p in reversed(procs):
            stop(p)
    ok = [t for o, t in results if o == "ok"]
    refused = [t for o, t in results if o == "503"]
    n = len(results)
    return {
        "target": name,
        "requests": n,
        "req_per_s": round(n / args.duration, 1),
        "accepted": len(ok),
        "accepted_p50_ms": pct(ok, 0.5),
        "accepted_p99_ms": pct(ok, 0.99),
        "refused_share": round(len(refused) / n, 3) if n else None,
        "refused_p50_ms": pct(refused, 0.5),
        "refused_p99_ms": pct(refused, 0.99),
        "timeouts": sum(1 for o, _ in results if o == "timeout"),
        "errors": sum(1 for o, _ in results if o == "error"),
        "upstream_peak_in_flight": peak,
    }


async def main(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="gw-overload-bench-") as d:
        for adaptive in (False, True):
            rows.append(await run_target(args, adaptive, Path(d)))
    if args.json:
        print(json.dumps(rows))
        return
    print(
        f"upstream: 5 ms up to {args.slots} in flight, 500 ms from {10 * args.slots}; "
        f"{args.clients} clients for {args.duration:g} s, timeout {args.timeout:g} s, "
        f"{args.backoff_ms:g} ms back-off after a 503"
    )
    head = ("target", "req/s", "accepted", "acc p50 ms", "acc p99 ms", "refused",
            "ref p50 ms", "ref p99 ms", "timeouts", "errors", "upstream peak")  # fmt: skip
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(x) for x in (
            r["target"], r["req_per_s"], r["accepted"], ms(r["accepted_p50_ms"]),
            ms(r["accepted_p99_ms"]), f"{100 * (r['refused_share'] or 0):.1f}%",
            ms(r["refused_p50_ms"]), ms(r["refused_p99_ms"]), r["timeouts"], r["errors"],
            r["upstream_peak_in_flight"])))  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    p.add_argument("--slots", type=int, default=10, help="upstream in flight at 5 ms")
    p.add_argument("--clients", type=int, default=150)
    p.add_argument("--duration", type=float, default=15.0, help="seconds of load per target")
    p.add_argument("--warm", type=float, default=3.0, help="seconds of light load first")
    p.add_argument("--warm-clients", type=int, default=5)
    p.add_argument("--timeout", type=float, default=5.0, help="client timeout per request, s")
    p.add_argument("--backoff-ms", type=float, default=100.0, help="pause after a 503/error")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.serve_upstream:
        serve_upstream(a.serve_upstream, a.slots)
    else:
        asyncio.run(main(a))
