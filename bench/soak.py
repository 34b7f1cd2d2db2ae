"""Soak: a long steady load with reloads and a flapping upstream; RSS and fds over time.

One run starts, on loopback, in their own process groups (all killed at the end):

- two nginx upstreams answering the small-get body (bench/run.py's `small-get`): one
  stays up, the other ("flappy") is killed and started again every `--flap-s` (down
  for one period, up for the next), so the gateway's pools, passive breakers, health
  checks and retries see an endpoint die and come back all run long;
- the gateway, `python -m gateway run` with `--workers` (default 2) worker processes,
  one route to an upstream of both endpoints, health checks every 2 s.

Load. Unless `--rate` is given, a short `wrk -t1 -c50` run measures the maximum first
and the soak offers `--fraction` (default 0.5) of it. The load is wrk itself, in
back-to-back segments of `--segment-s` (30 s) with a Lua script (`LUA`): each of the
`--connections` connections waits a think time (`delay`) after each answer, set so
that together they offer the rate and corrected after each segment from what it
achieved, and never more than the rate allows so far (a ceiling per whole second:
without it a segment after a busy one ran at the full maximum once the box freed up).
A Python client could not offer half the gateway's maximum on these two cores: it
would need as much CPU as the gateway. The script counts every request
wrk writes and every response it parses, by status class; the last `QUIET_S` of a
segment sends nothing new, so when wrk exits, sent - answered is what never got an
answer (5xx are answers), not what was cut in flight. The soak wants zero. Being
closed loops with think time, the connections send less when answers are slow
(latency is not corrected for coordinated omission); p50/p99 are per segment.

Every `--reload-s` (default 60 s) the config file is rewritten and the supervisor
gets SIGHUP: configs A and B alternate (they differ in a response header and the
route's read timeout), and the third reload writes an invalid config (an unknown
upstream), which every worker must reject while serving on. Every 5 s the RSS
(VmRSS) and the open file descriptors (/proc/<pid>/fd) of the supervisor and each of
its children are sampled.

Outputs (in `--out`, default /tmp/soak): samples.csv (t_s, process, pid, rss_kb,
fds), traffic.csv (per wrk segment: sent, answered, 2xx..5xx, wrk's socket errors,
p50/p99/max ms, unanswered, think time), events.csv (reloads and flaps),
summary.json, wrk/ (each segment's counts), logs/ (every process's output);
the plot goes to `--png` (default bench/soak.png). The summary gives each process's
RSS and fds at start, after the warm-up (`--warmup-s`, default a sixth of the run, at
most 5 min) and at the end, the least-squares slope after the warm-up, and the
unanswered count. Exit status 1 when any request went unanswered.

    .venv/bin/python bench/soak.py                           # 30 min, half the max
    .venv/bin/python bench/soak.py --duration 60 --rate 300  # a one-minute smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/run.py: nginx, wrk and process helpers

SAMPLE_S = 5.0
ANSWER_TIMEOUT_S = 10.0
SCENARIO = bench.SCENARIOS["small-get"]


# --- the load: wrk segments at a paced rate, every request counted in Lua -----------------

# wrk calls `request` for every request it writes (a script defining it makes wrk
# "dynamic"), `response` for every response it parses, and `delay` after each response
# before the connection's next request. `done` writes the counts of this segment as
# JSON. From STOP_AT (epoch s) on, `delay` holds every connection back, so the last
# seconds of a segment only collect answers: when wrk exits, sent - answered is what
# never got an answer, not what was cut in flight.
LUA = """
local delay_ms = tonumber(os.getenv("SOAK_DELAY_MS"))  -- fractional: wrk takes whole ms
local base = math.floor(delay_ms)
local frac = delay_ms - base
local stop_at = tonumber(os.getenv("SOAK_STOP_AT"))
local rate = tonumber(os.getenv("SOAK_RATE"))
local started = tonumber(os.getenv("SOAK_STARTED"))
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  sent, answered, s2, s3, s4, s5 = 0, 0, 0, 0, 0, 0
  req = wrk.format("GET", wrk.path)
end
function request() sent = sent + 1; return req end
function delay()
  local now = os.time()
  if now >= stop_at then return 3600000 end
  -- A ceiling (one thread: `sent` is the total): never a second's worth ahead of the
  -- rate, whatever the think time, so a segment cannot overshoot when the box frees up.
  if sent >= rate * (now - started + 1) then return 100 end
  if math.random() < frac then return base + 1 end
  return base
end
function response(status, headers, body)
  answered = answered + 1
  local c = math.floor(status / 100)
  if c == 2 then s2 = s2 + 1 elseif c == 3 then s3 = s3 + 1
  elseif c == 4 then s4 = s4 + 1 else s5 = s5 + 1 end
end
function done(summary, latency, requests)
  local t = {sent = 0, answered = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0}
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
  end
  t.sent = t.sent - 1  -- wrk calls request() once more, to check it, in thread 1 at start
  local e = summary.errors
  local f = io.open(os.getenv("SOAK_RESULT"), "w")
  f:write(string.format('{"sent": %d, "answered": %d, "2xx": %d, "3xx": %d, "4xx": %d, ' ..
    '"5xx": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"timeouts": %d, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}',
    t.sent, t.answered, t.s2, t.s3, t.s4, t.s5, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
  f:close()
end
"""
QUIET_S = 2  # the end of each segment: no new requests, answers still collected


@dataclass
class Pacer:
    """Per-connection think time that makes `connections` closed loops offer `rate`."""

    rate: float
    connections: int
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        self.delay_ms = max(0.0, self.period_ms - 1.0)

    @property
    def period_ms(self) -> float:
        return self.connections * 1000.0 / self.rate

    def adjust(self, sent: int, active_s: float) -> None:
        """After a segment: the measured period minus the delay is what a request took."""
        if sent <= 0 or active_s <= 0:
            return
        took_ms = self.connections * 1000.0 * active_s / sent - self.delay_ms
        self.delay_ms = max(0.0, self.period_ms - max(0.0, took_ms))


async def wrk_segment(
    args: argparse.Namespace, pacer: Pacer, script: Path, n: int, seconds: float
) -> dict[str, Any]:
    """One wrk run of `seconds` (the last QUIET_S without new requests); its counts."""
    result = args.out / "wrk" / f"segment-{n:04d}.json"
    result.parent.mkdir(exist_ok=True)
    started = time.time()
    stop_at = int(started + seconds - QUIET_S)  # os.time() in wrk's Lua: whole seconds
    env = {**os.environ, "SOAK_DELAY_MS": f"{pacer.delay_ms:.3f}",
           "SOAK_STOP_AT": str(stop_at), "SOAK_RESULT": str(result),
           "SOAK_RATE": f"{pacer.rate:.3f}", "SOAK_STARTED": str(int(started))}  # fmt: skip
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{int(seconds)}s", "--timeout",
            f"{ANSWER_TIMEOUT_S:g}s", "-s", str(script), args.url]  # fmt: skip
    log = (args.out / "logs" / "wrk.out").open("ab")
    with log:
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=log, stderr=log)
        await proc.wait()
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(f"wrk segment {n} failed ({proc.returncode}): see {args.out}/logs")
    row: dict[str, Any] = json.loads(result.read_text())
    row["unanswered"] = row["sent"] - row["answered"]
    row["delay_ms"] = round(pacer.delay_ms, 3)
    row["active_s"] = round(stop_at - started, 3)  # requests were sent this long
    return row


# --- processes: sampling, upstreams, the gateway config ----------------------------------


def proc_stats(pid: int) -> tuple[int, int] | None:
    """(VmRSS in kB, open fds) of `pid`, None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]), fds
    return None


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
    return sorted(out)


def process_name(pid: int, supervisor: int) -> str:
    if pid == supervisor:
        return "supervisor"
    with contextlib.suppress(OSError):
        if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return f"tracker-{pid}"
    return f"worker-{pid}"


def gateway_config(args: argparse.Namespace, variant: str, ports: dict[str, int]) -> str:
    # "invalid": a route naming no upstream, a cross-field error every worker must reject.
    upstream = "no-such-upstream" if variant == "invalid" else "app"
    route = {
        "name": "all",
        "match": {"path": {"prefix": "/"}},
        "upstream": upstream,
        "timeouts": {"read": "5s" if variant == "a" else "6s"},
        "headers": {"response": {"set": {"X-Soak-Config": variant}}},
    }
    endpoints = [f"http://127.0.0.1:{ports['stable']}", f"http://127.0.0.1:{ports['flappy']}"]
    config = {
        "listeners": [{"address": f"127.0.0.1:{ports['gateway']}"}],
        "admin": {"address": f"127.0.0.1:{ports['admin']}"},
        "workers": args.workers,
        "server": {"watch_config": False},
        "upstreams": {
            "app": {
                "endpoints": endpoints,
                "health_check": {"path": "/", "interval": "2s", "timeout": "1s"},
            }
        },
        "routes": [route],
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_config(path: Path, text: str) -> None:
    """Atomically, as a deploy tool would (a few hundred bytes: no need for a thread)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Flappy:
    """The nginx endpoint that dies and comes back."""

    def __init__(self, procs: bench.Processes, tmp: Path, port: int) -> None:
        self.procs = procs
        prefix = tmp / "flappy"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(bench.nginx_conf(prefix, 1, bench.upstream_block(tmp, port, SCENARIO)))
        self.argv = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        self.proc: subprocess.Popen[bytes] | None = None
        self.flaps = 0

    def up(self) -> None:
        self.proc = self.procs.start(f"flappy-{self.flaps}", self.argv)

    def down(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)  # SIGTERM to its group: nginx's fast shutdown
        self.flaps += 1


# --- the run -----------------------------------------------------------------------------


@dataclass
class Soak:
    supervisor: int
    pacer: Pacer
    samples: list[tuple[float, str, int, int, int]] = field(default_factory=list)
    traffic: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum(int(row[key]) for row in self.traffic)


def sample(soak: Soak, t: float) -> None:
    for pid in [soak.supervisor, *children(soak.supervisor)]:
        stats = proc_stats(pid)
        if stats is not None:
            soak.samples.append((t, process_name(pid, soak.supervisor), pid, *stats))


async def load(args: argparse.Namespace, soak: Soak, script: Path, start: float) -> None:
    """wrk segments back to back until the duration is over, the pace corrected after each."""
    n = 0
    while (left := args.duration - (time.monotonic() - start)) > QUIET_S + 1:
        seconds = min(args.segment_s, left)
        t0 = time.monotonic() - start
        row = await wrk_segment(args, soak.pacer, script, n, seconds)
        t1 = time.monotonic() - start
        soak.traffic.append({"t_start_s": round(t0, 1), "t_end_s": round(t1, 1), **row})
        soak.pacer.adjust(row["sent"], row["active_s"])
        n += 1


async def drive(args: argparse.Namespace, soak: Soak, flappy: Flappy, config: Path) -> None:
    loop = asyncio.get_running_loop()
    script = args.out / "soak.lua"
    script.write_text(LUA)
    start = time.monotonic()
    wrk = loop.create_task(load(args, soak, script, start))
    next_sample, next_reload, next_flap = 0.0, args.reload_s, args.flap_s
    reloads = 0
    while not wrk.done():
        t = time.monotonic() - start
        if t >= next_sample:
            sample(soak, t)
            next_sample += SAMPLE_S
        if t >= next_reload:
            reloads += 1
            variant = "invalid" if reloads == 3 else ("b" if reloads % 2 else "a")
            write_config(config, gateway_config(args, variant, args.ports))
            os.kill(soak.supervisor, signal.SIGHUP)
            soak.events.append((t, f"reload-{variant}"))
            next_reload += args.reload_s
        if t >= next_flap:
            if flappy.proc is not None and flappy.proc.poll() is None:
                await loop.run_in_executor(None, flappy.down)
                soak.events.append((t, "flappy-down"))
            else:
                flappy.up()
                soak.events.append((t, "flappy-up"))
            next_flap += args.flap_s
        await asyncio.wait([wrk], timeout=0.1)
    await wrk  # raises what wrk raised
    sample(soak, time.monotonic() - start)


def slope_per_min(points: list[tuple[float, int]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return 0.0 if var == 0 else 60 * sum((t - mx) * (v - my) for t, v in points) / var


def summarise(args: argparse.Namespace, soak: Soak, log_text: str) -> dict[str, Any]:
    procs: dict[str, Any] = {}
    for name in dict.fromkeys(s[1] for s in soak.samples):
        rows = [s for s in soak.samples if s[1] == name]
        warm = [s for s in rows if s[0] >= args.warmup_s] or rows[-1:]
        procs[name] = {
            "rss_kb": {"start": rows[0][3], "warm": warm[0][3], "end": rows[-1][3]},
            "fds": {"start": rows[0][4], "warm": warm[0][4], "end": rows[-1][4]},
            "rss_kb_per_min_after_warmup": round(slope_per_min([(s[0], s[3]) for s in warm]), 2),
            "fds_per_min_after_warmup": round(slope_per_min([(s[0], s[4]) for s in warm]), 3),
            "samples": len(rows),
        }
    keys = ("sent", "answered", "connect_errors", "read_errors", "write_errors", "timeouts")
    active_s = sum(r["active_s"] for r in soak.traffic)
    return {
        "duration_s": args.duration,
        "rate_per_s": args.rate,
        "measured_max_per_s": args.measured_max,
        "requests": {k: soak.total(k) for k in keys},
        "unanswered": soak.total("unanswered"),
        "statuses": {k: soak.total(k) for k in ("2xx", "3xx", "4xx", "5xx")},
        "achieved_per_s": round(soak.total("sent") / max(active_s, 1e-9), 1),
        "worst_segment_p99_ms": max((r["p99_ms"] for r in soak.traffic), default=0.0),
        "segments": len(soak.traffic),
        "reloads_ok": log_text.count("config reloaded"),
        "reloads_rejected": log_text.count("reload rejected"),
        "reloads_sent": sum(e[1].startswith("reload") for e in soak.events),
        "flaps": sum(e[1] == "flappy-down" for e in soak.events),
        "processes": procs,
    }


def write_outputs(args: argparse.Namespace, soak: Soak, summary: dict[str, Any]) -> None:
    out: Path = args.out
    with (out / "samples.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "process", "pid", "rss_kb", "fds"])
        w.writerows((round(t, 1), *rest) for t, *rest in soak.samples)
    with (out / "traffic.csv").open("w", newline="") as f:
        dw = csv.DictWriter(f, fieldnames=list(soak.traffic[0]))
        dw.writeheader()
        dw.writerows(soak.traffic)
    with (out / "events.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "event"])
        w.writerows((round(t, 1), e) for t, e in soak.events)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(args, soak)


def plot(args: argparse.Namespace, soak: Soak) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rss, fds, load) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    for name in dict.fromkeys(s[1] for s in soak.samples):
        rows = [s for s in soak.samples if s[1] == name]
        minutes = [s[0] / 60 for s in rows]
        rss.plot(minutes, [s[3] / 1024 for s in rows], label=name)
        fds.plot(minutes, [s[4] for s in rows], label=name)
    for key in ("answered", "5xx", "unanswered"):
        xs: list[float] = []
        ys: list[float] = []
        for r in soak.traffic:  # one step per wrk segment (its quiet tail included)
            per_s = r[key] / max(r["active_s"], 1e-9)
            xs += [r["t_start_s"] / 60, r["t_end_s"] / 60]
            ys += [per_s, per_s]
        load.plot(xs, ys, label=f"{key}/s")
    downs = [t for t, e in soak.events if e == "flappy-down"]
    ups = [t for t, e in soak.events if e == "flappy-up" and t > 0]
    for i, d in enumerate(downs):
        end = next((u for u in ups if u > d), args.duration)
        load.axvspan(d / 60, end / 60, color="grey", alpha=0.15, lw=0,
                     label="flappy endpoint down" if i == 0 else None)  # fmt: skip
    for ax in (rss, fds, load):
        for t, e in soak.events:
            if e.startswith("reload"):
                ax.axvline(t / 60, color="red" if "invalid" in e else "green", lw=0.6, alpha=0.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    rss.set_ylabel("RSS (MiB)")
    fds.set_ylabel("open fds")
    load.set_ylabel("per second")
    load.set_xlabel("minutes (green: reload, red: invalid config rejected)")
    rss.set_title(f"gateway soak: {args.workers} workers, {args.rate:.0f} req/s offered, "
                  f"{args.duration / 60:.3g} min")  # fmt: skip
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110)
    plt.close(fig)


def print_summary(summary: dict[str, Any]) -> None:
    r = summary["requests"]
    print(f"soak {summary['duration_s']:.0f} s at {summary['rate_per_s']:.0f} req/s offered "
          f"(max measured: {summary['measured_max_per_s'] or 'not measured'}), "
          f"achieved {summary['achieved_per_s']}/s")  # fmt: skip
    print(
        f"requests: sent {r['sent']}, answered {r['answered']}, statuses "
        f"{summary['statuses']}; worst segment p99 {summary['worst_segment_p99_ms']:.1f} ms"
    )
    print(
        f"UNANSWERED: {summary['unanswered']} (wrk errors: connect {r['connect_errors']}, "
        f"read {r['read_errors']}, write {r['write_errors']}, timeouts {r['timeouts']})"
    )
    print(f"reloads: {summary['reloads_sent']} sent; worker log lines: "
          f"{summary['reloads_ok']} reloaded, {summary['reloads_rejected']} rejected; "
          f"flaps: {summary['flaps']}")  # fmt: skip
    print(f"{'process':<20} {'RSS MiB start/warm/end':>24} {'KiB/min':>9} "
          f"{'fds start/warm/end':>20} {'fds/min':>8}")  # fmt: skip
    for name, p in summary["processes"].items():
        rss = "/".join(f"{p['rss_kb'][k] / 1024:.1f}" for k in ("start", "warm", "end"))
        fds = "/".join(str(p["fds"][k]) for k in ("start", "warm", "end"))
        print(f"{name:<20} {rss:>24} {p['rss_kb_per_min_after_warmup']:>9.1f} "
              f"{fds:>20} {p['fds_per_min_after_warmup']:>8.2f}")  # fmt: skip


def measure_max(procs: bench.Processes, url: str, seconds: int) -> float:
    bench.run_wrk(procs, "wrk-warmup", url, 50, 2, SCENARIO)
    out = bench.run_wrk(procs, "wrk-max", url, 50, seconds, SCENARIO)
    return bench.parse_wrk("gateway", out).requests_per_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of load")
    p.add_argument("--rate", type=float, help="requests/s offered (default: fraction of max)")
    p.add_argument("--fraction", type=float, default=0.5, help="of the measured maximum")
    p.add_argument("--measure-s", type=int, default=10, help="wrk run that measures the max")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=50, help="wrk connections")
    p.add_argument("--segment-s", type=float, default=30.0, help="length of one wrk run")
    p.add_argument("--reload-s", type=float, default=60.0)
    p.add_argument("--flap-s", type=float, default=10.0, help="flappy is down/up this long")
    p.add_argument("--warmup-s", type=float, help="default: a sixth of the run, at most 300")
    p.add_argument("--out", type=Path, default=Path("/tmp/soak"))
    p.add_argument("--png", type=Path, default=bench.REPO / "bench" / "soak.png")
    args = p.parse_args(argv)
    if args.warmup_s is None:
        args.warmup_s = min(300.0, args.duration / 6)
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    procs = bench.Processes(logs)
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    args.ports = {k: bench.free_port() for k in ("stable", "flappy", "gateway", "admin")}
    try:
        stable_block = bench.upstream_block(tmp, args.ports["stable"], SCENARIO)
        stable = bench.start_nginx(procs, tmp, "stable", 1, stable_block)
        flappy = Flappy(procs, tmp, args.ports["flappy"])
        flappy.up()
        for name, proc in (("stable", stable), ("flappy-0", flappy.proc)):
            assert proc is not None
            port = args.ports["stable" if name == "stable" else "flappy"]
            bench.wait_ready(procs, name, proc, [f"http://127.0.0.1:{port}/"], SCENARIO.body)
        config = tmp / "gateway.yaml"
        write_config(config, gateway_config(args, "a", args.ports))
        argv_gw = [sys.executable, "-m", "gateway", "run", str(config), "--workers",
                   str(args.workers)]  # fmt: skip
        gw = procs.start("gateway", argv_gw, cwd=bench.REPO)
        url = args.url = f"http://127.0.0.1:{args.ports['gateway']}/"
        ready = [f"http://127.0.0.1:{args.ports['admin']}/readyz", url]
        bench.wait_ready(procs, "gateway", gw, ready, SCENARIO.body)
        args.measured_max = None
        if args.rate is None:
            args.measured_max = round(measure_max(procs, url, args.measure_s))
            args.rate = args.measured_max * args.fraction
            print(f"measured max {args.measured_max} req/s; offering {args.rate:.0f} req/s",
                  file=sys.stderr)  # fmt: skip
        soak = Soak(gw.pid, Pacer(args.rate, args.connections))
        print(f"soak: {args.duration:.0f} s, outputs in {args.out}", file=sys.stderr)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(drive(args, soak, flappy, config))
        if gw.poll() is not None:
            print(f"the gateway exited with {gw.returncode} during the soak", file=sys.stderr)
        summary = summarise(args, soak, procs.log("gateway") + procs.log("gateway", "out"))
        write_outputs(args, soak, summary)
        print_summary(summary)
        print(f"outputs: {args.out} (samples.csv, traffic.csv, events.csv, summary.json); "
              f"plot: {args.png}")  # fmt: skip
        return 1 if summary["unanswered"] or gw.poll() is not None else 0
    finally:
        procs.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
