"""multipart/form-data bodies (RFC 7578): field values, field names and filenames are
inspected; a file's content when it is text; binary content never; framing errors
score 200002; a body cut at the inspection size keeps its complete parts."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.filters.screening.scoring import Verdict
from tests.screening.support import Chunks, Upstream, exchange, screening_filter

BOUNDARY = "----form7MA4YWxkTrZu0gW"


def part(name: str, content: bytes, *, filename: str | None = None,
         ctype: str | None = None) -> bytes:  # fmt: skip
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"Content-Disposition: {disposition}\r\n"
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n"
    return f"--{BOUNDARY}\r\n{head}\r\n".encode() + content + b"\r\n"


def form(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def request(body: bytes, boundary: str | None = BOUNDARY) -> dict[str, Any]:
    ctype = "multipart/form-data" + (f"; boundary={boundary}" if boundary else "")
    return {"method": "POST", "body": body, "headers": [("Content-Type", ctype)]}


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) + b"<script>alert(1)</script>"

# (id, body, content-type boundary, blocked, expected (rule, location) among the hits)
CASES: list[tuple[str, bytes, str | None, bool, tuple[int, str] | None]] = [
    ("attack-in-field", form(part("title", b"hello"), part("comment", b"' or '1'='1")),
     BOUNDARY, True, (942100, "body:comment")),
    ("encoded-attack-in-field", form(part("q", b"%3Cscript%3Ealert(1)%3C/script%3E")),
     BOUNDARY, True, (941110, "body:q")),
    ("attack-in-filename", form(part("upload", PNG, filename="../../etc/passwd",
                                     ctype="image/png")),
     BOUNDARY, True, (930100, "body:upload")),
    ("attack-in-text-file", form(part("upload", b"line 1\n<svg onload=alert(1)>\n",
                                      filename="notes.txt", ctype="text/plain")),
     BOUNDARY, True, (941180, "body:upload")),
    ("attack-in-untyped-utf8-file", form(part("upload", b"x; cat /etc/passwd",
                                              filename="a.sh")),
     BOUNDARY, True, (932100, "body:upload")),
    ("attack-in-field-name", form(part("<script>alert(1)</script>", b"x")), BOUNDARY,
     True, None),
    ("benign-upload", form(part("title", b"Holiday photos: don't select the union ones"),
                           part("upload", PNG, filename="beach.png", ctype="image/png")),
     BOUNDARY, False, None),
    ("benign-text-file", form(part("upload", b"SELECT name FROM the menu; it's fine\n",
                                   filename="menu.txt", ctype="text/plain")),
     BOUNDARY, False, None),
    ("binary-content-not-inspected", form(part("upload", b"\x00\x01<script>alert(1)</script>",
                                                filename="blob.bin")),
     BOUNDARY, False, None),
    ("no-boundary", form(part("a", b"b")), None, True, (200002, "body")),
    ("no-closing-delimiter", form(part("a", b"b"), close=False), BOUNDARY, True,
     (200002, "body")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "boundary", "blocked", "hit"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_multipart(
    body: bytes, boundary: str | None, blocked: bool, hit: tuple[int, str] | None
) -> None:
    f = screening_filter()
    up = Upstream()
    ex = exchange(**request(body, boundary))
    reply = await f(ex, up)
    assert (reply.status == 403) is blocked, ex.state.get("screening")
    if hit is not None:
        verdict: Verdict = ex.state["screening"]
        assert hit in verdict.hits
    if not blocked:
        assert up.body == body  # the upstream gets every byte


async def test_truncated_multipart_keeps_its_complete_parts() -> None:
    f = screening_filter(inspect_body_bytes=256)
    first = part("comment", b"1 union select password from users")
    body = form(first, part("upload", b"z" * 2000, filename="big.txt", ctype="text/plain"))
    assert len(first) < 256 < len(body)
    up = Upstream()
    ex = exchange(**request(body))
    ex.body = Chunks([body[:200], body[200:]])
    reply = await f(ex, up)
    assert reply.status == 403
    assert (942190, "body:comment") in ex.state["screening"].hits
    assert f.counters.bodies_truncated == 1


async def test_truncated_benign_multipart_passes_whole() -> None:
    f = screening_filter(inspect_body_bytes=256)
    body = form(part("title", b"ok"), part("upload", b"a" * 5000, filename="a.txt"))
    up = Upstream()
    ex = exchange(**request(body))
    ex.body = Chunks([body[:100], body[100:]])
    assert (await f(ex, up)).status == 200
    assert up.body == body


# (id, Content-Disposition parameters, blocked): the filename in both RFC 6266 forms.
FILENAMES = [
    ("rfc8187-encoded-attack", "filename*=UTF-8''..%2F..%2F..%2Fetc%2Fpasswd", True),
    ("attack-in-plain-form-only", 'filename="../../../etc/passwd"; filename*=UTF-8\'\'a.txt',
     True),
    ("quoted-pair", 'filename="a\\"b.png"', False),
    ("benign-encoded", "filename*=UTF-8''%E2%82%AC%20rates.png", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("params", "blocked"), [c[1:] for c in FILENAMES], ids=[c[0] for c in FILENAMES]
)
async def test_filename_forms(params: str, blocked: bool) -> None:
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="upload"; {params}\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + PNG
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    reply = await screening_filter()(exchange(**request(body)), Upstream())
    assert (reply.status == 403) is blocked


def test_many_tiny_parts_cost_little() -> None:
    """64 KiB of one-byte fields: a hand-made header parse (the email parser took 26 ms)."""
    import asyncio
    import time

    body = form(*[part("f", b"v")] * 1200)
    started = time.process_time()
    reply = asyncio.run(screening_filter()(exchange(**request(body)), Upstream()))
    assert reply.status == 200
    assert time.process_time() - started < 2.0  # generous: a blow-up would be seconds
