"""Raw-socket helpers for the hostile-client and faulty-upstream suites.

`RecordingUpstream` is a plain asyncio TCP server on loopback that keeps every byte
it receives, per connection, and answers each request it parses (httptools, i.e.
llhttp in its strict default) with a fixed response. `unambiguous()` re-parses what
it recorded and says what is wrong with it: the proof that whatever a hostile client
sent, the upstream saw one well-framed request per message and nothing smuggled.

`raw_exchange()` plays the client: it writes bytes as they are and reads until the
gateway closes (every hostile case either gets an error, which closes, or asks for
`Connection: close`), then parses the responses it got.

`ScriptedUpstream` (tests/upstream/servers.py's RawServer) runs a coroutine per
accepted connection, for upstream faults.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools

from tests.upstream.servers import Handler, RawServer

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Seen:
    """One request as the upstream parsed it."""

    method: str = ""
    target: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    chunked: bool = False

    def values(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]

    def __repr__(self) -> str:
        return f"<Seen {self.method} {self.target} {len(self.headers)} headers {self.body!r}>"


class _Requests:
    """httptools callbacks collecting requests from one byte stream."""

    def __init__(self) -> None:
        self.done: list[Seen] = []
        self.current = Seen()
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.current.target += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.current.method = self.parser.get_method().decode("latin-1")
        self.current.chunked = any(
            k.lower() == b"transfer-encoding" for k, _ in self.current.headers
        )

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.done.append(self.current)
        self.current = Seen()


def parse_requests(data: bytes) -> tuple[list[Seen], str | None]:
    """Every complete request in `data`, and the parse error (None: clean)."""
    reqs = _Requests()
    try:
        reqs.parser.feed_data(data)
    except httptools.HttpParserError as exc:
        return reqs.done, f"{type(exc).__name__}: {exc}"
    return reqs.done, None


def unambiguous(raw: list[bytes]) -> list[str]:
    """What is wrong with the bytes an upstream received (one entry per connection's
    stream); [] when every message is clean, strictly parseable HTTP/1.1."""
    problems = []
    for i, data in enumerate(raw):
        seen, error = parse_requests(data)
        if error is not None:
            problems.append(f"conn {i}: strict parser refused the stream: {error}")
        for req in seen:
            cl = req.values(b"content-length")
            te = req.values(b"transfer-encoding")
            if cl and te:
                problems.append(f"conn {i}: {req.target}: Content-Length and Transfer-Encoding")
            if len(cl) > 1:
                problems.append(f"conn {i}: {req.target}: {len(cl)} Content-Length fields")
            if te and [v.lower() for v in te] != [b"chunked"]:
                problems.append(f"conn {i}: {req.target}: Transfer-Encoding {te!r}")
            for k, v in req.headers:
                if any(c in k + v for c in b"\r\n\x00"):
                    problems.append(f"conn {i}: {req.target}: CR/LF/NUL in {k!r}: {v!r}")
            if "smuggled" in req.target:
                problems.append(f"conn {i}: the smuggled request reached the upstream")
    return problems


class RecordingUpstream:
    """A loopback upstream recording raw bytes per connection, answering `response`
    to each complete request (and closing on bytes it cannot parse)."""

    def __init__(self, response: bytes = OK_RESPONSE) -> None:
        self.response = response
        self.raw: list[bytearray] = []
        self.closed = 0  # connections that ended (either side closed or reset)
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def requests(self) -> list[Seen]:
        return [r for data in self.raw for r in parse_requests(bytes(data))[0]]

    async def __aenter__(self) -> RecordingUpstream:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Recorder(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def __repr__(self) -> str:
        return f"<RecordingUpstream :{self.port} connections={len(self.raw)} closed={self.closed}>"


class _Recorder(asyncio.Protocol):
    def __init__(self, owner: RecordingUpstream) -> None:
        self.owner = owner
        self.data = bytearray()
        owner.raw.append(self.data)
        self.reqs = _Requests()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.closed += 1

    def data_received(self, data: bytes) -> None:
        self.data += data
        before = len(self.reqs.done)
        assert self.transport is not None
        try:
            self.reqs.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
            return
        for _ in range(len(self.reqs.done) - before):
            self.transport.write(self.owner.response)


ConnHandler = Handler


class ScriptedUpstream(RawServer):
    """A loopback upstream running `handler(index, reader, writer)` per connection;
    `connections` counts those accepted (how tests see that nothing was reused)."""

    def __repr__(self) -> str:
        return f"<ScriptedUpstream :{self.port} connections={self.connections}>"


@dataclass
class Answer:
    """What a raw client got back: each response's status and body, and whether the
    gateway closed the connection (always, by the end of `raw_exchange`)."""

    statuses: list[int]
    bodies: list[bytes]
    raw: bytes
    error: str | None = None
    heads: list[int] = field(default_factory=list)  # statuses whose head arrived

    @property
    def cut(self) -> bool:
        """A response head arrived but its body never completed."""
        return len(self.heads) > len(self.statuses)


class _Responses:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.heads: list[int] = []
        self.bodies: list[bytes] = []
        self.body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.heads.append(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())
        self.bodies.append(self.body)
        self.body = b""


def parse_responses(data: bytes) -> Answer:
    res = _Responses()
    error = None
    try:
        res.parser.feed_data(data)
    except httptools.HttpParserError as exc:
        error = str(exc)
    return Answer(res.statuses, res.bodies, data, error, res.heads)


async def raw_exchange(port: int, data: bytes, *, timeout_s: float = 10.0) -> Answer:
    """Write `data` as it is, read until the gateway closes, parse what came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        got = bytearray()
        async with asyncio.timeout(timeout_s):
            while chunk := await _read(reader):
                got += chunk
    finally:
        writer.close()
    return parse_responses(bytes(got))


async def _read(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(65536)
    except ConnectionResetError:
        return b""
