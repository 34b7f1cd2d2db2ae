"""Property tests (hypothesis): the config loader and header handling.

- Config loader: random YAML/TOML text, random nested structures, and a valid config
  with one value anywhere replaced by a random one, never raise anything but
  `ConfigErrors`, whose every entry is a `ConfigError` with a path and a message.
- Headers: hop-by-hop stripping never crashes and leaves nothing Connection names;
  the upstream head built from any headers the client parser could deliver (and any
  client facts) holds no CR/LF/NUL and parses, strictly, as exactly one request;
  `encode_head` fed arbitrary text either refuses (BadRequest) or emits exactly that;
  header templates over client-sourced variables never emit CR/LF/NUL.
Raw requests to a running gateway are fuzzed in test_fuzz_wire.py. Time is bounded
by `max_examples` (about 10 s for this file on a loaded machine).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.config.load import parse_config, validate_data
from gateway.errors import BadRequest, ConfigError, ConfigErrors
from gateway.exchange import Exchange, Reply, TLSInfo
from gateway.filters.headers import HeaderFilter
from gateway.proxy import HOP_BY_HOP, Forwarder, filter_headers
from gateway.routing import Route
from gateway.runtime import Runtime
from gateway.upstream.client import encode_head, framing_for
from tests.hostile.wire import parse_requests, unambiguous

FAST = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))

# -- config loader ------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "listeners": [{"address": "127.0.0.1:8080"}],
    "server": {"header_timeout": "5s", "max_headers": 50},
    "upstreams": {
        "users": {
            "endpoints": ["http://127.0.0.1:9001", {"url": "http://127.0.0.1:9002", "weight": 2}],
            "pool": {"max_connections": 10},
        }
    },
    "routes": [
        {
            "name": "api",
            "match": {"hosts": ["api.test"], "path": {"prefix": "/v1"}, "methods": ["GET"]},
            "upstream": "users",
            "timeouts": {"read": "5s"},
            "headers": {"request": {"set": {"X-Client": "${client_ip}"}}},
            "limits": {"max_body_bytes": "1MiB"},
            "max_response_bytes": "10MiB",
        }
    ],
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["1s", "-5ms", "10MiB", "0", "http://x:1", "${host}", "GET", "*"])
)
structures = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def assert_config_errors(exc: ConfigErrors) -> None:
    assert exc.errors
    for err in exc.errors:
        assert isinstance(err, ConfigError)
        assert isinstance(err.path, str) and err.message


@FAST
@given(text=st.text(max_size=300), fmt=st.sampled_from(["yaml", "toml"]))
def test_config_text_never_crashes(text: str, fmt: str) -> None:
    try:
        parse_config(text, fmt, "fuzz")
    except ConfigErrors as exc:
        assert_config_errors(exc)


@pytest.mark.parametrize(
    ("text", "fmt"),
    [("\x1f", "yaml"), ("a: \x00", "yaml"), ("\ud800", "yaml"), ("a = \x01", "toml")],
    ids=["yaml-control-char", "yaml-nul", "yaml-lone-surrogate", "toml-control-char"],
)
def test_config_text_regressions(text: str, fmt: str) -> None:
    """Found by the property above: PyYAML's reader refuses control characters while
    the loader is built, which escaped as yaml.reader.ReaderError."""
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, fmt, "fuzz")
    assert_config_errors(info.value)


@FAST
@given(data=structures)
def test_config_structure_never_crashes(data: Any) -> None:
    try:
        validate_data(data, "fuzz")
    except ConfigErrors as exc:
        assert_config_errors(exc)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


BASE_PATHS = [p for p in _paths(BASE) if p]


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {**node, head: _replace(node[head], rest, value)}
    out = list(node)
    out[head] = _replace(node[head], rest, value)
    return out


def test_base_config_is_valid() -> None:
    validate_data(BASE, "base")


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(BASE_PATHS), value=structures)
def test_config_one_value_replaced_never_crashes(path: tuple[Any, ...], value: Any) -> None:
    try:
        validate_data(_replace(BASE, path, value), "fuzz")
    except ConfigErrors as exc:
        assert_config_errors(exc)


# -- headers ------------------------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
names = st.text(TCHAR, min_size=1, max_size=12) | st.sampled_from(
    ["Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Upgrade", "TE",
     "Host", "X-Forwarded-For", "Forwarded", "Via", "X-Request-ID", "Trailer", "Expect"]
)  # fmt: skip
# What aiohttp's parser can hand over as a field value: VCHAR, SP, HTAB and obs-text
# (bytes 0x80-0xFF arrive as surrogate escapes when they are not UTF-8).
field_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(["\t", "é", "\udcff"]),
    max_size=30,
)
header_lists = st.lists(st.tuples(names, field_values), max_size=12)
anything = st.text(max_size=30)


@FAST
@given(headers=st.lists(st.tuples(anything, anything), max_size=10))
def test_filter_headers_strips_hop_by_hop(headers: list[tuple[str, str]]) -> None:
    out = filter_headers(headers)
    named = {
        t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")
    }
    for k, v in out:
        assert (k, v) in headers
        assert k.lower() not in HOP_BY_HOP and k.lower() not in named


@pytest.fixture(scope="module")
def forwarder() -> tuple[Forwarder, Any]:
    config = validate_data(BASE, "fuzz")

    async def build() -> Runtime:
        return Runtime.build(config, "fuzz")

    runtime = asyncio.run(build())
    up = runtime.upstreams["users"]
    fw = Forwarder(
        up,
        connect_timeout_s=1,
        read_timeout_s=1,
        total_timeout_s=1,
        preserve_host=True,
        retry_idempotent=True,
        rewrite=None,
        via="gateway",
        request_id_header="X-Request-ID",
    )
    return fw, up.members[0].pool


def exchange(headers: list[tuple[str, str]], host: str, trusted: bool, sni: str) -> Exchange:
    return Exchange(
        method="POST",
        path="/v1/x",
        query="",
        headers=CIMultiDict(headers),
        host=host,
        scheme="https",
        client_ip="203.0.113.9",
        client_port=1234,
        peer_ip="203.0.113.9",
        trusted_peer=trusted,
        request_id="rid",
        route=Route(validate_data(BASE).routes[0]),
        body=None,
        content_length=None,
        tls=TLSInfo("TLSv1.3", "X", sni, None),
        listener='"127.0.0.1:8080"',
    )


@FAST
@given(headers=header_lists, host=field_values, trusted=st.booleans(), length=st.integers(0, 9))
def test_upstream_head_is_one_clean_request(
    forwarder: tuple[Forwarder, Any],
    headers: list[tuple[str, str]],
    host: str,
    trusted: bool,
    length: int,
) -> None:
    fw, pool = forwarder
    out = fw.upstream_headers(exchange(headers, host, trusted, ""), pool)
    for k, v in out:
        assert not any(c in k + v for c in "\r\n\x00"), (k, v)
    head = encode_head("POST", "/v1/x", out, framing_for(length, False))
    seen, error = parse_requests(head + b"x" * length)
    assert error is None and len(seen) == 1
    assert len(seen[0].headers) == len(out) + 1
    assert unambiguous([head + b"x" * length]) == []


@settings(max_examples=200, deadline=None)
@given(
    method=anything, target=anything, headers=st.lists(st.tuples(anything, anything), max_size=5)
)
def test_encode_head_refuses_or_is_exact(
    method: str, target: str, headers: list[tuple[str, str]]
) -> None:
    try:
        head = encode_head(method, target, headers, "")
    except BadRequest:
        return
    # Whatever went out has one line per field: no field can start a new one.
    lines = head.split(b"\r\n")
    assert len(lines) == len(headers) + 3 and lines[-2:] == [b"", b""]
    assert b"\n" not in head.replace(b"\r\n", b"") and b"\r" not in head.replace(b"\r\n", b"")


@pytest.fixture(scope="module")
def templated() -> HeaderFilter:
    config = validate_data(
        _replace(
            BASE,
            ("routes", 0, "headers"),
            {
                "request": {"set": {"X-Seen": "${host}|${path}|${sni}|${request_id}|${method}"}},
                "response": {"add": {"X-Back": "${host} ${sni}"}},
            },
        )
    )
    rules = config.routes[0].headers
    assert rules is not None
    return HeaderFilter(rules, route="api", upstream="users", clock=lambda: 0.0)


@FAST
@given(host=anything, sni=anything, headers=header_lists)
def test_header_templates_never_emit_line_breaks(
    templated: HeaderFilter, host: str, sni: str, headers: list[tuple[str, str]]
) -> None:
    ex = exchange(headers, host, False, sni)
    ex.path = "/" + host  # client-sourced strings, as hostile as they come
    ex.request_id = sni
    seen: list[tuple[str, str]] = []

    async def terminal(e: Exchange) -> Reply:
        seen.extend(e.headers.items())
        return Reply(200)

    reply = asyncio.run(templated(ex, terminal))
    for k, v in [*seen, *reply.headers.items()]:
        assert not any(c in k + v for c in "\r\n\x00"), (k, v)
