"""Every model constraint and cross-field check: the exact message at the exact path.

Each case edits one spot of a valid base config and expects exactly one error back,
in the style of Kong's schema specs.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from gateway.config import Config, validate_data
from gateway.errors import ConfigErrors

DELETE = object()


def base() -> dict[str, Any]:
    return {
        "listeners": [{"address": "127.0.0.1:8080"}],
        "upstreams": {"users": {"endpoints": ["http://127.0.0.1:9101"]}},
        "routes": [{"name": "users", "match": {"path": {"prefix": "/u"}}, "upstream": "users"}],
    }


def edited(edits: dict[str, Any]) -> dict[str, Any]:
    """`base()` with each dotted path ('routes[0].match.path') set to a value (or deleted)."""
    data = base()
    for path, value in edits.items():
        parts: list[str | int] = [
            int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)
        ]
        node: Any = data
        for part in parts[:-1]:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]
        if value is DELETE:
            del node[parts[-1]]
        elif isinstance(node, list) and parts[-1] == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[parts[-1]] = copy.deepcopy(value)
    return data


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        validate_data(data, "test.yaml")
    return [str(e) for e in info.value.errors]


ADDR = "expected 'host:port', like '127.0.0.1:8080', '0.0.0.0:8080' or '[::1]:8080'"
HOST = "expected 'api.example.com' or a wildcard '*.example.com'"
CIDR = "expected an address or a network like '10.0.0.0/8' or 'fd00::/8'"
TLS = {"certificates": [{"cert_file": "c.pem", "key_file": "k.pem"}]}
AUTH = "expected 'off', 'optional' or 'required'"
TOKEN = "must be an HTTP token (RFC 9110 5.6.2)"
NAME = "use letters, digits, '_', '.', '-'"

# (id, edits, "path: message")
INVALID = [
    # listeners
    ("listeners-empty", {"listeners": []}, "listeners: must have at least 1 item"),
    ("listeners-missing", {"listeners": DELETE}, "listeners: required"),
    ("listener-no-port", {"listeners[0].address": "localhost"},
     f"listeners[0].address: invalid address 'localhost': {ADDR}"),
    ("listener-empty-host", {"listeners[0].address": ":8080"},
     f"listeners[0].address: invalid address ':8080': {ADDR}"),
    ("listener-bare-ipv6", {"listeners[0].address": "::1:8080"},
     "listeners[0].address: invalid address '::1:8080': write IPv6 hosts in brackets, "
     "'[::1]:8080'"),
    ("listener-bad-ipv6", {"listeners[0].address": "[zz]:80"},
     "listeners[0].address: invalid address '[zz]:80': bad IPv6 address 'zz'"),
    ("listener-bad-host", {"listeners[0].address": "a b:80"},
     "listeners[0].address: invalid address 'a b:80': bad host 'a b'"),
    ("listener-port-range", {"listeners[0].address": "127.0.0.1:70000"},
     "listeners[0].address: invalid address '127.0.0.1:70000': port must be a number in "
     "0..65535"),
    ("listener-port-word", {"listeners[0].address": "127.0.0.1:http"},
     "listeners[0].address: invalid address '127.0.0.1:http': port must be a number in "
     "0..65535"),
    ("listener-address-int", {"listeners[0].address": 8080},
     "listeners[0].address: must be a string (got 8080)"),
    ("listener-bad-name", {"listeners[0].name": "a b"},
     f"listeners[0].name: invalid name 'a b': {NAME}"),
    ("listener-unknown-key", {"listeners[0].port": 1}, "listeners[0].port: unknown key"),
    ("listener-not-mapping", {"listeners": ["127.0.0.1:8080"]},
     "listeners[0]: must be a mapping (got '127.0.0.1:8080')"),
    ("listener-tls-string", {"listeners[0].tls": "yes"},
     "listeners[0].tls: must be a mapping (got 'yes')"),
    ("tls-certificates-empty", {"listeners[0].tls": {"certificates": []}},
     "listeners[0].tls.certificates: must have at least 1 item"),
    ("tls-certificates-missing", {"listeners[0].tls": {}},
     "listeners[0].tls.certificates: required"),
    ("tls-key-file-missing", {"listeners[0].tls": {"certificates": [{"cert_file": "c.pem"}]}},
     "listeners[0].tls.certificates[0].key_file: required"),
    ("tls-cert-file-blank",
     {"listeners[0].tls": TLS, "listeners[0].tls.certificates[0].cert_file": " "},
     "listeners[0].tls.certificates[0].cert_file: must not be empty"),
    ("tls-pair-unknown-key", {"listeners[0].tls": TLS, "listeners[0].tls.certificates[0].sni": "a"},
     "listeners[0].tls.certificates[0].sni: unknown key"),
    ("tls-server-name-invalid",
     {"listeners[0].tls": TLS, "listeners[0].tls.certificates[0].server_names": ["a b"]},
     f"listeners[0].tls.certificates[0].server_names[0]: invalid host 'a b': {HOST}"),
    ("tls-server-names-empty",
     {"listeners[0].tls": TLS, "listeners[0].tls.certificates[0].server_names": []},
     "listeners[0].tls.certificates[0].server_names: must have at least 1 item"),
    ("tls-server-names-number",
     {"listeners[0].tls": TLS, "listeners[0].tls.certificates[0].server_names": 5},
     "listeners[0].tls.certificates[0].server_names: must be a list (got 5)"),
    ("tls-min-version-float", {"listeners[0].tls": {**TLS, "min_version": 1.2}},
     "listeners[0].tls.min_version: invalid TLS version 1.2: expected '1.2' or '1.3' (quote "
     "it: write '1.2')"),
    ("tls-min-version-1.1", {"listeners[0].tls": {**TLS, "min_version": "1.1"}},
     "listeners[0].tls.min_version: invalid TLS version '1.1': expected '1.2' or '1.3'"),
    ("tls-client-auth-bare-off", {"listeners[0].tls": {**TLS, "client_auth": False}},
     f"listeners[0].tls.client_auth: invalid client_auth False: {AUTH} (quote it: YAML reads "
     "a bare off as false)"),
    ("tls-client-auth-bare-on", {"listeners[0].tls": {**TLS, "client_auth": True}},
     f"listeners[0].tls.client_auth: invalid client_auth True: {AUTH} (quote it: YAML reads "
     "a bare on as true)"),
    ("tls-client-auth-word", {"listeners[0].tls": {**TLS, "client_auth": "yes"}},
     f"listeners[0].tls.client_auth: invalid client_auth 'yes': {AUTH}"),
    ("tls-unknown-key", {"listeners[0].tls": {**TLS, "ciphers": "ALL"}},
     "listeners[0].tls.ciphers: unknown key"),
    ("redirect-port-range", {"listeners[0].redirect_to_https": 70000},
     "listeners[0].redirect_to_https: must be <= 65535"),
    ("redirect-port-zero", {"listeners[0].redirect_to_https": 0},
     "listeners[0].redirect_to_https: must be >= 1"),
    ("redirect-port-string", {"listeners[0].redirect_to_https": "443"},
     "listeners[0].redirect_to_https: must be an integer (got '443')"),
    # trusted proxies
    ("trusted-proxy-host-bits", {"trusted_proxies": ["10.0.0.1/8"]},
     "trusted_proxies[0]: invalid CIDR '10.0.0.1/8': host bits are set (did you mean "
     "'10.0.0.0/8'?)"),
    ("trusted-proxy-name", {"trusted_proxies": ["proxy.local"]},
     f"trusted_proxies[0]: invalid CIDR 'proxy.local': {CIDR}"),
    ("trusted-proxy-prefix-range", {"trusted_proxies": ["::1", "10.0.0.0/33"]},
     f"trusted_proxies[1]: invalid CIDR '10.0.0.0/33': {CIDR}"),
    ("trusted-proxy-number", {"trusted_proxies": [10]},
     "trusted_proxies[0]: must be a string (got 10)"),
    ("trusted-proxies-string", {"trusted_proxies": "10.0.0.0/8"},
     "trusted_proxies: must be a list (got '10.0.0.0/8')"),
    # admin, workers
    ("admin-no-port", {"admin.address": "127.0.0.1"},
     f"admin.address: invalid address '127.0.0.1': {ADDR}"),
    ("admin-enabled-string", {"admin.enabled": "yes"},
     "admin.enabled: must be true or false (got 'yes')"),
    ("workers-zero", {"workers": 0}, "workers: must be >= 1"),
    ("workers-string", {"workers": "4"}, "workers: must be an integer (got '4')"),
    ("workers-float", {"workers": 1.5}, "workers: must be an integer (got 1.5)"),
    # server limits
    ("max-request-line-zero", {"server.max_request_line": 0},
     "server.max_request_line: must be > 0"),
    ("max-header-size-unit", {"server.max_header_size": "10XB"},
     "server.max_header_size: invalid size '10XB': expected a number of bytes or a string "
     "like '512', '10KB', '10KiB', '1GiB'"),
    ("max-header-field-neg", {"server.max_header_field": -1},
     "server.max_header_field: invalid size -1: must be >= 0"),
    ("max-headers-zero", {"server.max_headers": 0}, "server.max_headers: must be >= 1"),
    ("keepalive-word", {"server.keepalive_timeout": "abc"},
     "server.keepalive_timeout: invalid duration 'abc': expected a number of seconds or a "
     "string like '250ms', '10s', '5m'"),
    ("keepalive-negative", {"server.keepalive_timeout": -1},
     "server.keepalive_timeout: invalid duration -1: must be >= 0"),
    ("header-timeout-zero", {"server.header_timeout": "0s"}, "server.header_timeout: must be > 0"),
    ("watch-interval-zero", {"server.watch_interval": 0}, "server.watch_interval: must be > 0"),
    ("request-id-header-space", {"server.request_id_header": "X Request"},
     f"server.request_id_header: invalid header name 'X Request': {TOKEN}"),
    ("via-space", {"server.via": "my gw"}, f"server.via: invalid pseudonym 'my gw': {TOKEN}"),
    ("watch-config-string", {"server.watch_config": "on"},
     "server.watch_config: must be true or false (got 'on')"),
    ("server-unknown-key", {"server.max_body": 1}, "server.max_body: unknown key"),
    # upstreams
    ("upstreams-missing", {"upstreams": DELETE, "routes": []}, "upstreams: required"),
    ("upstream-bad-name", {'upstreams.a b': {"endpoints": ["http://h:1"]}},
     f'upstreams["a b"]: invalid name \'a b\': {NAME}'),
    ("endpoints-empty", {"upstreams.users.endpoints": []},
     "upstreams.users.endpoints: must have at least 1 item"),
    ("endpoint-scheme", {"upstreams.users.endpoints[0]": "ftp://h:1"},
     "upstreams.users.endpoints[0].url: invalid url 'ftp://h:1': scheme must be http or https"),
    ("endpoint-no-scheme", {"upstreams.users.endpoints[0]": "127.0.0.1:9101"},
     "upstreams.users.endpoints[0].url: invalid url '127.0.0.1:9101': scheme must be http or "
     "https"),
    ("endpoint-userinfo", {"upstreams.users.endpoints[0]": "http://u:p@h:1"},
     "upstreams.users.endpoints[0].url: invalid url 'http://u:p@h:1': must not carry user info"),
    ("endpoint-no-host", {"upstreams.users.endpoints[0]": "http://:80"},
     "upstreams.users.endpoints[0].url: invalid url 'http://:80': host is missing"),
    ("endpoint-path", {"upstreams.users.endpoints[0]": "http://h:1/api"},
     "upstreams.users.endpoints[0].url: invalid url 'http://h:1/api': must not have a path or "
     "query (use a route rewrite)"),
    ("endpoint-query", {"upstreams.users.endpoints[0]": "http://h:1?a=1"},
     "upstreams.users.endpoints[0].url: invalid url 'http://h:1?a=1': must not have a path or "
     "query (use a route rewrite)"),
    ("endpoint-port-range", {"upstreams.users.endpoints[0]": "http://h:99999"},
     "upstreams.users.endpoints[0].url: invalid url 'http://h:99999': port must be a number "
     "in 0..65535"),
    ("endpoint-weight-zero", {"upstreams.users.endpoints[0]": {"url": "http://h:1", "weight": 0}},
     "upstreams.users.endpoints[0].weight: must be >= 1"),
    ("endpoint-url-missing", {"upstreams.users.endpoints[0]": {"weight": 2}},
     "upstreams.users.endpoints[0].url: required"),
    ("endpoint-number", {"upstreams.users.endpoints[0]": 42},
     "upstreams.users.endpoints[0]: expected a URL or a mapping with a url key (got 42)"),
    ("endpoint-unknown-key", {"upstreams.users.endpoints[0]": {"url": "http://h:1", "w": 2}},
     "upstreams.users.endpoints[0].w: unknown key"),
    ("pool-max-connections", {"upstreams.users.pool.max_connections": 0},
     "upstreams.users.pool.max_connections: must be >= 1"),
    ("pool-max-idle", {"upstreams.users.pool.max_idle": -1},
     "upstreams.users.pool.max_idle: must be >= 0"),
    ("pool-idle-timeout", {"upstreams.users.pool.idle_timeout": "1y"},
     "upstreams.users.pool.idle_timeout: invalid duration '1y': expected a number of seconds "
     "or a string like '250ms', '10s', '5m'"),
    ("tls-verify-string", {"upstreams.users.tls.verify": "no"},
     "upstreams.users.tls.verify: must be true or false (got 'no')"),
    ("tls-unknown-key", {"upstreams.users.tls.sni": "x"}, "upstreams.users.tls.sni: unknown key"),
    ("tls-cert-without-key", {"upstreams.users.tls.cert_file": "c.pem"},
     "upstreams.users.tls: cert_file and key_file go together"),
    ("tls-key-without-cert", {"upstreams.users.tls.key_file": "k.pem"},
     "upstreams.users.tls: cert_file and key_file go together"),
    ("tls-key-file-empty", {"upstreams.users.tls": {"cert_file": "c.pem", "key_file": ""}},
     "upstreams.users.tls.key_file: must not be empty"),
    # routes
    ("routes-missing", {"routes": DELETE}, "routes: required"),
    ("route-bad-name", {"routes[0].name": "a/b"}, f"routes[0].name: invalid name 'a/b': {NAME}"),
    ("route-no-upstream", {"routes[0].upstream": DELETE}, "routes[0].upstream: required"),
    ("host-with-port", {"routes[0].match.hosts": "a.com:80"},
     "routes[0].match.hosts[0]: invalid host 'a.com:80': a host match carries no port"),
    ("host-inner-wildcard", {"routes[0].match.hosts": ["a.com", "*.*.a.com"]},
     f"routes[0].match.hosts[1]: invalid host '*.*.a.com': {HOST}"),
    ("host-partial-wildcard", {"routes[0].match.hosts": ["a*.com"]},
     f"routes[0].match.hosts[0]: invalid host 'a*.com': {HOST}"),
    ("host-bare-wildcard", {"routes[0].match.hosts": ["*"]},
     f"routes[0].match.hosts[0]: invalid host '*': {HOST}"),
    ("method-space", {"routes[0].match.methods": ["GE T"]},
     f"routes[0].match.methods[0]: invalid method 'GE T': {TOKEN}"),
    ("path-none-given", {"routes[0].match.path": {}},
     "routes[0].match.path: give exactly one of exact, prefix, regex"),
    ("path-two-given", {"routes[0].match.path": {"exact": "/a", "prefix": "/b"}},
     "routes[0].match.path: give exactly one of exact, prefix, regex"),
    ("path-prefix-relative", {"routes[0].match.path": {"prefix": "users"}},
     "routes[0].match.path.prefix: invalid path 'users': must start with '/'"),
    ("path-exact-relative", {"routes[0].match.path": {"exact": "echo"}},
     "routes[0].match.path.exact: invalid path 'echo': must start with '/'"),
    ("path-regex-invalid", {"routes[0].match.path": {"regex": "/(a"}},
     "routes[0].match.path.regex: invalid regex '/(a': missing ), unterminated subpattern at "
     "position 1"),
    ("match-unknown-key", {"routes[0].match.hots": ["a.com"]}, "routes[0].match.hots: unknown key"),
    ("header-no-condition", {"routes[0].match.headers": [{"name": "x-a"}]},
     "routes[0].match.headers[0]: give exactly one of value, regex, present"),
    ("header-two-conditions",
     {"routes[0].match.headers": [{"name": "x-a", "value": "1", "present": True}]},
     "routes[0].match.headers[0]: give exactly one of value, regex, present"),
    ("header-bad-name", {"routes[0].match.headers": [{"name": "x a", "present": True}]},
     f"routes[0].match.headers[0].name: invalid header name 'x a': {TOKEN}"),
    ("header-bad-regex", {"routes[0].match.headers": [{"name": "x-a", "regex": "["}]},
     "routes[0].match.headers[0].regex: invalid regex '[': unterminated character set at "
     "position 0"),
    ("rewrite-empty", {"routes[0].rewrite": {}},
     "routes[0].rewrite: give exactly one of strip_prefix, prefix, regex + replacement"),
    ("rewrite-two-styles", {"routes[0].rewrite": {"strip_prefix": True, "prefix": "/x"}},
     "routes[0].rewrite: give exactly one of strip_prefix, prefix, regex + replacement"),
    ("rewrite-regex-alone", {"routes[0].rewrite": {"regex": "^/u"}},
     "routes[0].rewrite: regex and replacement go together"),
    ("rewrite-prefix-relative", {"routes[0].rewrite": {"prefix": "v2"}},
     "routes[0].rewrite.prefix: invalid path 'v2': must start with '/'"),
    ("timeout-connect-zero", {"routes[0].timeouts.connect": 0},
     "routes[0].timeouts.connect: must be > 0"),
    ("timeout-read-word", {"routes[0].timeouts.read": "soon"},
     "routes[0].timeouts.read: invalid duration 'soon': expected a number of seconds or a "
     "string like '250ms', '10s', '5m'"),
    ("retry-string", {"routes[0].retry_idempotent": "true"},
     "routes[0].retry_idempotent: must be true or false (got 'true')"),
    ("route-not-mapping", {"routes": ["users"]}, "routes[0]: must be a mapping (got 'users')"),
    # cross-field checks
    ("unknown-upstream", {"routes[0].upstream": "billing"},
     "routes[0].upstream: unknown upstream 'billing'"),
    ("duplicate-route-name", {"routes[1]": {"name": "users", "upstream": "users"}},
     "routes[1].name: duplicate route name 'users' (first in routes[0])"),
    ("strip-prefix-needs-prefix",
     {"routes[0].match.path": {"exact": "/u"}, "routes[0].rewrite": {"strip_prefix": True}},
     "routes[0].rewrite.strip_prefix: needs match.path.prefix"),
    ("prefix-rewrite-needs-prefix", {"routes[0].match": {}, "routes[0].rewrite": {"prefix": "/v"}},
     "routes[0].rewrite.prefix: needs match.path.prefix"),
    ("duplicate-listener", {"listeners[1]": {"address": "127.0.0.1:8080"}},
     "listeners[1].address: address '127.0.0.1:8080' clashes with listeners[0]"),
    ("wildcard-listener-clash", {"listeners[1]": {"address": "0.0.0.0:8080"}},
     "listeners[1].address: address '0.0.0.0:8080' clashes with listeners[0]"),
    ("duplicate-listener-name",
     {"listeners[0].name": "a", "listeners[1]": {"name": "a", "address": "127.0.0.1:8081"}},
     "listeners[1].name: duplicate listener name 'a' (first in listeners[0])"),
    ("explicit-name-clashes-default",
     {"listeners[1]": {"name": "listener-0", "address": "127.0.0.1:8081"}},
     "listeners[1].name: duplicate listener name 'listener-0' (first in listeners[0])"),
    ("client-auth-needs-ca", {"listeners[0].tls": {**TLS, "client_auth": "required"}},
     "listeners[0].tls.client_ca_file: required when client_auth is 'required'"),
    ("optional-client-auth-needs-ca", {"listeners[0].tls": {**TLS, "client_auth": "optional"}},
     "listeners[0].tls.client_ca_file: required when client_auth is 'optional'"),
    ("client-ca-without-client-auth", {"listeners[0].tls": {**TLS, "client_ca_file": "ca.pem"}},
     "listeners[0].tls.client_ca_file: unused while client_auth is 'off' (set 'optional' or "
     "'required')"),
    ("duplicate-server-name",
     {"listeners[0].tls": {"certificates": [
         {"cert_file": "a.pem", "key_file": "a.key", "server_names": ["a.com"]},
         {"cert_file": "b.pem", "key_file": "b.key", "server_names": ["x.com", "A.com"]}]}},
     "listeners[0].tls.certificates[1].server_names[1]: server name 'A.com' is already served "
     "by certificates[0]"),
    ("redirect-on-tls-listener",
     {"listeners[0].tls": TLS, "listeners[0].redirect_to_https": 443},
     "listeners[0].redirect_to_https: only on a listener without tls"),
    ("admin-clashes-listener", {"admin.address": "127.0.0.1:8080"},
     "admin.address: address '127.0.0.1:8080' clashes with listeners[0]"),
    ("default-admin-clashes", {"listeners[0].address": "0.0.0.0:9901"},
     "admin.address: address '127.0.0.1:9901' (the default admin address) clashes with "
     "listeners[0]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edits", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid(edits: dict[str, Any], expected: str) -> None:
    assert errors_of(edited(edits)) == [expected]


# (id, edits): configs that must load
VALID = [
    ("base", {}),
    ("ipv6-listener", {"listeners[0].address": "[::1]:8080"}),
    ("hostname-listener", {"listeners[0].address": "localhost:8080"}),
    ("port-zero-twice", {"listeners": [{"address": "127.0.0.1:0"}, {"address": "127.0.0.1:0"}]}),
    ("same-port-other-host", {"listeners[1]": {"address": "127.0.0.2:8080"}}),
    ("admin-disabled-same-address", {"admin": {"address": "127.0.0.1:8080", "enabled": False}}),
    ("no-routes", {"routes": []}),
    ("empty-upstreams-no-routes", {"upstreams": {}, "routes": []}),
    ("endpoint-weighted", {"upstreams.users.endpoints[0]": {"url": "https://h", "weight": 3}}),
    ("dotted-upstream-name", {"upstreams": {"users": {"endpoints": ["http://h:1"]},
                                            "users.v2": {"endpoints": ["http://h:2"]}}}),
    ("rewrite-strip-prefix", {"routes[0].rewrite": {"strip_prefix": True}}),
    ("rewrite-regex", {"routes[0].rewrite": {"regex": "^/u/(.*)", "replacement": "/\\1"}}),
    ("rewrite-regex-any-match", {"routes[0].match": {}, "routes[0].rewrite": {"regex": "a",
                                                                              "replacement": ""}}),
    ("header-absent", {"routes[0].match.headers": [{"name": "x-a", "present": False}]}),
    ("durations-as-numbers", {"routes[0].timeouts": {"connect": 1, "read": 0.5, "total": 0}}),
    ("tls-listener", {"listeners[0].tls": TLS}),
    ("tls-mtls-1.3", {"listeners[0].tls": {**TLS, "min_version": "1.3", "client_auth": "required",
                                           "client_ca_file": "ca.pem"}}),
    ("tls-two-pairs-wildcard", {"listeners[0].tls": {"certificates": [
        {"cert_file": "a.pem", "key_file": "a.key"},
        {"cert_file": "b.pem", "key_file": "b.key", "server_names": ["*.b.com", "b.com"]}]}}),
    ("tls-same-name-in-one-pair",
     {"listeners[0].tls": TLS,
      "listeners[0].tls.certificates[0].server_names": ["a.com", "a.com"]}),
    ("redirect-listener-beside-tls", {"listeners[0].redirect_to_https": 8443,
                                      "listeners[1]": {"address": "127.0.0.1:8443", "tls": TLS}}),
    ("upstream-client-cert", {"upstreams.users.tls": {"cert_file": "c.pem", "key_file": "k.pem"}}),
    ("trusted-proxies", {"trusted_proxies": ["10.0.0.0/8", "192.0.2.7", "::1", "fd00::/8"]}),
]  # fmt: skip


@pytest.mark.parametrize("edits", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid(edits: dict[str, Any]) -> None:
    assert isinstance(validate_data(edited(edits)), Config)


def test_defaults_are_parsed_and_safe() -> None:
    config = validate_data(base())
    assert config.workers == 1
    assert (config.admin.host, config.admin.port, config.admin.enabled) == ("127.0.0.1", 9901, True)
    s = config.server
    assert (s.max_request_line, s.max_header_field, s.max_header_size) == (8192, 8192, 32768)
    assert (s.keepalive_timeout, s.header_timeout, s.shutdown_timeout) == (75.0, 10.0, 30.0)
    assert (s.max_headers, s.request_id_header, s.via) == (100, "X-Request-ID", "gateway")
    assert (s.watch_config, s.watch_interval) == (True, 1.0)
    assert (config.listeners[0].tls, config.listeners[0].redirect_to_https) == (None, None)
    assert config.trusted_proxies == []
    up = config.upstreams["users"]
    assert (up.tls.verify, up.tls.ca_file, up.tls.server_name) == (True, None, None)
    assert (up.tls.cert_file, up.tls.key_file) == (None, None)
    assert (up.pool.max_connections, up.pool.max_idle, up.pool.idle_timeout) == (512, 64, 60.0)
    route = config.routes[0]
    assert (route.rewrite, route.preserve_host, route.retry_idempotent) == (None, True, True)
    assert (route.timeouts.connect, route.timeouts.read, route.timeouts.total) == (2.0, 30.0, 60.0)


def test_normalisation_and_properties() -> None:
    config = validate_data(
        edited(
            {
                "listeners[1]": {"name": "v6", "address": "[::1]:8443"},
                "upstreams.users.endpoints": ["https://API.example.com", "http://[::1]:9001"],
                "routes[0].match.hosts": "*.Example.COM",
                "routes[0].match.methods": ["get", "Post"],
                "server.max_header_size": "64KiB",
                "routes[0].timeouts.total": "1m30s",
            }
        )
    )
    assert [(x.name, x.host, x.port) for x in config.listeners] == [
        ("listener-0", "127.0.0.1", 8080),
        ("v6", "::1", 8443),
    ]
    tls_ep, v6_ep = config.upstreams["users"].endpoints
    assert (tls_ep.scheme, tls_ep.host, tls_ep.port, tls_ep.weight) == (
        "https",
        "api.example.com",
        443,
        1,
    )
    assert tls_ep.authority == "api.example.com"
    assert (v6_ep.scheme, v6_ep.host, v6_ep.port, v6_ep.authority) == (
        "http",
        "::1",
        9001,
        "[::1]:9001",
    )
    match = config.routes[0].match
    assert (match.hosts, match.methods) == (["*.example.com"], ["GET", "POST"])
    assert config.server.max_header_size == 65536
    assert config.routes[0].timeouts.total == 90.0


def test_tls_defaults_and_normalisation() -> None:
    config = validate_data(
        edited(
            {
                "listeners[0].tls": TLS,
                "listeners[1]": {"address": "127.0.0.1:8443", "tls": {
                    **TLS, "min_version": "1.3", "client_auth": "optional",
                    "client_ca_file": "ca.pem"}},
                "listeners[1].tls.certificates[0].server_names": "*.Example.COM",
                "trusted_proxies": ["192.0.2.7", "::1", "10.0.0.0/8"],
            }
        )
    )  # fmt: skip
    plain = config.listeners[0].tls
    assert plain is not None
    assert (plain.min_version, plain.client_auth, plain.client_ca_file) == ("1.2", "off", None)
    assert plain.certificates[0].server_names is None
    mtls = config.listeners[1].tls
    assert mtls is not None
    assert (mtls.min_version, mtls.client_auth, mtls.client_ca_file) == (
        "1.3",
        "optional",
        "ca.pem",
    )
    assert mtls.certificates[0].server_names == ["*.example.com"]
    assert config.trusted_proxies == ["192.0.2.7/32", "::1/128", "10.0.0.0/8"]
    assert [str(n) for n in config.trusted_networks] == config.trusted_proxies


def test_models_are_frozen() -> None:
    config = validate_data(base())
    with pytest.raises(ValueError, match="frozen"):
        config.__setattr__("workers", 2)
