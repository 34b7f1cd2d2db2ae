"""The header filter, called directly: a real Exchange, real TLS facts, a terminal function.

Configs go through `validate_data` and filters through `runtime.route_filters`, as a
loaded config would; only the clock is injected (time variables).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.config.headers_model import VARIABLES
from gateway.config.load import validate_data
from gateway.config.model import Route as RouteConfig
from gateway.errors import UpstreamConnectError, UpstreamTimeout
from gateway.exchange import Exchange, Reply, TLSInfo
from gateway.filters.headers import GETTERS, HeaderFilter, compile_template
from gateway.pipeline import compile_chain
from gateway.routing import Route
from gateway.runtime import route_filters
from gateway.store.stores import RateLimitStores
from gateway.tls.facts import ClientCertFacts, client_cert_facts
from tests.tls.certs import make_ca

NOW = 1_900_000_000.75  # 2030-03-17T17:46:40Z
Headers = list[tuple[str, str]]


def route_config(headers: dict[str, Any] | None) -> RouteConfig:
    route: dict[str, Any] = {"name": "api", "upstream": "users"}
    if headers is not None:
        route["headers"] = headers
    cfg = validate_data(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "upstreams": {"users": {"endpoints": ["http://127.0.0.1:1"]}},
            "routes": [route],
        }
    )
    return cfg.routes[0]


def header_filter(
    headers: dict[str, Any], clock: Callable[[], float] = lambda: NOW
) -> HeaderFilter:
    rcfg = route_config(headers)
    assert rcfg.headers is not None
    return HeaderFilter(rcfg.headers, route=rcfg.name, upstream=rcfg.upstream, clock=clock)


@pytest.fixture(scope="module")
def cert() -> ClientCertFacts:
    ca = make_ca("Headers Test CA")
    return client_cert_facts(ca.issue("alice", client=True).der)


def exchange(
    kind: str = "plain",
    cert: ClientCertFacts | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> Exchange:
    """`plain` HTTP, `tls` (no client certificate) or `mtls` (with `cert`)."""
    tls = None
    if kind != "plain":
        tls = TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", "api.example.com", cert)
    return Exchange(
        method="POST",
        path="/v1/items%20x",
        query="a=1",
        headers=CIMultiDict(headers),
        host="api.example.com",
        scheme="http" if kind == "plain" else "https",
        client_ip="203.0.113.7",
        client_port=50123,
        request_id="req-1",
        route=Route(route_config(None)),
        body=None,
        content_length=None,
        tls=tls,
    )


class Terminal:
    """The end of the chain: records the request headers, answers with `reply_headers`."""

    def __init__(
        self, reply_headers: Sequence[tuple[str, str]] = (), raises: Exception | None = None
    ) -> None:
        self.reply_headers = reply_headers
        self.raises = raises
        self.seen: Headers | None = None

    async def __call__(self, ex: Exchange) -> Reply:
        self.seen = list(ex.headers.items())
        if self.raises is not None:
            raise self.raises
        return Reply(200, CIMultiDict(self.reply_headers), b"ok")


async def run(
    f: HeaderFilter, ex: Exchange, terminal: Terminal | None = None
) -> tuple[Headers, Reply]:
    terminal = terminal or Terminal()
    reply = await f(ex, terminal)
    assert terminal.seen is not None
    return terminal.seen, reply


# --- templates -------------------------------------------------------------------------

# (variable, exchange kind, expected; a callable gets the certificate facts)
VARIABLE_CASES: list[tuple[str, str, str | Callable[[ClientCertFacts], str]]] = [
    ("client_ip", "plain", "203.0.113.7"),
    ("client_port", "plain", "50123"),
    ("request_id", "plain", "req-1"),
    ("route", "plain", "api"),
    ("upstream", "plain", "users"),
    ("scheme", "plain", "http"),
    ("scheme", "tls", "https"),
    ("host", "plain", "api.example.com"),
    ("method", "plain", "POST"),
    ("path", "plain", "/v1/items%20x"),
    ("tls_version", "tls", "TLSv1.3"),
    ("tls_version", "plain", ""),
    ("tls_cipher", "tls", "TLS_AES_128_GCM_SHA256"),
    ("tls_cipher", "plain", ""),
    ("sni", "tls", "api.example.com"),
    ("sni", "plain", ""),
    ("client_cert_subject", "mtls", "CN=alice"),
    ("client_cert_subject", "tls", ""),
    ("client_cert_subject", "plain", ""),
    ("client_cert_issuer", "mtls", "CN=Headers Test CA"),
    ("client_cert_issuer", "tls", ""),
    ("client_cert_fingerprint", "mtls", lambda c: hashlib.sha256(c.der).hexdigest()),
    ("client_cert_fingerprint", "plain", ""),
    ("client_cert_not_after", "mtls", lambda c: c.not_after),
    ("client_cert_not_after", "tls", ""),
    ("client_cert_serial", "mtls", lambda c: c.serial),
    ("client_cert_serial", "plain", ""),
    ("time_iso", "plain", "2030-03-17T17:46:40Z"),
    ("time_unix", "plain", "1900000000"),
]


def test_every_variable_is_covered() -> None:
    assert {v for v, _, _ in VARIABLE_CASES} == set(VARIABLES)
    assert set(GETTERS) | {"route", "upstream"} == set(VARIABLES)


@pytest.mark.parametrize(
    ("variable", "kind", "expected"),
    [c for c in VARIABLE_CASES],
    ids=[f"{v}-{k}" for v, k, _ in VARIABLE_CASES],
)
async def test_variable_renders(
    variable: str,
    kind: str,
    expected: str | Callable[[ClientCertFacts], str],
    cert: ClientCertFacts,
) -> None:
    f = header_filter({"request": {"set": {"X-V": f"<${{{variable}}}>"}}})
    seen, _ = await run(f, exchange(kind, cert if kind == "mtls" else None))
    want = expected(cert) if callable(expected) else expected
    assert seen == [("X-V", f"<{want}>")]


COMPILE_CASES = [
    # (id, template, rendered, compiled kind)
    ("literal-stays-str", "prod", "prod", "str"),
    ("dollars", "$$5 $${x}", "$5 ${x}", "str"),
    ("route-constants-fold", "${route}@${upstream}", "api@users", "str"),
    ("single-variable-is-getter", "${client_ip}", "203.0.113.7", "getter"),
    ("mixed", "for=${client_ip}:${client_port};r=${route}", "for=203.0.113.7:50123;r=api", "join"),
    ("empty", "", "", "str"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "rendered", "kind"), [c[1:] for c in COMPILE_CASES], ids=[c[0] for c in COMPILE_CASES]
)
def test_compile_template(text: str, rendered: str, kind: str) -> None:
    value = compile_template(text, {"route": "api", "upstream": "users"})
    if kind == "str":
        assert value == rendered
        return
    assert not isinstance(value, str)
    if kind == "getter":
        assert value is GETTERS["client_ip"]
    assert value(exchange(), NOW) == rendered


async def test_clock_read_only_when_a_template_needs_it() -> None:
    def no_clock() -> float:
        raise AssertionError("clock read")

    f = header_filter({"request": {"set": {"X-A": "${client_ip}"}}}, clock=no_clock)
    assert (await run(f, exchange()))[0] == [("X-A", "203.0.113.7")]
    calls: list[float] = []

    def clock() -> float:
        calls.append(NOW)
        return NOW

    f = header_filter(
        {"request": {"set": {"X-T": "${time_unix}"}}, "response": {"set": {"X-T": "${time_iso}"}}},
        clock=clock,
    )
    seen, reply = await run(f, exchange())
    assert (seen, reply.headers["X-T"], len(calls)) == (
        [("X-T", "1900000000")],
        "2030-03-17T17:46:40Z",
        1,
    )


async def test_sni_with_control_characters_is_cleaned() -> None:
    f = header_filter({"request": {"set": {"X-Sni": "${sni}"}}})
    ex = exchange("tls")
    assert ex.tls is not None
    ex.tls.sni = "evil.test\r\nX-Admin: 1"
    assert (await run(f, ex))[0] == [("X-Sni", "evil.testX-Admin: 1")]


# --- set / add / remove ----------------------------------------------------------------

# (id, rules for one side, headers before, headers after)
EDIT_CASES: list[tuple[str, dict[str, Any], Headers, Headers]] = [
    ("remove-every-value-any-case", {"remove": ["x-internal"]},
     [("X-Internal", "1"), ("Accept", "*/*"), ("X-INTERNAL", "2")], [("Accept", "*/*")]),
    ("remove-absent-is-fine", {"remove": ["X-Gone"]}, [("A", "1")], [("A", "1")]),
    ("set-new", {"set": {"X-Env": "prod"}}, [("A", "1")], [("A", "1"), ("X-Env", "prod")]),
    ("set-replaces-all-duplicates-in-place", {"set": {"X-Env": "prod"}},
     [("x-env", "dev"), ("A", "1"), ("X-ENV", "test")], [("X-Env", "prod"), ("A", "1")]),
    ("add-keeps-existing", {"add": {"X-Trace": "${request_id}"}},
     [("X-Trace", "upstream-hop")], [("X-Trace", "upstream-hop"), ("X-Trace", "req-1")]),
    ("order-remove-set-add", {"remove": ["X-A"], "set": {"X-A": "set"}, "add": {"X-A": "added"}},
     [("X-A", "old1"), ("X-A", "old2")], [("X-A", "set"), ("X-A", "added")]),
    ("set-empty-variable-still-replaces-forged", {"set": {"X-Subject": "${client_cert_subject}"}},
     [("X-Subject", "CN=admin")], [("X-Subject", "")]),
    ("names-keep-configured-case", {"set": {"x-lower": "1"}, "add": {"X-Upper": "2"}}, [],
     [("x-lower", "1"), ("X-Upper", "2")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("side", "rules", "before", "after"),
    [(side, *c[1:]) for side in ("request", "response") for c in EDIT_CASES],
    ids=[f"{side}-{c[0]}" for side in ("request", "response") for c in EDIT_CASES],
)
async def test_edits(side: str, rules: dict[str, Any], before: Headers, after: Headers) -> None:
    f = header_filter({side: rules})
    if side == "request":
        seen, _ = await run(f, exchange(headers=before))
        assert seen == after
    else:
        seen, reply = await run(f, exchange(headers=[("X-Req", "1")]), Terminal(before))
        assert seen == [("X-Req", "1")]  # response rules leave the request alone
        assert list(reply.headers.items()) == after


async def test_request_rules_do_not_touch_the_response() -> None:
    f = header_filter({"request": {"set": {"X-Env": "prod"}, "remove": ["Server"]}})
    seen, reply = await run(f, exchange(headers=[("Server", "x")]), Terminal([("Server", "up")]))
    assert seen == [("X-Env", "prod")]
    assert list(reply.headers.items()) == [("Server", "up")]


@pytest.mark.parametrize(
    "error", [UpstreamTimeout("upstream timed out"), UpstreamConnectError("refused")], ids=repr
)
async def test_response_rules_apply_to_gateway_errors(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    f = header_filter(
        {"response": {"set": {"X-Route": "${route}"}}, "security": {"preset": "strict"}}
    )
    with caplog.at_level(logging.WARNING, "gateway.server"):
        _, reply = await run(f, exchange("tls"), Terminal(raises=error))
    status = 504 if isinstance(error, UpstreamTimeout) else 502
    assert reply.status == status
    assert reply.headers["Content-Type"] == "application/json"
    assert b'"request_id":"req-1"' in reply.body
    assert reply.headers["X-Route"] == "api"
    assert reply.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert f"{status} " in caplog.text and "route api (id=req-1)" in caplog.text


async def test_other_exceptions_pass_through() -> None:
    f = header_filter({"response": {"set": {"X-A": "1"}}})
    with pytest.raises(RuntimeError):
        await run(f, exchange(), Terminal(raises=RuntimeError("bug")))


# --- security headers ------------------------------------------------------------------

BASIC = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
STRICT = {
    **BASIC,
    "Permissions-Policy": "geolocation=(), microphone=(), camera=()",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
HSTS = "Strict-Transport-Security"
HSTS_STRICT = {HSTS: "max-age=31536000; includeSubDomains"}
UP_CSP = ("Content-Security-Policy", "default-src 'self'")
UP_HSTS = (HSTS, "max-age=5")

# (id, security config, exchange kind, upstream reply headers, expected reply headers)
SECURITY_CASES: list[tuple[str, dict[str, Any], str, Headers, dict[str, str]]] = [
    ("basic-http", {"preset": "basic"}, "plain", [], BASIC),
    ("basic-https-no-hsts", {"preset": "basic"}, "tls", [], BASIC),
    ("default-preset-is-basic", {}, "plain", [], BASIC),
    ("strict-https", {"preset": "strict"}, "tls", [], {**STRICT, **HSTS_STRICT}),
    ("strict-http-never-hsts", {"preset": "strict"}, "plain", [], STRICT),
    ("http-drops-upstream-hsts", {"preset": "strict"}, "plain", [UP_HSTS], STRICT),
    ("http-drops-upstream-hsts-even-preset-none", {"preset": "none"}, "plain", [UP_HSTS], {}),
    ("https-keeps-upstream-hsts", {"preset": "strict"}, "tls", [UP_HSTS],
     {**STRICT, HSTS: "max-age=5"}),
    ("https-hsts-override", {"preset": "strict", "hsts": "max-age=600"}, "tls", [],
     {**STRICT, HSTS: "max-age=600"}),
    ("https-hsts-not-kept", {"preset": "strict", "keep_upstream": []}, "tls", [UP_HSTS],
     {**STRICT, **HSTS_STRICT}),
    ("upstream-csp-kept-by-default", {"preset": "strict"}, "plain", [UP_CSP],
     {**STRICT, "Content-Security-Policy": "default-src 'self'"}),
    ("keep-nothing-overrides-upstream", {"preset": "strict", "keep_upstream": []}, "plain",
     [UP_CSP, ("X-Frame-Options", "SAMEORIGIN"), ("X-Frame-Options", "DENY")], STRICT),
    ("keep-only-csp", {"preset": "strict", "keep_upstream": ["csp"]}, "plain",
     [UP_CSP, ("X-Frame-Options", "SAMEORIGIN")],
     {**STRICT, "Content-Security-Policy": "default-src 'self'"}),
    ("csp-off-leaves-upstream-alone", {"preset": "strict", "csp": None, "keep_upstream": []},
     "plain", [UP_CSP], {**STRICT, "Content-Security-Policy": "default-src 'self'"}),
    ("csp-off-sends-none", {"preset": "strict", "csp": None}, "plain", [],
     {k: v for k, v in STRICT.items() if k != "Content-Security-Policy"}),
    ("none-plus-frame-options", {"preset": "none", "frame_options": "SAMEORIGIN"}, "tls", [],
     {"X-Frame-Options": "SAMEORIGIN"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("security", "kind", "upstream", "expected"),
    [c[1:] for c in SECURITY_CASES],
    ids=[c[0] for c in SECURITY_CASES],
)
async def test_security_headers(
    security: dict[str, Any], kind: str, upstream: Headers, expected: dict[str, str]
) -> None:
    f = header_filter({"security": security})
    _, reply = await run(f, exchange(kind), Terminal([("Content-Type", "text/plain"), *upstream]))
    got = {k: ", ".join(reply.headers.getall(k)) for k in reply.headers if k != "Content-Type"}
    assert got == expected


async def test_response_rules_run_before_security() -> None:
    # A security header set by the route's own rules counts as present: kept if listed.
    f = header_filter(
        {
            "response": {
                "set": {"X-Frame-Options": "SAMEORIGIN"},
                "remove": ["Content-Security-Policy"],
            },
            "security": {"preset": "strict", "keep_upstream": ["X-Frame-Options"]},
        }
    )
    _, reply = await run(f, exchange(), Terminal([UP_CSP]))
    assert reply.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert reply.headers["Content-Security-Policy"] == STRICT["Content-Security-Policy"]


# --- wiring ----------------------------------------------------------------------------

ROUTE_FILTER_CASES: list[tuple[str, dict[str, Any] | None, bool]] = [
    ("no-headers-section", None, False),
    ("empty-headers-section", {}, False),
    ("empty-sides", {"request": {}, "response": {"set": {}}}, False),
    ("request-rule", {"request": {"remove": ["X-Internal"]}}, True),
    ("security-preset-none", {"security": {"preset": "none"}}, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "installed"),
    [c[1:] for c in ROUTE_FILTER_CASES],
    ids=[c[0] for c in ROUTE_FILTER_CASES],
)
def test_route_filters(headers: dict[str, Any] | None, installed: bool) -> None:
    filters = route_filters(route_config(headers), RateLimitStores())
    assert list(filters) == (["headers"] if installed else [])
    if installed:
        assert isinstance(filters["headers"], HeaderFilter)


async def test_in_a_compiled_chain() -> None:
    filters = route_filters(
        route_config({"request": {"set": {"X-Client": "${client_ip}:${client_port}"}}}),
        RateLimitStores(),
    )
    terminal = Terminal()
    reply = await compile_chain(filters, terminal)(exchange())
    assert (reply.status, terminal.seen) == (200, [("X-Client", "203.0.113.7:50123")])


def test_repr_shows_the_rules() -> None:
    f = header_filter(
        {
            "request": {"set": {"X-Env": "prod"}, "remove": ["X-Internal"]},
            "response": {"add": {"X-Trace": "${request_id}"}},
            "security": {"preset": "strict", "csp": None, "keep_upstream": ["hsts"]},
        }
    )
    assert repr(f) == (
        "<HeaderFilter route=api request=[remove=['X-Internal'] set={'X-Env': 'prod'}] "
        "response=[add={'X-Trace': '${request_id}'}] security=['X-Content-Type-Options', "
        "'X-Frame-Options', 'Referrer-Policy', 'Permissions-Policy', "
        "'Strict-Transport-Security (https only)'] keep_upstream=['Strict-Transport-Security']>"
    )
