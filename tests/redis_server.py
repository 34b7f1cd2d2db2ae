"""Real redis-server processes for tests: one per session, or one per test to abuse.

`RedisServer` is a redis-server child on 127.0.0.1:<free port> (never 6379), with
persistence off. Tests may kill it (`kill`, SIGKILL), pause it (`pause`/`resume`,
SIGSTOP/SIGCONT) and start it again on the same port (`start`), as an outage would.

Fixtures, exposed to every test package through tests/conftest.py:

- `redis_server`: one server for the whole session (per xdist worker); tests isolate
  themselves with a fresh key prefix and must leave it running.
- `redis_factory`: dedicated servers for tests that kill, pause or restart them;
  stopped (SIGCONT first, then SIGKILL) when the test ends.

If the binary is missing the tests fail (not skip): the Lua script and the gateway's
Redis behaviour must be tested against a real server. `./dev test` installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support import free_port

__all__ = ["MISSING", "RedisServer", "redis_factory", "redis_server"]

MISSING = "redis-server not found: apt-get install -y redis-server"


class RedisServer:
    """A redis-server child process on 127.0.0.1:<port>."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 5.0) -> None:
        """Start (or start again, on the same port) and wait for PONG."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(MISSING)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}")
            if self.ping():
                return
            time.sleep(0.01)  # startup of an external process, not a state of ours
        pytest.fail(f"redis-server did not answer PING within {timeout_s:g} s")

    def ping(self, timeout_s: float = 0.2) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing is answered."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, connections reset."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} pid={self.proc.pid if self.proc else None}>"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory() -> Iterator[Callable[[], RedisServer]]:
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(free_port())
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
