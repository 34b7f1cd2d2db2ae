"""Loading files: formats, syntax errors, all errors at once, `gateway check`, the
example config and the committed JSON Schema."""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path

import pytest

from gateway.config import check_command, config_hash, load_config, parse_config
from gateway.config.schema import SCHEMA_PATH, json_schema, render_schema
from gateway.errors import ConfigErrors

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "example.yaml"

GOOD_YAML = """\
listeners:
  - address: 127.0.0.1:8080
upstreams:
  users:
    endpoints: [http://127.0.0.1:9101]
routes:
  - name: users
    match: {path: {prefix: /users}}
    upstream: users
    timeouts: {read: 5s}
"""

GOOD_TOML = """\
[[listeners]]
address = "127.0.0.1:8080"

[upstreams.users]
endpoints = ["http://127.0.0.1:9101"]

[[routes]]
name = "users"
upstream = "users"
match.path.prefix = "/users"
timeouts.read = "5s"
"""

THREE_MISTAKES = """\
listeners:
  - address: 127.0.0.1:8080
upstreams:
  users:
    endpoints: [http://127.0.0.1:9101]
routes:
  - name: users
    match:
      hots: [api.example.com]
    upstream: users
  - name: slow
    upstream: users
    timeouts: {read: forever}
  - name: billing
    upstream: billing
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def messages(e: ConfigErrors) -> list[str]:
    return [str(err) for err in e.errors]


@pytest.mark.parametrize(
    ("name", "text"),
    [("gw.yaml", GOOD_YAML), ("gw.yml", GOOD_YAML), ("gw.conf", GOOD_YAML), ("gw.toml", GOOD_TOML)],
    ids=["yaml", "yml", "other-suffix-is-yaml", "toml"],
)
def test_formats_load_the_same(tmp_path: Path, name: str, text: str) -> None:
    config = load_config(write(tmp_path, name, text))
    assert config.routes[0].match.path is not None
    assert config.routes[0].match.path.prefix == "/users"
    assert config.routes[0].timeouts.read == 5.0
    assert config.upstreams["users"].endpoints[0].port == 9101


def test_three_mistakes_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", THREE_MISTAKES)
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert sorted(messages(info.value)) == [
        "routes[0].match.hots: unknown key",
        "routes[1].timeouts.read: invalid duration 'forever': expected a number of seconds "
        "or a string like '250ms', '10s', '5m'",
        "routes[2].upstream: unknown upstream 'billing'",
    ]
    assert str(info.value).startswith(f"{path}: 3 error(s)\n  routes[")


SYNTAX_ERRORS = [
    (
        "yaml-bad-indent",
        "yaml",
        "listeners:\n  - address: a\n bad: [\n",
        r"^YAML syntax error at line \d+, column \d+: ",
    ),
    (
        "yaml-mapping-in-scalar",
        "yaml",
        "workers: 1\nrouting: a: b\n",
        r"^YAML syntax error at line 2, column 11: mapping values are not allowed here$",
    ),
    (
        "yaml-two-documents",
        "yaml",
        "workers: 1\n---\nworkers: 2\n",
        r"^YAML syntax error at line 2, column 1: ",
    ),
    (
        "toml-bad-value",
        "toml",
        "workers = \n",
        r"^TOML syntax error: .*\(at line 1, column 11\)$",
    ),
]


@pytest.mark.parametrize(
    ("fmt", "text", "pattern"), [c[1:] for c in SYNTAX_ERRORS], ids=[c[0] for c in SYNTAX_ERRORS]
)
def test_syntax_errors_say_where(fmt: str, text: str, pattern: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, fmt, "gw")
    [error] = info.value.errors
    assert error.path == ""
    assert re.match(pattern, error.message), error.message


def test_yaml_duplicate_keys_are_errors_with_line() -> None:
    text = GOOD_YAML + "workers: 2\nworkers: 3\n"
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "yaml", "gw.yaml")
    assert messages(info.value) == ["line 12, column 1: duplicate key 'workers'"]


def test_yaml_merge_keys_may_be_overridden() -> None:
    text = GOOD_YAML + textwrap.dedent(
        """\
        server: &limits
          max_headers: 50
        x-unused: 1
        """
    )
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "yaml", "gw.yaml")
    assert messages(info.value) == ["x-unused: unknown key"]
    merged = GOOD_YAML.replace(
        "    timeouts: {read: 5s}\n",
        "    timeouts: &t {read: 5s, connect: 1s}\n"
        "  - name: other\n    upstream: users\n    timeouts: {<<: *t, read: 9s}\n",
    )
    config = parse_config(merged, "yaml", "gw.yaml")
    assert (config.routes[1].timeouts.read, config.routes[1].timeouts.connect) == (9.0, 1.0)


DOCUMENT_SHAPES = [
    ("empty-file", "", ["listeners: required", "upstreams: required", "routes: required"]),
    ("top-level-list", "- a\n", ["the top level must be a mapping (got a list)"]),
    ("top-level-scalar", "hello\n", ["the top level must be a mapping (got 'hello')"]),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in DOCUMENT_SHAPES], ids=[c[0] for c in DOCUMENT_SHAPES]
)
def test_document_shapes(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "yaml", "gw.yaml")
    assert messages(info.value) == expected


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown config format 'json'"):
        parse_config("{}", "json", "gw.json")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config(tmp_path / "nope.yaml")
    assert messages(info.value) == ["cannot read file: No such file or directory"]


def test_config_hash_is_sha256_of_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", GOOD_YAML)
    assert config_hash(path) == hashlib.sha256(GOOD_YAML.encode()).hexdigest()
    assert config_hash(str(path)) == config_hash(path)


def test_check_command_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "gw.yaml", GOOD_YAML)
    assert check_command(path) == 0
    assert capsys.readouterr().out == f"{path}: OK (1 listener, 1 upstream, 1 route)\n"


def test_check_command_reports_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "gw.yaml", THREE_MISTAKES)
    assert check_command(str(path)) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: 3 errors"
    assert "  routes[2].upstream: unknown upstream 'billing'" in out
    assert len(out) == 4 and all(line.startswith("  routes[") for line in out[1:])


def test_check_command_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.yaml"
    assert check_command(path) == 1
    assert capsys.readouterr().out == (
        f"{path}: 1 error\n  cannot read file: No such file or directory\n"
    )


def test_example_config_loads(capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(EXAMPLE)
    assert EXAMPLE.read_text().startswith("# yaml-language-server: $schema=gateway.schema.json\n")
    assert [(x.host, x.port) for x in config.listeners] == [("127.0.0.1", 8080)]
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 9901)
    assert [e.url for e in config.upstreams["users"].endpoints] == [
        "http://127.0.0.1:9101",
        "http://127.0.0.1:9102",
    ]
    assert [e.url for e in config.upstreams["orders"].endpoints] == ["http://127.0.0.1:9103"]
    routes = {r.name: r for r in config.routes}
    assert set(routes) == {"tenants", "users", "orders-v2", "health-echo"}
    orders = routes["orders-v2"]
    assert orders.match.path is not None and orders.match.path.prefix == "/api/orders"
    assert orders.rewrite is not None and orders.rewrite.prefix == "/orders"
    assert orders.match.methods == ["GET", "POST"]
    assert routes["tenants"].match.hosts == ["*.example.local"]
    assert check_command(EXAMPLE) == 0
    assert capsys.readouterr().out.endswith(": OK (1 listener, 2 upstreams, 4 routes)\n")


def test_schema_file_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), (
        "config/gateway.schema.json is stale: run python -m gateway.config.schema"
    )


def test_schema_shape() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "Gateway configuration"
    assert schema["additionalProperties"] is False
    limits = schema["$defs"]["ServerLimits"]["properties"]
    assert limits["keepalive_timeout"]["default"] == "75s"
    assert {s["type"] for s in limits["keepalive_timeout"]["oneOf"]} == {"number", "string"}
    assert limits["max_header_size"]["default"] == "32KiB"
    for name, definition in schema["$defs"].items():
        for field, prop in definition["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"


def test_yaml_slips_in_tls_settings_are_explained() -> None:
    text = GOOD_YAML.replace(
        "  - address: 127.0.0.1:8080\n",
        "  - address: 127.0.0.1:8443\n"
        "    tls:\n"
        "      certificates: [{cert_file: c.pem, key_file: k.pem}]\n"
        "      min_version: 1.3\n"
        "      client_auth: off\n",
    )
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "yaml", "gw.yaml")
    assert messages(info.value) == [
        "listeners[0].tls.min_version: invalid TLS version 1.3: expected '1.2' or '1.3' "
        "(quote it: write '1.3')",
        "listeners[0].tls.client_auth: invalid client_auth False: expected 'off', 'optional' "
        "or 'required' (quote it: YAML reads a bare off as false)",
    ]
