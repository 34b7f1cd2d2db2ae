"""A real upstream for the compression tests: bodies of any size, any headers.

`GET /data?n=<bytes>&type=<content type>&status=<code>&chunked=1&h=Name:value...`
answers `body(n)` (deterministic JSON lines, streamed in 64 KiB writes) with the given
Content-Type, status and extra headers; `chunked=1` leaves the length unknown.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from aiohttp import web

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def _base() -> bytes:
    r = random.Random(8)
    lines = []
    size = 0
    i = 0
    while size < 1 << 20:
        line = (
            f'{{"id":{i},"user":"u{r.randrange(10**6)}","score":{r.random():.6f},'
            f'"tags":["{r.choice(WORDS)}","{r.choice(WORDS)}"]}}\n'
        )
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines).encode()[: 1 << 20]


BASE = _base()  # 1 MiB of JSON lines; bodies repeat it


def chunks(n: int, size: int = 65536) -> Iterator[bytes]:
    """body(n) in pieces of `size`."""
    done = 0
    while done < n:
        start = done % len(BASE)
        piece = BASE[start : start + min(size, n - done)]
        done += len(piece)
        yield piece


def body(n: int) -> bytes:
    return b"".join(chunks(n))


def compression_upstream() -> web.Application:
    async def data(request: web.Request) -> web.StreamResponse:
        q = request.query
        n = int(q.get("n", "4096"))
        status = int(q.get("status", "200"))
        headers: list[tuple[str, str]] = [("Content-Type", q.get("type", "application/json"))]
        for item in q.getall("h", []):
            name, _, value = item.partition(":")
            headers.append((name.strip(), value.strip()))
        if status in (204, 304):
            resp = web.Response(status=status)
            for name, value in headers:
                resp.headers.add(name, value)
            return resp
        stream = web.StreamResponse(status=status)
        for name, value in headers:
            stream.headers.add(name, value)
        if q.get("chunked") == "1":
            stream.enable_chunked_encoding()
        else:
            stream.content_length = n
        await stream.prepare(request)
        if request.method != "HEAD":
            for piece in chunks(n):
                await stream.write(piece)
        await stream.write_eof()
        return stream

    app = web.Application()
    app.router.add_get("/data", data)
    return app
