"""Side-by-side load benchmark: the gateway against nginx as a reverse proxy.

One run starts, on loopback only:

- an upstream: its own nginx instance answering a fixed body (``return 200 '...'`` for
  small bodies, a static file for large ones), shared by both proxies so neither is
  penalised by a slower backend;
- nginx as a reverse proxy to it (upstream keep-alive, access log off), with as many
  worker processes as the gateway has workers;
- the gateway (``python -m gateway run <config>``) in front of the same upstream.

Each target gets the same wrk load: a 2 s warm-up, then the measured run. The table
compares requests/s, p50/p99 latency and errors, and checks the targets of the issue:
gateway throughput >= 30% of nginx's and p99 <= 3x nginx's (and no errors, so that fast
502s cannot pass). Every process runs in its own process group and is killed in a
``finally``; the temp dir (configs, logs, bodies) is removed at the end.

Scenarios live in ``SCENARIOS``: a new one (header rules, ...) adds an entry with its
body, request path, and the extra gateway route keys / nginx location directives it
needs. Rate-limit scenarios (``rate_limits``) also start a redis-server on a free port
(torn down with everything else) for the policies' store, and compare the gateway
(``gateway``, with the policies) with itself without them (``gateway-norl``: same
config, no policies, no redis section, same worker count) in the same run. TLS
scenarios (``tls=True``) put both proxies' client side on https with the same
certificate (``gateway cert dev``, made per run); the upstream stays plain http, and
targets without TLS (upstream, bare) are reported as n/a. JWT scenarios (``jwt=True``)
make an RSA key and a JWKS file per run, give the gateway's route JWT validation
(``gateway``) and compare it with the same route without (``gateway-norl``); every
request of both (wrk, readiness probes) carries the same valid bearer token.
Screening scenarios (``screening``) give the gateway's route that screening section
(``gateway``) and compare it with the same route without (``gateway-norl``); wrk POSTs
``request_body`` as JSON to both (a Lua script reading it from a file).
Access-log scenarios (``access_log``) give ``gateway`` that access_log section, writing
to a file in the run's temp dir, and compare it with ``gateway-norl`` (log off).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WARMUP_S = 2
READY_TIMEOUT_S = 15.0
INLINE_BODY_MAX = 1024  # larger bodies are served from a file (nginx caps config tokens)
RPS_MIN_RATIO = 0.30  # gateway req/s >= 30% of nginx
P99_MAX_RATIO = 3.0  # gateway p99 <= 3x nginx
RL_MIN_RATIO = 0.80  # with a Redis rate-limit policy >= 80% of the same gateway without
JWT_MIN_RATIO = 0.85  # with JWT validation >= 85% of the same gateway without
SCREENING_MIN_RATIO = 0.85  # with pattern screening >= 85% of the same gateway without
ACCESS_LOG_MIN_RATIO = 0.80  # logging every request to a file >= 80% of the same, log off
# Headers every request of the run sends (wrk and readiness probes): the JWT scenario's
# bearer token, set once per run by ``make_jwt_files``.
REQUEST_HEADERS: dict[str, str] = {}


def _json_body(size: int) -> bytes:
    """A JSON document of exactly ``size`` bytes, safe inside an nginx '...' string."""
    head = b'{"id":12345,"name":"bench","items":[1,2,3],"ok":true,"pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def _api_json_body() -> bytes:
    """~4 KB of realistic API JSON (the screening harness's timing body): names with
    apostrophes, prose saying select/union, URLs with query strings, a non-ASCII name."""
    item = (
        '{"sku": "SKU-%05d", "title": "Hand-made ceramic mug, 350 ml", "note": "Please '
        "don't ship before Friday; it's a gift for my sister's birthday.\", \"qty\": %d, "
        '"price": 12.5, "url": "https://shop.example.com/p/%d?ref=cart&utm_source=app"}'
    )
    items = ", ".join(item % (i, i % 3 + 1, i) for i in range(16))
    return (
        '{"user": {"id": 12345, "name": "Zo\\u00eb O\'Brien", "email": "zoe@example.com"}, '
        f'"items": [{items}], "comment": "Select the union option if you\'re a member '
        "(it's cheaper).\"}"
    ).encode()


@dataclass(frozen=True)
class Scenario:
    description: str
    body: bytes  # what the upstream answers, and what each proxy must pass through
    path: str = "/"
    content_type: str = "application/json"
    route_extra: dict[str, Any] = field(default_factory=dict)  # merged into the route
    nginx_location_extra: str = ""  # directives added to the proxy nginx location
    upstream_extra: str = ""  # directives added to the upstream's location (headers)
    tls: bool = False  # clients speak https to the proxies (the upstream stays plain http)
    new_connection: bool = False  # one request per connection: wrk sends Connection: close
    # Policies for the gateway's route (target "gateway" only; "gateway-norl" runs
    # without them). Non-empty: a redis-server is started for the redis store.
    rate_limits: list[dict[str, Any]] = field(default_factory=list)
    targets: tuple[str, ...] = ("nginx", "gateway", "bare")  # the default --targets
    rounds: int = 1  # the default --rounds
    jwt: bool = False  # target "gateway" validates a bearer JWT; "gateway-norl" does not
    # Target "gateway"'s route gets this screening section; "gateway-norl" does not.
    screening: dict[str, Any] | None = None
    request_body: bytes = b""  # non-empty: wrk POSTs it as application/json
    # Target "gateway" gets this access_log section (output: a file in the temp dir);
    # "gateway-norl" runs with the log off.
    access_log: dict[str, Any] | None = None


SCENARIOS: dict[str, Scenario] = {
    "small-get": Scenario("GET, 117-byte JSON body, keep-alive", _json_body(117)),
    # Issue 8's comparison: gateway cache hits against nginx's plain pass-through (no
    # proxy_cache), same load. The upstream marks the body cacheable with a validator
    # (the gateway stores only what it can revalidate).
    "cache-hit": Scenario(
        "GET, 117-byte JSON body, gateway answering from its cache; nginx proxying",
        _json_body(117),
        route_extra={"cache": {}},
        upstream_extra="add_header Cache-Control 'max-age=3600' always; "
        "add_header ETag '\"v1\"' always;",
        targets=("nginx", "gateway"),
    ),
    "large-get": Scenario(
        "GET, 1 MiB body, keep-alive",
        b"0123456789abcdef" * 65536,
        path="/large",
        content_type="application/octet-stream",
        # nginx's default 8 x 4k buffers cost it ~20% here; give the baseline its best.
        nginx_location_extra="proxy_buffers 16 64k; proxy_buffer_size 64k;",
    ),
    "tls-keepalive": Scenario(
        "GET, 117-byte JSON body, https, keep-alive", _json_body(117), tls=True
    ),
    "tls-new-conn": Scenario(
        "GET, 117-byte JSON body, https, a new TLS connection per request",
        _json_body(117),
        tls=True,
        new_connection=True,
    ),
    "ratelimit": Scenario(
        "GET, 117-byte JSON body, keep-alive, one rate-limit policy on a Redis store",
        _json_body(117),
        # Far above what any run can send: every request is decided (one Redis check,
        # batched per event-loop tick) and admitted, so this measures deciding.
        rate_limits=[
            {"name": "bench", "rate": "1000000/s", "key": ["client_ip"], "store": "redis"}
        ],
        targets=("gateway-norl", "gateway"),
        rounds=3,
    ),
    # Issue 10: JWT-validated pass-through against the same route without validation.
    "jwt": Scenario(
        "GET, 117-byte JSON body, keep-alive, a valid RS256 bearer JWT checked per request",
        _json_body(117),
        jwt=True,
        targets=("gateway-norl", "gateway"),
        rounds=3,
    ),
    # Issue 5: a ~4 KB JSON body POSTed through a screened route (default screening:
    # every category, body inspected) against the same route without screening.
    "screening": Scenario(
        "POST ~4 KB JSON body, keep-alive, pattern screening of head and body",
        _json_body(117),
        screening={},
        request_body=_api_json_body(),
        targets=("gateway-norl", "gateway"),
        rounds=3,
    ),
    # Issue 9: small-get with every request logged (JSON line, writer thread, O_APPEND
    # file) against the same gateway with the access log off.
    "access-log": Scenario(
        "GET, 117-byte JSON body, keep-alive, access log full to a file",
        _json_body(117),
        access_log={"mode": "full"},
        targets=("gateway-norl", "gateway"),
        rounds=3,
    ),
}
TARGETS = ("upstream", "nginx", "gateway", "gateway-norl", "bare")
GATEWAYS = ("gateway", "gateway-norl")  # gateway-norl: the scenario without rate limits
# No TLS listener (the upstream and bench/bare_proxy.py): "n/a" in TLS scenarios.
NO_TLS_TARGETS = {"upstream", "bare"}


@dataclass
class Result:
    target: str
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int
    socket_errors: int
    connections_opened: int | None = None  # TCP connections accepted during the run
    cpu_s: float | None = None  # CPU time (user + sys) of the target's processes in the run
    script_calls: int | None = None  # Redis script calls in the run (rate-limited gateway)

    @property
    def connections_per_request(self) -> float | None:
        if self.connections_opened is None or not self.requests:
            return None
        return self.connections_opened / self.requests

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_s is None or not self.requests:
            return None
        return self.cpu_s * 1e6 / self.requests

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + self.socket_errors


class Processes:
    """Children started in their own process groups; ``close`` kills every group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        out = open(self.log_dir / f"{name}.out", "wb")  # noqa: SIM115 - closed with the child
        err = open(self.log_dir / f"{name}.err", "wb")  # noqa: SIM115
        with out, err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def log(self, name: str, stream: str = "err") -> str:
        path = self.log_dir / f"{name}.{stream}"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait_s)
        # The group may outlive its leader (nginx workers): make sure it is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


@dataclass(frozen=True)
class TLSFiles:
    """The certificate both proxies serve (``gateway cert dev``) and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path
    resumption: bool  # False: neither proxy issues session tickets or caches sessions

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


# OpenSSL config for the gateway process when --tls-resumption off: Python's ssl module
# has no per-context switch for the server session cache, and the gateway's config has no
# TLS session settings (issue 3 does not ask for them). No TLS 1.3 tickets means no TLS 1.3
# resumption; wrk and the readiness probe negotiate TLS 1.3 with both proxies.
NO_TICKETS_OPENSSL_CONF = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
NumTickets = 0
"""


def make_tls_files(tmp: Path, resumption: bool) -> TLSFiles:
    out = tmp / "certs"
    argv = [sys.executable, "-m", "gateway", "cert", "dev", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"gateway cert dev failed ({done.returncode}):\n{done.stderr}")
    return TLSFiles(out / "server.pem", out / "server-key.pem", out / "ca.pem", resumption)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_conf(prefix: Path, workers: int, http_block: str) -> str:
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read tmp files
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
{temps}
{http_block}
}}
"""


def start_nginx(
    procs: Processes, tmp: Path, name: str, workers: int, block: str
) -> subprocess.Popen[bytes]:
    prefix = tmp / name
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, workers, block))
    argv = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"{name}: nginx config rejected:\n{check.stderr}")
    return procs.start(name, argv)


def upstream_block(tmp: Path, port: int, scenario: Scenario) -> str:
    if len(scenario.body) <= INLINE_BODY_MAX:
        text = scenario.body.decode().replace("\\", "\\\\").replace("'", "\\'")
        assert "$" not in text, "nginx would expand $ in a return body"
        answer = f"return 200 '{text}';"
    else:
        (tmp / "body.bin").write_bytes(scenario.body)
        answer = f"root {tmp}; try_files /body.bin =404;"
    return f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type {scenario.content_type}; {scenario.upstream_extra} {answer} }}
    }}"""


def nginx_tls(tls: TLSFiles | None) -> str:
    if tls is None:
        return ""
    # nginx's defaults otherwise: session tickets on (keys made per start), no shared
    # session cache; the gateway's Python server issues tickets and caches sessions too.
    session = "" if tls.resumption else "ssl_session_tickets off; ssl_session_cache off;"
    return f"""
        ssl_certificate {tls.cert};
        ssl_certificate_key {tls.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        {session}"""


def proxy_block(port: int, upstream_port: int, scenario: Scenario, tls: TLSFiles | None) -> str:
    ssl_flag = " ssl" if tls else ""
    return f"""    upstream bench {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port}{ssl_flag} backlog=4096;{nginx_tls(tls)}
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;  # stream large bodies, never buffer them to disk
            {scenario.nginx_location_extra}
        }}
    }}"""


def gateway_config(
    port: int,
    admin_port: int,
    upstream_port: int,
    workers: int,
    sc: Scenario,
    tls: TLSFiles | None,
    redis_url: str | None = None,
    jwks_file: Path | None = None,
    screening: bool = False,
    access_log_file: Path | None = None,
) -> dict[str, Any]:
    """The gateway's config; with ``redis_url``, the scenario's rate-limit policies too;
    with ``jwks_file``, JWT validation on the route."""
    listener: dict[str, Any] = {"address": f"127.0.0.1:{port}"}
    if tls is not None:
        pair = {"cert_file": str(tls.cert), "key_file": str(tls.key)}
        listener["tls"] = {"certificates": [pair]}
    route = {"name": "all", "match": {"path": {"prefix": "/"}}, "upstream": "bench"}
    config: dict[str, Any] = {
        "listeners": [listener],
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "workers": workers,
        "upstreams": {"bench": {"endpoints": [f"http://127.0.0.1:{upstream_port}"]}},
        "routes": [route | sc.route_extra],
    }
    if redis_url is not None and sc.rate_limits:
        config["redis"] = {"url": redis_url}
        config["routes"][0]["rate_limits"] = sc.rate_limits
    if jwks_file is not None:
        config["routes"][0]["auth"] = {
            "jwt": {"jwks_file": str(jwks_file), "audiences": ["bench"],
                    "claims_to_headers": {"sub": "X-User-Id"}}
        }  # fmt: skip
    if screening and sc.screening is not None:
        config["routes"][0]["screening"] = sc.screening
    if access_log_file is not None and sc.access_log is not None:
        config["access_log"] = {**sc.access_log, "output": str(access_log_file)}
    return config


def make_jwt_files(tmp: Path) -> Path:
    """An RSA key's JWKS file; sets REQUEST_HEADERS to a bearer token it signed (1 h)."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    n = pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")
    jwk = {"kty": "RSA", "kid": "bench", "n": b64(n), "e": b64(pub.e.to_bytes(3, "big"))}
    path = tmp / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    head = b64(json.dumps({"alg": "RS256", "kid": "bench", "typ": "JWT"}).encode())
    claims = {"sub": "bench-user", "aud": "bench", "exp": int(time.time()) + 3600}
    body = b64(json.dumps(claims).encode())
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    REQUEST_HEADERS["Authorization"] = f"Bearer {head}.{body}.{b64(sig)}"
    return path


def start_redis(procs: Processes, port: int) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:``port``, persistence off, answering PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: apt-get install -y redis-server")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"]  # fmt: skip
    proc = procs.start("redis", argv)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}: {procs.log('redis')}")
        with contextlib.suppress(OSError):
            if redis_command(port, "PING").startswith(b"+PONG"):
                return proc
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer PING within {READY_TIMEOUT_S:.0f} s")


def redis_command(port: int, command: str) -> bytes:
    """One inline command, the whole answer (small answers only: INFO, PING)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(command.encode() + b"\r\n")
        data = s.recv(65536)
        if data.startswith(b"$"):  # bulk string: read up to its announced length
            head, _, rest = data.partition(b"\r\n")
            while len(rest) < int(head[1:]) + 2:
                more = s.recv(65536)
                if not more:
                    break
                rest += more
            return rest
        return data


def script_calls(port: int) -> int:
    """EVALSHA + EVAL calls Redis has served (INFO commandstats)."""
    info = redis_command(port, "INFO commandstats").decode()
    return sum(int(m[1]) for m in re.finditer(r"^cmdstat_eval(?:sha)?:calls=(\d+)", info, re.M))


def http_get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        req = urllib.request.Request(url, headers=REQUEST_HEADERS)
        with urllib.request.urlopen(req, timeout=2, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(
    procs: Processes,
    name: str,
    proc: subprocess.Popen[bytes],
    urls: list[str],
    body: bytes,
    tls: TLSFiles | None = None,
) -> None:
    """Poll until every URL answers 200 (the last one with ``body``), or fail loudly."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            last = f"exited with code {proc.returncode}"
            break
        try:
            context = tls.client_context() if tls else None
            answers = [http_get(url, context if url.startswith("https:") else None) for url in urls]
        except OSError as e:
            last = f"{type(e).__name__}: {e}"
        else:
            statuses = [status for status, _ in answers]
            last = f"statuses {statuses}"
            if all(s == 200 for s in statuses):
                if answers[-1][1] == body:
                    return
                last = f"wrong body through {urls[-1]}: {len(answers[-1][1])} bytes"
        time.sleep(0.1)
    raise RuntimeError(
        f"{name} did not come up (within {READY_TIMEOUT_S:.0f} s): {last}.\n"
        f"--- {name} stderr ---\n{procs.log(name)[-4000:]}"
        f"--- {name} stdout ---\n{procs.log(name, 'out')[-2000:]}"
    )


@dataclass
class TLSProbe:
    """What a target's TLS looks like to a client: two requests, each on its own connection."""

    version: str
    cipher: str
    same_certificate: bool  # the leaf served is the one in TLSFiles.cert
    closes: bool  # answered "Connection: close" to "Connection: close" and closed the socket
    resumed: bool  # the second connection resumed the first one's session (ticket or cache)


def _tls_request(
    port: int, path: str, context: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bytes, dict[str, Any]]:
    """One GET with Connection: close on a new TLS connection, read to EOF."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=2)
    with context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as conn:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        conn.sendall(request.encode())
        data = b""
        while chunk := conn.recv(65536):  # the server must close, or this times out
            data += chunk
        # Read while open: a closed SSLSocket answers None for all of these.
        facts = {
            "version": conn.version(),
            "cipher": (conn.cipher() or ("?",))[0],
            "leaf": conn.getpeercert(binary_form=True),
            "session": conn.session,  # TLS 1.3: the server's ticket, read with the answer
            "reused": conn.session_reused,
        }
    return data, facts


def tls_probe(name: str, port: int, path: str, body: bytes, tls: TLSFiles) -> TLSProbe:
    """Check the TLS endpoint as wrk will see it and report version, cipher, resumption."""
    context = tls.client_context()  # verifies the certificate against the dev CA
    leaf = ssl.PEM_cert_to_DER_cert(tls.cert.read_text())
    answers = []
    session = None
    for _ in range(2):
        try:
            data, facts = _tls_request(port, path, context, session)
        except (OSError, ssl.SSLError) as e:
            raise RuntimeError(f"{name}: TLS request failed: {type(e).__name__}: {e}") from None
        head, _, got = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 ") or got != body:
            raise RuntimeError(f"{name}: bad answer over TLS: {data[:300]!r}")
        answers.append((head, facts))
        session = facts["session"]
    (head1, first), (head2, second) = answers
    return TLSProbe(
        version=first["version"],
        cipher=first["cipher"],
        same_certificate=first["leaf"] == leaf,
        closes=all(b"\r\nconnection: close" in h.lower() for h in (head1, head2)),
        resumed=bool(second["reused"]),
    )


def group_cpu_s(pgid: int) -> float | None:
    """User + system CPU seconds of the live processes in process group ``pgid``."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:  # fields[0] is field 3 (state) of proc(5)
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK") if ticks else None


def passive_opens() -> int | None:
    """TCP connections accepted in this network namespace so far (/proc/net/snmp)."""
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
    except OSError:
        return None
    names, values = [ln for ln in lines if ln and ln[0] == "Tcp:"][:2]
    return int(values[names.index("PassiveOpens")])


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _latency_ms(out: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    if not m:
        raise ValueError(f"no {pct}% latency in wrk output")
    return float(m[1]) * _UNIT_MS[m[2]]


def parse_wrk(target: str, out: str) -> Result:
    try:
        rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
        count = re.search(r"^\s*(\d+) requests in", out, re.M)
        if not (rps and count):
            raise ValueError("no Requests/sec in wrk output")
        sock = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
        )
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return Result(
            target=target,
            requests=int(count[1]),
            requests_per_s=float(rps[1]),
            p50_ms=_latency_ms(out, "50"),
            p99_ms=_latency_ms(out, "99"),
            non_2xx_3xx=int(non2xx[1]) if non2xx else 0,
            socket_errors=sum(int(n) for n in sock.groups()) if sock else 0,
        )
    except ValueError as e:
        raise RuntimeError(f"cannot parse wrk output for {target}: {e}\n{out}") from None


def run_wrk(
    procs: Processes, name: str, url: str, connections: int, duration_s: int, sc: Scenario
) -> str:
    # With "Connection: close" the proxy answers "Connection: close" and closes; wrk then
    # reconnects (a new TCP connection and TLS handshake) before its next request.
    headers = ["-H", "Connection: close"] if sc.new_connection else []
    for k, v in REQUEST_HEADERS.items():
        headers += ["-H", f"{k}: {v}"]
    if sc.request_body:  # POST it: a wrk script reads the body from a file
        (procs.log_dir / "request-body.json").write_bytes(sc.request_body)
        script = procs.log_dir / "post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'local f = io.open("{procs.log_dir / "request-body.json"}", "rb")\n'
            'wrk.body = f:read("*a")\nf:close()\n'
        )
        headers += ["-s", str(script)]
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", *headers, url]
    proc = procs.start(name, argv)
    try:
        proc.wait(duration_s + 30)
    finally:
        procs.stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {procs.log(name)}")
    return procs.log(name, "out")


@dataclass
class Run:
    results: list[Result]
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why
    tls: dict[str, TLSProbe] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)  # target -> req/s per round


def benchmark(args: argparse.Namespace, tmp: Path, procs: Processes) -> Run:
    sc = SCENARIOS[args.scenario]
    run = Run(results=[])
    started: dict[str, subprocess.Popen[bytes]] = {}
    if sc.tls:
        run.skipped = {t: "no TLS" for t in args.targets if t in NO_TLS_TARGETS}
    targets = [t for t in args.targets if t not in run.skipped]
    tls = make_tls_files(tmp, args.tls_resumption == "on") if sc.tls else None
    ports = {name: free_port() for name in TARGETS}
    admin_ports = {name: free_port() for name in GATEWAYS}
    urls = {name: f"http://127.0.0.1:{port}{sc.path}" for name, port in ports.items()}
    if tls is not None:
        for name in ("nginx", "gateway"):
            urls[name] = f"https://127.0.0.1:{ports[name]}{sc.path}"

    up = ports["upstream"]
    proc = start_nginx(procs, tmp, "upstream", args.upstream_workers, upstream_block(tmp, up, sc))
    wait_ready(procs, "upstream", proc, [urls["upstream"]], sc.body)
    started["upstream"] = proc
    if "nginx" in targets:
        block = proxy_block(ports["nginx"], up, sc, tls)
        proc = start_nginx(procs, tmp, "nginx", args.workers, block)
        wait_ready(procs, "nginx", proc, [urls["nginx"]], sc.body, tls)
        started["nginx"] = proc
    redis_port = None
    if sc.rate_limits and "gateway" in targets:
        redis_port = free_port()
        start_redis(procs, redis_port)
    for name in GATEWAYS:
        if name not in targets:
            continue
        config = tmp / f"{name}.yaml"
        with_redis = name == "gateway" and redis_port is not None
        redis_url = f"redis://127.0.0.1:{redis_port}/0" if with_redis else None
        jwks = make_jwt_files(tmp) if sc.jwt and name == "gateway" else None
        cfg = gateway_config(
            ports[name], admin_ports[name], up, args.workers, sc, tls, redis_url, jwks,
            screening=name == "gateway",
            access_log_file=tmp / "access.log" if name == "gateway" else None,
        )  # fmt: skip
        config.write_text("# JSON is YAML\n" + json.dumps(cfg, indent=2) + "\n")
        argv = [sys.executable, "-m", "gateway", "run", str(config)]
        env = None
        if tls is not None and not tls.resumption:
            (tmp / "no-tickets.cnf").write_text(NO_TICKETS_OPENSSL_CONF)
            env = os.environ | {"OPENSSL_CONF": str(tmp / "no-tickets.cnf")}
        proc = procs.start(name, argv, cwd=REPO, env=env)
        ready = [f"http://127.0.0.1:{admin_ports[name]}/readyz", urls[name]]
        wait_ready(procs, name, proc, ready, sc.body, tls)
        if redis_url is not None:
            check_rate_limited(name, urls[name], redis_port)
        started[name] = proc

    if "bare" in targets:
        argv = [sys.executable, str(REPO / "bench" / "bare_proxy.py"), str(ports["bare"]), str(up)]
        proc = procs.start("bare", argv, cwd=REPO)
        wait_ready(procs, "bare", proc, [urls["bare"]], sc.body)
        started["bare"] = proc

    if tls is not None:
        for target in targets:
            run.tls[target] = probe = tls_probe(target, ports[target], sc.path, sc.body, tls)
            if not (probe.same_certificate and probe.closes):
                raise RuntimeError(f"{target}: TLS probe failed: {probe}")

    # Rounds alternate the order (A B, B A, ...) so that drift on this shared box (other
    # processes, turbo) does not always favour the same target; each target reports its
    # median round by req/s.
    rounds: dict[str, list[Result]] = {t: [] for t in targets}
    for i in range(args.rounds):
        for target in targets if i % 2 == 0 else targets[::-1]:
            label = f"round {i + 1}/{args.rounds}, " if args.rounds > 1 else ""
            print(f"# {target}: {label}warm-up {WARMUP_S} s, then {args.duration} s",
                  file=sys.stderr)  # fmt: skip
            run_wrk(procs, f"wrk-{target}-warmup", urls[target], args.connections, WARMUP_S, sc)
            pgid = started[target].pid  # each target runs in its own session / process group
            decider = redis_port is not None and target == "gateway"
            calls = script_calls(redis_port) if decider and redis_port else 0
            opened, cpu = passive_opens(), group_cpu_s(pgid)
            out = run_wrk(procs, f"wrk-{target}", urls[target], args.connections, args.duration, sc)
            opened_after, cpu_after = passive_opens(), group_cpu_s(pgid)
            result = parse_wrk(target, out)
            if decider and redis_port:
                result.script_calls = script_calls(redis_port) - calls
            if opened is not None and opened_after is not None:
                result.connections_opened = opened_after - opened
            if cpu is not None and cpu_after is not None:
                result.cpu_s = cpu_after - cpu
            rounds[target].append(result)
    run.rounds = {t: [r.requests_per_s for r in rs] for t, rs in rounds.items()}
    if sc.access_log is not None and (tmp / "access.log").exists():
        with (tmp / "access.log").open("rb") as f:
            logged = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        print(f"# access log: {logged} lines written", file=sys.stderr)
    run.results = [
        sorted(rs, key=lambda r: r.requests_per_s)[len(rs) // 2] for rs in rounds.values()
    ]
    return run


def check_rate_limited(name: str, url: str, redis_port: int | None) -> None:
    """The policy is live: the answer carries its fields and Redis ran the script."""
    assert redis_port is not None
    with urllib.request.urlopen(url, timeout=2) as resp:
        policy = resp.headers.get("RateLimit-Policy")
    if not policy or not script_calls(redis_port):
        raise RuntimeError(f"{name}: no rate-limit decision in Redis (RateLimit-Policy {policy!r})")


def checks(results: list[Result], sc: Scenario | None = None) -> list[dict[str, Any]]:
    by_name = {r.target: r for r in results}
    nginx, gw, norl = by_name.get("nginx"), by_name.get("gateway"), by_name.get("gateway-norl")
    out: list[dict[str, Any]] = []
    if gw and norl:
        ratio = gw.requests_per_s / norl.requests_per_s
        label, floor = "rate-limited/not req/s", RL_MIN_RATIO
        if sc is not None and sc.jwt:
            label, floor = "jwt/plain req/s", JWT_MIN_RATIO
        if sc is not None and sc.screening is not None:
            label, floor = "screened/plain req/s", SCREENING_MIN_RATIO
        if sc is not None and sc.access_log is not None:
            label, floor = "logged/unlogged req/s", ACCESS_LOG_MIN_RATIO
        out += [
            {"check": label, "value": ratio, "target": f">= {floor}",
             "passed": ratio >= floor},
            {"check": "gateway errors", "value": gw.errors, "target": "== 0",
             "passed": gw.errors == 0},
        ]  # fmt: skip
    if not (nginx and gw):
        return out
    rps_ratio = gw.requests_per_s / nginx.requests_per_s
    p99_ratio = gw.p99_ms / nginx.p99_ms
    return [
        {"check": "gateway/nginx req/s", "value": rps_ratio, "target": f">= {RPS_MIN_RATIO}",
         "passed": rps_ratio >= RPS_MIN_RATIO},
        {"check": "gateway/nginx p99", "value": p99_ratio, "target": f"<= {P99_MAX_RATIO}",
         "passed": p99_ratio <= P99_MAX_RATIO},
        *([] if out else [{"check": "gateway errors", "value": gw.errors, "target": "== 0",
                           "passed": gw.errors == 0}]),
        *out,
    ]  # fmt: skip


def decisions(run: Run, duration_s: int) -> dict[str, float] | None:
    """Rate-limit decisions of the measured run: one per request of the target "gateway"."""
    gw = next((r for r in run.results if r.target == "gateway"), None)
    if gw is None or gw.script_calls is None:
        return None
    return {
        "decisions_per_s": gw.requests_per_s,
        "script_calls_per_s": gw.script_calls / duration_s,
        "decisions_per_call": gw.requests / gw.script_calls if gw.script_calls else 0.0,
    }


def print_report(args: argparse.Namespace, run: Run, checked: list[dict[str, Any]]) -> None:
    sc = SCENARIOS[args.scenario]
    print(f"scenario {args.scenario}: {sc.description}")
    extra = ', -H "Connection: close"' if sc.new_connection else ""
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration}s{extra}, "
        f"{args.workers} worker(s) per proxy"
    )
    if sc.tls:
        print(f"TLS session resumption offered by both proxies: {args.tls_resumption}")
    for target, probe in run.tls.items():
        print(
            f"  {target}: {probe.version} {probe.cipher}, same certificate: "
            f"{probe.same_certificate}, a second connection resumed: {probe.resumed}"
        )
    if args.rounds > 1:
        print(f"{args.rounds} rounds in alternating order, the median round of each target:")
    print(
        f"\n{'target':<14}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}"
        f"{'conn/req':>10}{'cpu us/req':>12}"
    )
    for r in run.results:
        cpr, cpu = r.connections_per_request, r.cpu_us_per_request
        print(
            f"{r.target:<14}{r.requests_per_s:>12,.0f}{r.p50_ms:>10.2f}"
            f"{r.p99_ms:>10.2f}{r.errors:>9}{'?' if cpr is None else f'{cpr:.3f}':>10}"
            f"{'?' if cpu is None else f'{cpu:.0f}':>12}"
        )
    for target, why in run.skipped.items():
        cells = "".join(f"{'n/a':>{width}}" for width in (12, 10, 10, 9, 10, 12))
        print(f"{target:<14}{cells}  ({why})")
    if args.rounds > 1:
        print()
        for target, rates in run.rounds.items():
            print(f"{target:<14}req/s per round: {', '.join(f'{x:,.0f}' for x in rates)}")
    if (d := decisions(run, args.duration)) is not None:
        print(
            f"\nrate limiting: {d['decisions_per_s']:,.0f} decisions/s in Redis, "
            f"{d['script_calls_per_s']:,.0f} script calls/s, "
            f"{d['decisions_per_call']:.1f} decisions per call"
        )
        by_name = {r.target: r for r in run.results}
        gw, norl = by_name["gateway"], by_name.get("gateway-norl")
        if norl and gw.cpu_us_per_request and norl.cpu_us_per_request:
            print(
                f"gateway CPU per request: {gw.cpu_us_per_request:.0f} us with the policy, "
                f"{norl.cpu_us_per_request:.0f} us without (ratio "
                f"{norl.cpu_us_per_request / gw.cpu_us_per_request:.2f})"
            )
    if checked:
        print()
    for c in checked:
        verdict = "PASS" if c["passed"] else "FAIL"
        value = f"{c['value']:.2f}" if isinstance(c["value"], float) else str(c["value"])
        print(f"{c['check']:<22}{value:>8}  (target {c['target']})  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per target")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="measured runs per target, in alternating order; the median is reported "
        "(default 1; ratelimit: 3)",
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="small-get")
    parser.add_argument("--workers", type=int, default=1, help="gateway workers = nginx workers")
    parser.add_argument("--upstream-workers", type=int, default=1)
    parser.add_argument(
        "--targets",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated, from: upstream (direct), nginx, gateway, gateway-norl (the "
        "gateway without the scenario's rate limits), bare (bench/bare_proxy.py); default: "
        "nginx,gateway,bare (ratelimit: gateway-norl,gateway)",
    )
    parser.add_argument(
        "--tls-resumption",
        choices=["on", "off"],
        default="on",
        help="TLS scenarios: both proxies issue session tickets (on, their defaults) or "
        "neither does, so every new connection is a full handshake (off)",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = parser.parse_args(argv)
    if args.targets is None:
        args.targets = list(SCENARIOS[args.scenario].targets)
    if args.rounds is None:
        args.rounds = SCENARIOS[args.scenario].rounds
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if unknown := set(args.targets) - set(TARGETS):
        parser.error(f"unknown targets: {sorted(unknown)}")
    if not 1 <= args.duration <= 600:
        parser.error("--duration must be between 1 and 600 s")
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found: apt-get install -y nginx wrk")
    if SCENARIOS[args.scenario].rate_limits and shutil.which("redis-server") is None:
        parser.error("redis-server not found: apt-get install -y redis-server")

    # SIGTERM unwinds like Ctrl-C, so the finally below still tears everything down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    tmp.chmod(0o755)
    procs = Processes(tmp)
    try:
        run = benchmark(args, tmp, procs)
    finally:
        procs.close()
        if args.keep:
            print(f"# kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    checked = checks(run.results, SCENARIOS[args.scenario])
    if args.json:
        doc = {
            "scenario": args.scenario,
            "duration_s": args.duration,
            "connections": args.connections,
            "workers": args.workers,
            "results": [
                vars(r)
                | {
                    "errors": r.errors,
                    "connections_per_request": r.connections_per_request,
                    "cpu_us_per_request": r.cpu_us_per_request,
                }
                for r in run.results
            ],
            "skipped": run.skipped,
            "checks": checked,
            "rounds": run.rounds,
        }
        if (d := decisions(run, args.duration)) is not None:
            doc["rate_limiting"] = d
        if SCENARIOS[args.scenario].tls:
            doc["tls_resumption"] = args.tls_resumption
            doc["tls"] = {target: vars(probe) for target, probe in run.tls.items()}
        print(json.dumps(doc, indent=2))
    else:
        print_report(args, run, checked)
    failed = any(not c["passed"] for c in checked)
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
