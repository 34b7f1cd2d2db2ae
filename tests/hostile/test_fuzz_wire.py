"""Property tests (hypothesis): raw requests sent to a running gateway.

Request lines and headers from a grammar with hostile pieces, and raw bytes: the
gateway answers (no 5xx but its 501/505 refusals) or closes, its upstream never
receives an ambiguous message, and a normal request is served afterwards. The gateway
runs in a thread with its own event loop, so hypothesis drives plain sockets. Time is
bounded by `max_examples` (a few seconds on a loaded machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.worker import Worker
from tests.hostile.wire import RecordingUpstream, unambiguous
from tests.support import free_port, gateway_config, write_config


class ThreadGateway:
    """A gateway Worker and a recording upstream on an event loop in a thread."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.upstream = RecordingUpstream()
        self.worker: Worker | None = None
        self.port = 0

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def start(self) -> None:
        self.thread.start()
        self.call(self.upstream.__aenter__())
        path = self.tmp / "fuzz.yaml"
        write_config(
            path,
            gateway_config(
                port=0,
                admin_port=free_port(),
                upstreams={"up": [f"http://127.0.0.1:{self.upstream.port}"]},
                routes=[{"name": "all", "match": {}, "upstream": "up"}],
                server={"header_timeout": "2s", "watch_config": False},
            ),
        )
        self.worker = Worker(path)
        self.call(self.worker.start())
        self.port = self.worker.bound[0][1]

    def stop(self) -> None:
        assert self.worker is not None
        self.call(self.worker.stop())
        self.call(self.upstream.__aexit__())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def __repr__(self) -> str:
        return f"<ThreadGateway :{self.port} {self.upstream!r}>"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadGateway]:
    gw = ThreadGateway(tmp_path_factory.mktemp("fuzz"))
    gw.start()
    yield gw
    gw.stop()


def send(port: int, data: bytes, wait_s: float) -> bytes:
    """Write `data`; read until the gateway closes or `wait_s` of silence."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(wait_s)
        with contextlib.suppress(OSError):
            sock.sendall(data)
        got = bytearray()
        with contextlib.suppress(TimeoutError, OSError):
            while chunk := sock.recv(65536):
                got += chunk
        return bytes(got)


class _Statuses:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())


# The 5xx the gateway answers by design to what it will not forward (requestcheck.py).
REFUSALS = (501, 505)


def statuses(data: bytes) -> list[int]:
    res = _Statuses()
    with contextlib.suppress(httptools.HttpParserError):
        res.parser.feed_data(data)
    return res.statuses


methods = st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PUT", "CONNECT", "get", "G\x00T", ""])
targets = st.sampled_from(
    ["/", "/a?b=c", "*", "http://api.test/x", "//x", "/a/../b", "/%2e%2e/", "x", "/\xff", "/a#b"]
) | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 ", "http/1.1", ""])
raw_headers = st.lists(
    st.sampled_from(
        [
            b"Host: api.test", b"Content-Length: 3", b"Content-Length: 3", b"Content-Length: -1",
            b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
            b"Transfer-Encoding : chunked", b" folded", b"X-A: \x00", b"X-A: \xff\xfe",
            b"Connection: keep-alive, Content-Length", b"Expect: 100-continue",
            b"Upgrade: websocket", b"Connection: upgrade", b"X:", b":", b"Host: other.test",
        ]
    )
    | st.binary(max_size=20),
    max_size=6,
)  # fmt: skip
bodies = st.sampled_from(
    [
        b"",
        b"abc",
        b"3\r\nabc\r\n0\r\n\r\n",
        b"zz\r\n",
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    method=methods,
    target=targets,
    version=versions,
    headers=raw_headers,
    body=bodies,
    tail=st.binary(max_size=16),
)
def test_raw_requests_are_answered_or_closed(
    live: ThreadGateway,
    method: str,
    target: str,
    version: str,
    headers: list[bytes],
    body: bytes,
    tail: bytes,
) -> None:
    line = f"{method} {target} {version}".encode("utf-8", "surrogateescape")
    data = line + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
    data += b"Connection: close\r\n\r\n" + body + tail
    got = send(live.port, data, 0.5)
    for status in statuses(got):
        assert status < 500 or status in REFUSALS, got[:300]
    assert unambiguous([bytes(r) for r in live.upstream.raw]) == []
    after = send(live.port, b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 5)
    assert statuses(after) == [200], after[:300]


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=200))
def test_raw_bytes_are_answered_or_closed(live: ThreadGateway, data: bytes) -> None:
    got = send(live.port, data + b"\r\n\r\n", 0.3)
    for status in statuses(got):
        assert status < 500 or status in REFUSALS, got[:300]
    after = send(live.port, b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 5)
    assert statuses(after) == [200], after[:300]
