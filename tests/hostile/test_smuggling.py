"""Hostile HTTP/1.1 requests over raw sockets, one case id per shape.

Every case is written to the gateway byte for byte; the client then reads until the
gateway closes. What is asserted, for each:
- the answer: the statuses the client got, in order ([] means the connection was
  closed without a response, which is the right answer where no status can be
  trusted to be read in step);
- what the upstream received, recorded raw: never a request with two framings, two
  Content-Lengths, an unknown transfer coding, or CR/LF/NUL in a field; the smuggled
  request (a target containing "smuggled") never reaches it as a request of its own;
  and the number of requests it saw.
Requests that should pass carry `Connection: close`, so every case ends in EOF.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.hostile.wire import RecordingUpstream, raw_exchange, unambiguous
from tests.support import free_port, gateway_config

H = b"Host: api.test\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: api.test\r\n\r\n"
CLOSE = b"Connection: close\r\n"


def post(headers: bytes, body: bytes = b"") -> bytes:
    return b"POST /upload HTTP/1.1\r\n" + H + headers + b"\r\n" + body


def get(target: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\n" + H + CLOSE + headers + b"\r\n"


# (id, bytes sent, statuses the client gets, requests the upstream sees)
CASES: list[tuple[str, bytes, list[int], int]] = [
    # -- framing: Content-Length and Transfer-Encoding (RFC 9112 6.1, 6.3) --------------
    (
        "cl-then-te",
        post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        [400],
        0,
    ),
    (
        "te-then-cl",
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED),
        [400],
        0,
    ),
    ("cl-duplicate-same", post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"), [400], 0),
    (
        "cl-conflicting",
        post(b"Content-Length: 3\r\nContent-Length: 40\r\n", b"abc" + SMUGGLED),
        [400],
        0,
    ),
    ("cl-list", post(b"Content-Length: 3, 3\r\n", b"abc"), [400], 0),
    ("cl-plus-sign", post(b"Content-Length: +3\r\n", b"abc"), [400], 0),
    ("cl-negative", post(b"Content-Length: -1\r\n", b"abc"), [400], 0),
    ("cl-hex", post(b"Content-Length: 0x3\r\n", b"abc"), [400], 0),
    ("cl-overflow", post(b"Content-Length: 99999999999999999999999\r\n", b"abc"), [400], 0),
    ("cl-space-inside", post(b"Content-Length: 1 0\r\n", b"a" * 10), [400], 0),
    # -- chunked bodies ------------------------------------------------------------------
    (
        "chunk-size-not-hex",
        post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nab\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    (
        "chunk-size-negative",
        post(b"Transfer-Encoding: chunked\r\n", b"-2\r\nab\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    (
        "chunk-size-overflow",
        post(b"Transfer-Encoding: chunked\r\n", b"1" + b"0" * 20 + b"\r\nab\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    (
        "chunk-size-space-after",
        post(b"Transfer-Encoding: chunked\r\n", b"2 \r\nab\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    (
        "chunk-size-0x-prefix",
        post(b"Transfer-Encoding: chunked\r\n", b"0x2\r\nab\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    (
        "chunk-data-longer-than-size",
        post(b"Transfer-Encoding: chunked\r\n", b"2\r\nabcd\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    (
        "chunk-ext-valid",
        post(CLOSE + b"Transfer-Encoding: chunked\r\n", b'5;name="v";x=y\r\nhello\r\n0\r\n\r\n'),
        [200],
        1,
    ),
    # llhttp skips extensions without buffering them (memory stays flat); an endless
    # one is a slow body, cut by server.body_timeout (tests/hostile/test_slow.py).
    (
        "chunk-ext-oversized",
        post(
            CLOSE + b"Transfer-Encoding: chunked\r\n",
            b"5;x=" + b"a" * 200_000 + b"\r\nhello\r\n0\r\n\r\n",
        ),
        [200],
        1,
    ),
    (
        "chunk-bare-lf",
        post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n" + SMUGGLED),
        [400],
        0,
    ),
    # -- transfer codings other than chunked (RFC 9112 6.1: 501 or 400) ----------------
    ("te-gzip", post(b"Transfer-Encoding: gzip\r\n", b"abc"), [400, 501], 0),
    ("te-identity", post(b"Transfer-Encoding: identity\r\n", b"abc"), [400, 501], 0),
    (
        "te-chunked-not-last",
        post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
        [400, 501],
        0,
    ),
    (
        "te-gzip-then-chunked",
        post(b"Transfer-Encoding: gzip, chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
        [400, 501],
        0,
    ),
    (
        "te-two-fields",
        post(
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"
        ),
        [400, 501],
        0,
    ),
    ("te-xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), [400, 501], 0),
    ("te-vertical-tab", post(b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n"), [400, 501], 0),
    (
        "te-http10",
        b"POST /upload HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [400],
        0,
    ),
    (
        "te-uppercase-ok",
        post(CLOSE + b"Transfer-Encoding: CHUNKED\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
        [200],
        1,
    ),
    # -- header syntax (RFC 9112 5) -----------------------------------------------------
    ("obs-fold", get(b"/", b"X-A: a\r\n b\r\n"), [400], 0),
    (
        "obs-fold-te",
        post(b"Transfer-Encoding: identity\r\n chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        [400],
        0,
    ),
    (
        "bare-lf-line-endings",
        b"GET / HTTP/1.1\n" + b"Host: api.test\nConnection: close\n\n",
        [400],
        0,
    ),
    ("bare-cr-in-value", get(b"/", b"X-A: a\rb\r\n"), [400], 0),
    ("space-before-colon", get(b"/", b"X-A : b\r\n"), [400], 0),
    (
        "space-before-colon-te",
        post(b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED),
        [400],
        0,
    ),
    ("tab-in-name", get(b"/", b"X\tA: b\r\n"), [400], 0),
    ("no-colon", get(b"/", b"Bad Header\r\n"), [400], 0),
    ("empty-name", get(b"/", b": b\r\n"), [400], 0),
    ("nul-in-value", get(b"/", b"X-A: a\x00b\r\n"), [400], 0),
    ("nul-in-name", get(b"/", b"X-\x00A: b\r\n"), [400], 0),
    ("ctl-in-value", get(b"/", b"X-A: a\x01b\r\n"), [400], 0),
    ("host-missing", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", [400], 0),
    ("host-duplicate", get(b"/", b"Host: other.test\r\n"), [400], 0),
    # -- request targets (RFC 9112 3.2) --------------------------------------------------
    ("absolute-form-other-host", get(b"http://other.test/x"), [400], 0),
    ("absolute-form-same-host", get(b"http://api.test/x"), [200], 1),
    ("absolute-form-not-http", get(b"ftp://api.test/x"), [400], 0),
    ("asterisk-form-get", get(b"*"), [400], 0),
    ("asterisk-form-options", b"OPTIONS * HTTP/1.1\r\n" + H + CLOSE + b"\r\n", [200], 1),
    ("authority-form-connect", b"CONNECT api.test:443 HTTP/1.1\r\n" + H + b"\r\n", [501], 0),
    ("connect-origin-form", b"CONNECT / HTTP/1.0\r\n\r\n", [501], 0),
    ("absolute-form-userinfo", get(b"http://user@api.test/x"), [400], 0),
    ("absolute-form-dot-dot", get(b"http://api.test/public/../admin"), [400], 0),
    ("no-leading-slash", get(b"x/y"), [400], 0),
    ("dot-dot-segment", get(b"/public/../admin"), [400], 0),
    ("dot-segment", get(b"/public/./admin"), [400], 0),
    ("dot-dot-encoded", get(b"/public/%2e%2e/admin"), [400], 0),
    ("dot-dot-trailing", get(b"/public/.."), [400], 0),
    ("encoded-slash", get(b"/public%2F..%2Fadmin"), [400], 0),
    ("encoded-backslash", get(b"/public%5c..%5cadmin"), [400], 0),
    ("backslash", get(b"/public\\..\\admin"), [400], 0),
    ("fragment", get(b"/x#frag"), [400], 0),
    ("head-dot-dot", b"HEAD /a/../b HTTP/1.1\r\n" + H + b"\r\n", [400], 0),
    ("nul-in-target", get(b"/x\x00y"), [400], 0),
    ("utf8-invalid-in-target", get(b"/\xff\xfe"), [400], 0),
    ("space-in-target", get(b"/a b"), [400], 0),
    ("http2-version", b"GET / HTTP/2.0\r\n" + H + CLOSE + b"\r\n", [400, 505], 0),
    ("http09-request", b"GET /\r\n\r\n", [400, 505], 0),
    # -- sizes (414 and 431 per RFC 9110 15.5.15, RFC 6585 5) ---------------------------
    ("request-line-oversized", get(b"/" + b"a" * 9000), [414], 0),
    ("header-oversized", get(b"/", b"X-Big: " + b"b" * 9000 + b"\r\n"), [431], 0),
    ("headers-too-many", get(b"/", b"".join(b"X-H%d: v\r\n" % i for i in range(150))), [431], 0),
    ("method-oversized", b"G" * 9000 + b" / HTTP/1.1\r\n" + H + b"\r\n", [400, 414], 0),
    # -- a request pipelined behind an invalid one is never read ------------------------
    ("pipelined-after-nul", get(b"/x\x00") + SMUGGLED, [400], 0),
    ("pipelined-after-bad-header", get(b"/", b"X-A : b\r\n") + SMUGGLED, [400], 0),
    (
        "pipelined-after-bad-chunk",
        post(b"Transfer-Encoding: chunked\r\n", b"zz\r\n\r\n") + SMUGGLED,
        [400],
        0,
    ),
    # -- bytes the RFC allows, forwarded exactly -------------------------------------
    ("obs-text-in-value", get(b"/", b"X-A: caf\xc3\xa9 \xff\r\n"), [200], 1),
]


@pytest.mark.parametrize(
    ("request_bytes", "statuses", "upstream_requests"),
    [pytest.param(b, s, n, id=i) for i, b, s, n in CASES],
)
async def test_hostile_request(
    gateway: GatewayFactory, request_bytes: bytes, statuses: list[int], upstream_requests: int
) -> None:
    async with RecordingUpstream() as up:
        gw = await gateway(
            gateway_config(
                port=0,
                admin_port=free_port(),
                upstreams={"up": [f"http://127.0.0.1:{up.port}"]},
                routes=[{"name": "all", "match": {}, "upstream": "up"}],
            )
        )
        answer = await raw_exchange(gw.port, request_bytes)
        got = answer.statuses
        assert len(got) == 1 and got[0] in statuses, answer.raw[:300]
        assert unambiguous([bytes(r) for r in up.raw]) == []
        assert len(up.requests) == upstream_requests, up.requests
        # The worker is unharmed: the next client is served.
        after = await raw_exchange(gw.port, get(b"/after"))
        assert after.statuses == [200]


async def start(gateway: GatewayFactory, up: RecordingUpstream, **server: Any) -> int:
    gw = await gateway(
        gateway_config(
            port=0,
            admin_port=free_port(),
            upstreams={"up": [f"http://127.0.0.1:{up.port}"]},
            routes=[{"name": "all", "match": {}, "upstream": "up"}],
            server=server,
        )
    )
    return gw.port


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        (b"http://api.test/x?q=1", "/x?q=1"),
        (b"HTTP://API.TEST", "/"),
        (b"https://api.test?q", "/?q"),
        (b"/x?next=/a/../b%2F", "/x?next=/a/../b%2F"),  # the query is not a path
    ],
    ids=["absolute-form", "absolute-form-no-path", "absolute-form-query-only", "query-kept"],
)
async def test_target_forwarded_in_origin_form(
    gateway: GatewayFactory, target: bytes, forwarded: str
) -> None:
    async with RecordingUpstream() as up:
        port = await start(gateway, up)
        assert (await raw_exchange(port, get(target))).statuses == [200]
        assert [(r.target, r.values(b"host")) for r in up.requests] == [(forwarded, [b"api.test"])]


@pytest.mark.parametrize(
    ("target", "statuses"),
    [(b"/files/a%2Fb", [200]), (b"/files/a%2F..%2Fadmin", [400]), (b"/a%5C..%5Cb", [400])],
    ids=["encoded-slash-kept", "encoded-dot-dot-still-refused", "encoded-backslash-dot-dot"],
)
async def test_encoded_slashes_when_allowed(
    gateway: GatewayFactory, target: bytes, statuses: list[int]
) -> None:
    async with RecordingUpstream() as up:
        port = await start(gateway, up, allow_encoded_slashes=True)
        assert (await raw_exchange(port, get(target))).statuses == statuses
        expected = [target.decode()] if statuses == [200] else []
        assert [r.target for r in up.requests] == expected


async def test_obs_text_header_value_forwarded_byte_exact(gateway: GatewayFactory) -> None:
    """RFC 9110 5.5 allows obs-text (0x80-0xFF) in field values: passed on untouched,
    whether or not it is UTF-8."""
    async with RecordingUpstream() as up:
        port = await start(gateway, up)
        sent = get(b"/", b"X-A: caf\xc3\xa9 \xff\xfe\r\n")
        assert (await raw_exchange(port, sent)).statuses == [200]
        assert [r.values(b"x-a") for r in up.requests] == [[b"caf\xc3\xa9 \xff\xfe"]]
