"""Reading a config file: parse YAML or TOML, validate, report every error at once.

The pipeline is parse -> validate with the model -> cross-check the raw data. Each
stage collects instead of stopping, and everything found is raised together as one
`ConfigErrors`, each entry a `ConfigError(path, message)` with a path like
`routes[2].upstream` or `upstreams.users.endpoints[0].url`. Only a syntax error stops
early, since there is no data to validate then.

YAML is read with a SafeLoader that also reports duplicate keys (PyYAML silently keeps
the last one, which would hide an edit). pydantic's error texts are rewritten to be
short: no "Value error, " prefix, no union/validator tags in paths, no doc URLs.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.config.checks import cross_check
from gateway.config.fields import NAME_PATTERN
from gateway.config.model import Config
from gateway.errors import ConfigError, ConfigErrors

__all__ = ["check_command", "config_hash", "load_config", "parse_config", "validate_data"]

_FORMATS = {"yaml": "yaml", "yml": "yaml", "toml": "toml"}


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at `path` (.toml is TOML, anything else YAML)."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigErrors(source, [ConfigError("", f"cannot read file: {e.strerror}")]) from e
    except UnicodeDecodeError as e:
        raise ConfigErrors(source, [ConfigError("", f"not UTF-8 text: {e.reason}")]) from e
    fmt = "toml" if Path(path).suffix.lower() == ".toml" else "yaml"
    return parse_config(text, fmt, source)


def parse_config(text: str, fmt: str, source: str) -> Config:
    """Parse and validate config `text` in `fmt` ('yaml', 'yml' or 'toml')."""
    kind = _FORMATS.get(fmt.lower().lstrip("."))
    if kind is None:
        raise ValueError(f"unknown config format {fmt!r}: use 'yaml' or 'toml'")
    errors: list[ConfigError] = []
    try:
        data = _parse_toml(text) if kind == "toml" else _parse_yaml(text, errors)
    except ConfigError as e:
        raise ConfigErrors(source, [e]) from None
    return validate_data(data, source, errors)


def validate_data(
    data: Any, source: str = "<data>", errors: list[ConfigError] | None = None
) -> Config:
    """Validate already-parsed data; raise ConfigErrors with `errors` plus all found here."""
    found = list(errors or [])
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        found.extend(_from_pydantic(err) for err in e.errors())
    found.extend(cross_check(data))
    if found or config is None:
        raise ConfigErrors(source, _dedupe(found))
    return config


def config_hash(path: str | Path) -> str:
    """sha256 hex digest of the file's bytes (reported on reload)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_command(path: str | Path) -> int:
    """`gateway check FILE`: print OK and a summary (0), or every error (1)."""
    from gateway.tls.check import check_tls_files  # files named by the config

    try:
        config = load_config(path)
        errors, warnings = check_tls_files(config)
        if errors:
            raise ConfigErrors(str(path), errors)
    except ConfigErrors as e:
        print(f"{e.source}: {_plural(len(e.errors), 'error')}")
        for err in e.errors:
            print(f"  {err}")
        return 1
    for warning in warnings:
        print(f"  warning: {warning}")
    summary = ", ".join(
        [
            _plural(len(config.listeners), "listener"),
            _plural(len(config.upstreams), "upstream"),
            _plural(len(config.routes), "route"),
        ]
    )
    print(f"{path}: OK ({summary})")
    return 0


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- parsing ---------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate mapping keys instead of dropping them."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[ConfigError] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # Merge keys ('<<') may legitimately be overridden; check plain keys only.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                mark = key_node.start_mark
                self.duplicates.append(
                    ConfigError(
                        "",
                        f"line {mark.line + 1}, column {mark.column + 1}: "
                        f"duplicate key {key_node.value!r}",
                    )
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _parse_yaml(text: str, errors: list[ConfigError]) -> Any:
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters here already
    except yaml.YAMLError as e:
        raise ConfigError("", f"YAML syntax error: {e}") from None
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "invalid YAML"
        raise ConfigError("", f"YAML syntax error{where}: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError("", f"YAML syntax error: {e}") from None
    finally:
        loader.dispose()
    errors.extend(loader.duplicates)
    return {} if data is None else data


def _parse_toml(text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"TOML syntax error: {e}") from None


# --- pydantic errors -------------------------------------------------------------------

_TAG = re.compile(r"^[\w-]+\[.*\]$")  # function-before[...], list[...], union member tags
_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _format_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def _message(err: ErrorDetails) -> str:
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]} (got {_describe(err['input'])})"
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        bound = ctx[key]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {op} {bound}"
    if kind == "too_short":
        n = ctx["min_length"]
        return f"must have at least {n} item{'' if n == 1 else 's'}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == NAME_PATTERN:
            return f"invalid name {err['input']!r}: use letters, digits, '_', '.', '-'"
        return f"must match {ctx.get('pattern')}"
    return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _from_pydantic(err: ErrorDetails) -> ConfigError:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _TAG.match(p)))
    if loc and loc[-1] == "[key]":  # the dict key itself is invalid
        loc = loc[:-1]
    path = _format_path(loc)
    message = _message(err)
    if not path and err["type"] == "model_type":
        message = f"the top level must be a mapping (got {_describe(err['input'])})"
    return ConfigError(path, message)


def _dedupe(errors: list[ConfigError]) -> list[ConfigError]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in errors:
        if (e.path, e.message) not in seen:
            seen.add((e.path, e.message))
            out.append(e)
    return out
