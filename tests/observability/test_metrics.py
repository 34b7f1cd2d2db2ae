"""Metrics end to end: `python -m gateway run` with two workers, scraped on the admin
listener, the exposition parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.metrics import REQUESTS, metrics
from tests.support import (
    ROOT,
    GatewayProcess,
    free_port,
    gateway_config,
    serve_app,
    upstream_app,
    write_config,
)

Samples = list[tuple[str, dict[str, str], float]]


def config(
    up_port: int, port: int, admin: int, upstream: dict[str, Any] | None = None
) -> dict[str, Any]:
    return gateway_config(
        port=port,
        admin_port=admin,
        upstreams={"up": [f"http://127.0.0.1:{up_port}"]},
        routes=[
            {"name": "status", "match": {"path": {"prefix": "/status"}}, "upstream": "up"},
            {"name": "all", "match": {"path": {"prefix": "/"}}, "upstream": "up"},
        ],
        workers=2,
        server={"watch_config": False},  # reloads on SIGHUP only: one per worker
        upstream_extra={"up": upstream or {}},
    )


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, tls: dict[str, Any] | None = None, upstream: dict[str, Any] | None = None
) -> AsyncIterator[tuple[GatewayProcess, int]]:
    """An upstream and a two-worker gateway in front of it: (gateway, upstream port)."""
    async with serve_app(upstream_app()) as up:
        cfg = config(up, free_port(), free_port(), upstream)
        if tls is not None:
            cfg["listeners"][0]["tls"] = tls
        path = tmp_path / "gateway.yaml"
        write_config(path, cfg)
        port = int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
        admin = int(cfg["admin"]["address"].rsplit(":", 1)[1])
        gw = GatewayProcess(path, port, admin, workers=2)
        try:
            await gw.wait_ready()
            yield gw, up
        finally:
            gw.stop()


async def scrape(gw: GatewayProcess) -> Samples:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{gw.admin_port}/metrics") as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and labels.items() <= lab.items())


def worker_pids(gw: GatewayProcess) -> set[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(gw.proc.pid)], capture_output=True, text=True
    )
    return {int(x) for x in out.stdout.split()}


async def test_requests_counted_across_workers(tmp_path: Path) -> None:
    n = 60
    async with gateway(tmp_path) as (gw, _):
        # A fresh connection per request: the kernel spreads them over both workers.
        conn = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=conn) as s:
            for _ in range(n):
                async with s.get(gw.url + "/hello") as r:
                    assert r.status == 200
            for _ in range(3):
                async with s.post(gw.url + "/status/503") as r:
                    assert r.status == 503
        # Workers hand request metrics over once a second (FLUSH_INTERVAL_S).
        deadline = time.monotonic() + 5
        while True:
            samples = await scrape(gw)
            counted = value(samples, "gateway_requests_total")
            observed = value(samples, "gateway_request_duration_seconds_count")
            by_worker = value(samples, "gateway_worker_requests_total")
            if counted >= n + 3 and observed >= n + 3 and by_worker >= n + 3:
                break  # (two files, read one by one while the workers write)
            assert time.monotonic() < deadline, samples
            await asyncio.sleep(0.2)
        running = worker_pids(gw)
    total = "gateway_requests_total"
    assert value(samples, total, route="all", method="GET", status_class="2xx") == n
    assert value(samples, total, route="status", method="POST", status_class="5xx") == 3
    assert value(samples, total, route="all", upstream="up", version="", region="") == n
    hist = "gateway_request_duration_seconds_count"
    assert value(samples, hist, route="all", method="GET", status_class="2xx") == n
    inf = value(
        samples,
        "gateway_request_duration_seconds_bucket",
        route="all",
        method="GET",
        status_class="2xx",
        le="+Inf",
    )
    assert inf == n
    assert value(samples, "gateway_requests_in_flight") == 0
    # Pre-resolved at config load: the series exist before any such request.
    assert any(
        n_ == total and lab.get("route") == "status" and lab.get("method") == "GET"
        for n_, lab, _ in samples
    )
    # Both workers answered some: per-worker counts add up to every request, each
    # worker index counted some, and each live worker process shows with its pid.
    workers = {lab["worker"]: v for n_, lab, v in samples if n_ == "gateway_worker_requests_total"}
    assert sum(workers.values()) == n + 3
    assert set(workers) == {"0", "1"} and all(v > 0 for v in workers.values()), workers
    pids = {int(lab["pid"]) for n_, lab, _ in samples if n_ == "gateway_worker_info"}
    assert len(pids) == 2 and pids <= running  # (running: the resource tracker too)
    # Labels are bounded: no path in them.
    assert not any("/hello" in v for _, lab, _ in samples for v in lab.values())


async def test_both_workers_contribute(tmp_path: Path) -> None:
    """The scrape merges every worker's files: each one counted its own reload."""
    async with gateway(tmp_path) as (gw, up):
        assert len(worker_pids(gw)) >= 2
        before = await scrape(gw)
        assert value(before, "gateway_config_reloads_total") == 0
        cfg = config(up, gw.port, gw.admin_port)
        cfg["routes"].insert(
            0, {"name": "added", "match": {"path": {"prefix": "/added"}}, "upstream": "up"}
        )
        write_config(gw.config_path, cfg)
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            after = await scrape(gw)
            info = {lab["hash"]: v for n, lab, v in after if n == "gateway_config_info"}
            # A scrape reads the files one by one while workers write: wait for both.
            ok = value(after, "gateway_config_reloads_total", result="ok")
            added = any(lab.get("route") == "added" for _, lab, _ in after)
            if ok == 2 and sorted(info.values()) == [0.0, 1.0] and added:
                break
            assert time.monotonic() < deadline, after
            await asyncio.sleep(0.1)
        # One reload per worker; the new config's hash is 1, the old one's 0 (left
        # behind, max over live workers); the new route's series were resolved.
        assert value(after, "gateway_config_reloads_total", result="failed") == 0
        # A broken file: both workers count a failure, the running config stays.
        gw.config_path.write_text("routes: [")
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while value(await scrape(gw), "gateway_config_reloads_total", result="failed") < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    out = tmp_path / "certs"
    subprocess.run(
        [sys.executable, "-m", "gateway", "cert", "dev", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


async def test_certificate_expiry(tmp_path: Path, certs: Path) -> None:
    cert_file = str(certs / "server.pem")
    leaf = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    tls = {"certificates": [{"cert_file": cert_file, "key_file": str(certs / "server-key.pem")}]}
    async with gateway(tmp_path, tls) as (gw, _):
        port = gw.port
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"https://localhost:{port}/x", ssl=ctx) as r,
        ):
            assert r.status == 200
        await asyncio.sleep(1.5)  # a flush of the request metrics
        samples = await scrape(gw)
    expiry = value(samples, "gateway_tls_certificate_expiry_timestamp_seconds", file=cert_file)
    assert expiry == leaf.not_valid_after_utc.timestamp()
    assert value(samples, "gateway_requests_total", route="all") == 1


def test_in_process_observe() -> None:
    """Without the multiprocess directory: the default registry, same API."""
    REQUESTS.prepare([("unit-route", ("GET",))])
    m = metrics()
    labels = ("unit-route", "OTHER", "4xx", "", "", "")
    before = m.requests.labels(*labels)._value.get()
    sum_before = m.request_duration.labels(*labels)._sum.get()
    REQUESTS.observe("unit-route", "BREW", 418, 0.001)
    REQUESTS.observe("unit-route", "WHATEVER", 404, 0.3, {})
    REQUESTS.active += 1
    assert m.requests.labels(*labels)._value.get() == before  # batched
    REQUESTS.flush()
    REQUESTS.active -= 1
    assert m.requests.labels(*labels)._value.get() == before + 2
    hist = m.request_duration.labels(*labels)
    assert hist._sum.get() - sum_before == pytest.approx(0.301)
    assert m.in_flight._value.get() == 1
    assert not any(k[1] == "BREW" for k in REQUESTS._series)  # bounded


async def test_breaker_state_and_transitions(tmp_path: Path) -> None:
    breaker = {"breaker": {"consecutive_failures": 2, "base_ejection": "1m"}}
    async with gateway(tmp_path, upstream=breaker) as (gw, up):
        conn = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=conn) as s:
            for _ in range(20):
                async with s.get(gw.url + "/status/503") as r:
                    assert r.status == 503
        endpoint = {"upstream": "up", "endpoint": f"127.0.0.1:{up}"}
        deadline = time.monotonic() + 5
        while True:
            samples = await scrape(gw)
            opened = value(
                samples,
                "gateway_upstream_breaker_transitions_total",
                from_state="closed",
                to_state="open",
            )
            state = value(samples, "gateway_upstream_breaker_state", state="open")
            if opened >= 1 and state == 1:
                break
            assert time.monotonic() < deadline, samples
            await asyncio.sleep(0.2)
        assert opened <= 2  # one breaker per worker, ejected for a minute
        labels = [lab for n, lab, _ in samples if n == "gateway_upstream_breaker_state"]
        assert {lab["endpoint"] for lab in labels} <= {
            endpoint["endpoint"],
            f"http://127.0.0.1:{up}",
        }
