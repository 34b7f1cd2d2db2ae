"""CPU per proxied small GET: the gateway's own cost, not the machine's speed.

    .venv/bin/python bench/proxy_cpu.py [--duration 5] [--rounds 3] [--profile out.pstats]
        [--scenario small-get|screening|screening-plain]
                                        [--access-log]

GATEWAY_TREE=/some/copy runs a copy of the tree instead (for A/B runs interleaved in
the same machine state).

nginx (a separate process) answers bench/run.py's small-get body (117 bytes of JSON)
on loopback; a gateway Worker runs in this process on uvloop with bench/run.py's
small-get route (one prefix route, no filters); `wrk -t1 -c50` drives it with
keep-alive. The figure is this process's CPU time (user + sys, every thread) divided
by the requests wrk completed: far steadier on a busy machine than requests/s,
because waiting for a core costs no CPU time. With --profile the measured run is
also profiled with cProfile (the figure is then inflated by the profiler: read the
profile for shares, the plain run for the figure); the dump is sorted by own time.
With --access-log the gateway writes `access_log: {mode: full}` to a file in the temp
dir (run with and without it: the difference is the log's cost per request).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
import yaml

ROOT = Path(os.environ.get("GATEWAY_TREE") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

from bench.run import SCENARIOS  # noqa: E402
from gateway.worker import Worker  # noqa: E402
from tests.support import free_port  # noqa: E402

HEAD = b'{"id":12345,"name":"bench","items":[1,2,3],"ok":true,"pad":"'
BODY = HEAD + b"x" * (117 - len(HEAD) - 2) + b'"}'

NGINX_CONF = """{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/cb; proxy_temp_path {prefix}/pt;
    fastcgi_temp_path {prefix}/ft; uwsgi_temp_path {prefix}/ut; scgi_temp_path {prefix}/st;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type application/json; return 200 '{body}'; }}
    }}
}}
"""


# --pin: this process (the gateway) on CPU 0, nginx and wrk on CPU 1 (set in main).
PIN_OTHERS: list[str] = []


def start_nginx(prefix: Path, port: int) -> subprocess.Popen[bytes]:
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, prefix=prefix, port=port, body=BODY.decode()))
    argv = [
        *PIN_OTHERS,
        "nginx",
        "-p",
        str(prefix),
        "-c",
        str(conf),
        "-e",
        str(prefix / "error.log"),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --scenario screening / screening-plain: wrk runs this Lua script (POST of the body).
WRK_SCRIPT: list[str] = []


def post_script(tmp: Path, body: bytes) -> Path:
    """A wrk Lua script POSTing `body` as application/json (as bench/run.py's)."""
    (tmp / "request-body.json").write_bytes(body)
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{tmp / "request-body.json"}", "rb")\n'
        'wrk.body = f:read("*a")\nf:close()\n'
    )
    return script


async def wrk(url: str, duration_s: int) -> int:
    proc = await asyncio.create_subprocess_exec(
        *PIN_OTHERS,
        "wrk",
        "-t1",
        "-c50",
        f"-d{duration_s}s",
        *WRK_SCRIPT,
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    text = out.decode()
    m = re.search(r"(\d+) requests in", text)
    if m is None or "Non-2xx" in text or "Socket errors" in text:
        raise RuntimeError(f"wrk said: {text}")
    return int(m.group(1))


async def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        w.close()
        return
    raise RuntimeError(f"nothing listens on {port}")


async def one_round(
    url: str, duration_s: int, prof: cProfile.Profile | None, label: str = "small-get"
) -> float:
    """One measured wrk run; prints and returns the us of CPU per request."""
    t0, w0 = os.times(), time.perf_counter()
    if prof is not None:
        prof.enable()
    n = await wrk(url, duration_s)
    if prof is not None:
        prof.disable()
    t1, wall_s = os.times(), time.perf_counter() - w0
    user_s, sys_s = t1.user - t0.user, t1.system - t0.system
    cpu_s = user_s + sys_s
    print(
        f"gateway {label}: {cpu_s * 1e6 / n:6.1f} us CPU/request (user {user_s * 1e6 / n:.1f}"
        f" + sys {sys_s * 1e6 / n:.1f})  {n / wall_s:8,.0f} req/s  ({n} requests, "
        f"{cpu_s:.2f} s CPU in {wall_s:.2f} s){' [profiled]' if prof else ''}",
        flush=True,
    )
    return cpu_s * 1e6 / n


async def measure(args: argparse.Namespace, tmp: Path) -> None:
    up_port, port = free_port(), free_port()
    (tmp / "nginx").mkdir()
    nginx = start_nginx(tmp / "nginx", up_port)
    try:
        await wait_port(up_port)
        cfg: dict[str, Any] = {
            "listeners": [{"address": f"127.0.0.1:{port}"}],
            "admin": {"address": f"127.0.0.1:{free_port()}"},
            "upstreams": {"bench": {"endpoints": [f"http://127.0.0.1:{up_port}"]}},
            "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "upstream": "bench"}],
        }
        if args.scenario != "small-get":
            sc = SCENARIOS["screening"]
            WRK_SCRIPT[:] = ["-s", str(post_script(tmp, sc.request_body))]
            if args.scenario == "screening":
                cfg["routes"][0]["screening"] = sc.screening
        log_file = tmp / "access.log"
        if args.access_log:
            cfg["access_log"] = {"mode": "full", "output": str(log_file)}
        path = tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(cfg))
        worker = Worker(path)
        await worker.start()
        try:
            url = f"http://127.0.0.1:{port}/"
            await wrk(url, 1)  # warm-up: pool filled, code paths hot
            prof = cProfile.Profile() if args.profile else None
            figures = []
            for _ in range(args.rounds):
                figures.append(await one_round(url, args.duration, prof, args.scenario))
        finally:
            await worker.stop()
    finally:
        nginx.terminate()
        nginx.wait()
    if args.access_log:
        with log_file.open("rb") as f:
            print(f"access log: {sum(1 for _ in f)} lines written")
    if args.rounds > 1:
        figures.sort()
        print(f"median {figures[len(figures) // 2]:.1f} us CPU/request, min {figures[0]:.1f}")
    if prof is not None:
        prof.dump_stats(args.profile)
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of the measured wrk run")
    parser.add_argument("--profile", default=None, help="cProfile the run; dump stats here")
    parser.add_argument("--rounds", type=int, default=1, help="measured runs (median shown)")
    parser.add_argument(
        "--pin", action="store_true", help="gateway on CPU 0, nginx and wrk on CPU 1"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="access_log mode full, to a temp file"
    )
    parser.add_argument("--top", type=int, default=40, help="profile rows to print")
    parser.add_argument(
        "--scenario",
        choices=("small-get", "screening", "screening-plain"),
        default="small-get",
        help="small GET; or POST ~4 KB JSON with screening, or the same route without",
    )
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {0})
        PIN_OTHERS.extend(["taskset", "-c", "1"])
    with tempfile.TemporaryDirectory() as tmp:
        uvloop.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
