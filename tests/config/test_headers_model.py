"""Route header rules in the config: the exact message at the exact path, as test_model.py."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import Config, validate_data
from gateway.config.headers_model import (
    SECURITY_HEADERS,
    Variable,
    parse_template,
    preset_values,
)
from tests.config.test_model import TOKEN, edited, errors_of

H = "routes[0].headers"
MANAGED = "is hop-by-hop or framing, managed by the proxy (RFC 9110 7.6.1)"
CTL = "must not contain CR, LF or other control characters (RFC 9110 5.5)"
FIELDS = ", ".join(SECURITY_HEADERS)

# (id, edits, "path: message")
INVALID = [
    ("unknown-variable", {f"{H}.request.set.X-Client": "${clinet_ip}"},
     f"{H}.request.set.X-Client: unknown variable 'clinet_ip' (did you mean 'client_ip'?)"),
    ("unknown-variable-no-hint", {f"{H}.response.add.X-A": "a ${weather}"},
     f"{H}.response.add.X-A: unknown variable 'weather'"),
    ("empty-variable", {f"{H}.request.set.X-A": "${}"},
     f"{H}.request.set.X-A: empty variable name '${{}}'"),
    ("lone-dollar", {f"{H}.request.set.X-A": "cost $5"},
     f"{H}.request.set.X-A: malformed template 'cost $5': '$' at position 5 must start "
     "'${name}' or be doubled as '$$'"),
    ("dollar-at-end", {f"{H}.request.add.X-A": "a$"},
     f"{H}.request.add.X-A: malformed template 'a$': '$' at position 1 must start "
     "'${name}' or be doubled as '$$'"),
    ("unclosed", {f"{H}.request.set.X-A": "${client_ip"},
     f"{H}.request.set.X-A: malformed template '${{client_ip': '${{' at position 0 is not "
     "closed"),
    ("crlf-value", {f"{H}.request.set.X-A": "a\r\nX-Evil: 1"},
     f"{H}.request.set.X-A: invalid header value 'a\\r\\nX-Evil: 1': {CTL}"),
    ("nul-value", {f"{H}.response.add.X-A": "a\x00"},
     f"{H}.response.add.X-A: invalid header value 'a\\x00': {CTL}"),
    ("value-not-string", {f"{H}.request.set.X-A": 5},
     f"{H}.request.set.X-A: must be a string (got 5)"),
    ("name-not-token", {f"{H}.request.set": {"X Client": "a"}},
     f"{H}.request.set[\"X Client\"]: invalid header name 'X Client': {TOKEN}"),
    ("remove-name-not-token", {f"{H}.response.remove": ["Server", "a:b"]},
     f"{H}.response.remove[1]: invalid header name 'a:b': {TOKEN}"),
    ("set-hop-by-hop", {f"{H}.request.set.Connection": "close"},
     f"{H}.request.set.Connection: header 'Connection' {MANAGED}"),
    ("add-content-length", {f"{H}.response.add.content-length": "0"},
     f"{H}.response.add.content-length: header 'content-length' {MANAGED}"),
    ("remove-transfer-encoding", {f"{H}.request.remove": ["Transfer-Encoding"]},
     f"{H}.request.remove[0]: header 'Transfer-Encoding' {MANAGED}"),
    ("set-case-duplicate", {f"{H}.request.set": {"X-A": "1", "x-a": "2"}},
     f"{H}.request.set: header 'x-a' given twice (names are case-insensitive: 'X-A')"),
    ("remove-duplicate", {f"{H}.response.remove": ["Server", "Server"]},
     f"{H}.response.remove: header 'Server' given twice"),
    ("remove-string", {f"{H}.request.remove": "X-Internal"},
     f"{H}.request.remove: must be a list (got 'X-Internal')"),
    ("edits-unknown-key", {f"{H}.request.replace": {"X-A": "1"}},
     f"{H}.request.replace: unknown key"),
    ("headers-unknown-key", {f"{H}.requests": {}}, f"{H}.requests: unknown key"),
    ("headers-not-mapping", {H: ["X-A"]}, f"{H}: must be a mapping (got a list)"),
    ("preset-unknown", {f"{H}.security.preset": "paranoid"},
     f"{H}.security.preset: invalid preset 'paranoid': expected 'strict', 'basic' or 'none'"),
    ("preset-bare-off", {f"{H}.security.preset": False},
     f"{H}.security.preset: invalid preset False: expected 'strict', 'basic' or 'none' (quote "
     "it: YAML reads a bare off as false)"),
    ("hsts-no-max-age", {f"{H}.security.hsts": "includeSubDomains"},
     f"{H}.security.hsts: invalid hsts 'includeSubDomains': needs a max-age directive, like "
     "'max-age=31536000' (RFC 6797 6.1.1)"),
    ("hsts-empty", {f"{H}.security.hsts": ""},
     f"{H}.security.hsts: must not be empty (null turns the header off)"),
    ("csp-blank", {f"{H}.security.csp": " "},
     f"{H}.security.csp: must not be empty (null turns the header off)"),
    ("frame-options-allow-from", {f"{H}.security.frame_options": "ALLOW-FROM https://a"},
     f"{H}.security.frame_options: invalid frame_options 'ALLOW-FROM https://a': expected "
     "'DENY' or 'SAMEORIGIN'"),
    ("frame-options-lower", {f"{H}.security.frame_options": "sameorigin"},
     f"{H}.security.frame_options: invalid frame_options 'sameorigin': expected 'DENY' or "
     "'SAMEORIGIN' (write 'SAMEORIGIN')"),
    ("content-type-options", {f"{H}.security.content_type_options": "sniff"},
     f"{H}.security.content_type_options: invalid content_type_options 'sniff': the only "
     "value is 'nosniff'"),
    ("referrer-policy", {f"{H}.security.referrer_policy": "no-referrer, everywhere"},
     f"{H}.security.referrer_policy: invalid referrer_policy 'everywhere': expected "
     "no-referrer, no-referrer-when-downgrade, origin, origin-when-cross-origin, same-origin, "
     "strict-origin, strict-origin-when-cross-origin, unsafe-url"),
    ("csp-newline", {f"{H}.security.csp": "default-src 'self'\nscript-src *"},
     f"{H}.security.csp: invalid header value \"default-src 'self'\\nscript-src *\": {CTL}"),
    ("keep-upstream-unknown", {f"{H}.security.keep_upstream": ["csp", "Server"]},
     f"{H}.security.keep_upstream: invalid keep_upstream 'Server': expected a security "
     f"header's name or field ({FIELDS})"),
    ("keep-upstream-duplicate", {f"{H}.security.keep_upstream": ["csp", "content-security-policy"]},
     f"{H}.security.keep_upstream: header 'Content-Security-Policy' given twice"),
    ("security-unknown-key", {f"{H}.security.x_xss_protection": "1"},
     f"{H}.security.x_xss_protection: unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edits", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid(edits: dict[str, Any], expected: str) -> None:
    assert errors_of(edited(edits)) == [expected]


def test_every_error_in_one_pass() -> None:
    errors = errors_of(
        edited(
            {
                f"{H}.request.set.X-A": "${nope}",
                f"{H}.response.remove": ["Connection"],
                f"{H}.security.preset": "max",
            }
        )
    )
    assert [e.split(":")[0] for e in errors] == [
        f"{H}.request.set.X-A",
        f"{H}.response.remove[0]",
        f"{H}.security.preset",
    ]


VALID = [
    ("empty", {H: {}}),
    ("all-variables", {f"{H}.request.set": {
        "X-All": " ".join(f"${{{v}}}" for v in ("client_ip", "client_port", "request_id",
                                               "route", "upstream", "scheme", "host",
                                               "method", "path", "tls_version", "tls_cipher",
                                               "sni", "client_cert_subject",
                                               "client_cert_issuer", "client_cert_fingerprint",
                                               "client_cert_not_after", "client_cert_serial",
                                               "time_iso", "time_unix"))}}),
    ("dollars", {f"{H}.response.set.X-Price": "$$5 and $${literal}"}),
    ("tab-in-value", {f"{H}.request.set.X-A": "a\tb"}),
    ("host-may-be-set", {f"{H}.request.set.Host": "internal.example"}),
    ("set-and-add-same-name", {f"{H}.request.set.X-A": "1", f"{H}.request.add.x-a": "2"}),
    ("security-defaults", {f"{H}.security": {}}),
    ("security-overrides", {f"{H}.security": {
        "preset": "strict", "hsts": "max-age=600; preload", "csp": None,
        "frame_options": "SAMEORIGIN", "referrer_policy": "no-referrer, strict-origin",
        "keep_upstream": ["csp", "X-Frame-Options"]}}),
    ("keep-nothing", {f"{H}.security.keep_upstream": []}),
]  # fmt: skip


@pytest.mark.parametrize("edits", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid(edits: dict[str, Any]) -> None:
    assert isinstance(validate_data(edited(edits)), Config)


def test_defaults() -> None:
    route = validate_data(edited({f"{H}.security": {}})).routes[0]
    assert validate_data(edited({})).routes[0].headers is None
    rules = route.headers
    assert rules is not None
    assert (rules.request.set, rules.request.add, rules.request.remove) == ({}, {}, [])
    assert rules.security is not None
    assert rules.security.preset == "basic"
    assert rules.security.keep_upstream == [h for h, _, _ in SECURITY_HEADERS.values()]


PRESETS = [
    ("basic", {"preset": "basic"}, {
        "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
        "Referrer-Policy": "strict-origin-when-cross-origin"}),
    ("strict", {"preset": "strict"}, {
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
        "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Permissions-Policy": "geolocation=(), microphone=(), camera=()",
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}),
    ("none", {"preset": "none"}, {}),
    ("none-plus-one", {"preset": "none", "frame_options": "SAMEORIGIN"},
     {"X-Frame-Options": "SAMEORIGIN"}),
    ("strict-overridden", {"preset": "strict", "hsts": "max-age=600", "csp": None,
                           "permissions_policy": None, "referrer_policy": "no-referrer"}, {
        "Strict-Transport-Security": "max-age=600",
        "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer"}),
    ("basic-turned-off", {"content_type_options": None, "frame_options": None,
                          "referrer_policy": None}, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("security", "sent"), [c[1:] for c in PRESETS], ids=[c[0] for c in PRESETS]
)
def test_preset_values(security: dict[str, Any], sent: dict[str, str]) -> None:
    rules = validate_data(edited({f"{H}.security": security})).routes[0].headers
    assert rules is not None and rules.security is not None
    values = preset_values(rules.security)
    assert {k: v for k, v in values.items() if v is not None} == sent


TEMPLATES = [
    ("literal", "prod", ("prod",)),
    ("empty", "", ()),
    ("one-variable", "${client_ip}", (Variable("client_ip"),)),
    ("mixed", "for=${client_ip}:${client_port};",
     ("for=", Variable("client_ip"), ":", Variable("client_port"), ";")),
    ("dollars-merge", "$$${route}$$", ("$", Variable("route"), "$")),
    ("escaped-brace", "$${client_ip}", ("${client_ip}",)),
    ("adjacent-variables", "${method}${path}", (Variable("method"), Variable("path"))),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "parts"), [c[1:] for c in TEMPLATES], ids=[c[0] for c in TEMPLATES]
)
def test_parse_template(text: str, parts: tuple[object, ...]) -> None:
    assert parse_template(text) == parts
