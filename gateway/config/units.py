"""Durations and sizes with their units in the value.

A config says `keepalive_timeout: 75s` and `max_header_size: 32KiB`; the model holds
plain numbers (float seconds, int bytes) so the runtime never parses units again.
A bare number is seconds or bytes. Units are case-insensitive:

- durations: `ms`, `s`, `m`, `h`, combinable in any order ("1m30s", "1h30m");
- sizes: decimal `KB`/`MB`/`GB`/`TB` (powers of 1000) and binary `KiB`/`MiB`/`GiB`/`TiB`
  (powers of 1024); the trailing `B` is optional ("10K" is 10,000 bytes).

`Duration` and `Size` are annotated types for pydantic models: a BeforeValidator does
the parsing and WithJsonSchema documents both accepted shapes for editors.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, cast

from pydantic import BeforeValidator, WithJsonSchema

__all__ = ["Duration", "Size", "parse_duration", "parse_size"]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)", re.IGNORECASE)
_DURATION_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(i)?)?b?", re.IGNORECASE)
_SIZE_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}

# JSON Schema patterns (no inline flags there, hence the character classes).
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?|(\d+(\.\d+)?([mM][sS]|[sSmMhH]))+)\s*$"
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgGtT][iI]?)?[bB]?\s*$"

_DURATION_HELP = "expected a number of seconds or a string like '250ms', '10s', '5m'"
_SIZE_HELP = "expected a number of bytes or a string like '512', '10KB', '10KiB', '1GiB'"


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_duration(v: object) -> float:
    """Return `v` in seconds; raise ValueError with a readable message if it is not one."""
    if _is_number(v):
        seconds = float(cast(float, v))
        if not math.isfinite(seconds):
            raise ValueError(f"invalid duration {v!r}: {_DURATION_HELP}")
        if seconds < 0:
            raise ValueError(f"invalid duration {v!r}: must be >= 0")
        return seconds
    if not isinstance(v, str):
        raise ValueError(f"invalid duration {v!r}: {_DURATION_HELP}")
    text = v.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    if not _DURATION_FULL.fullmatch(text):
        raise ValueError(f"invalid duration {v!r}: {_DURATION_HELP}")
    return sum(
        float(num) * _DURATION_UNITS[unit.lower()] for num, unit in _DURATION_PART.findall(text)
    )


def parse_size(v: object) -> int:
    """Return `v` in bytes; raise ValueError with a readable message if it is not one."""
    if _is_number(v):
        if isinstance(v, float) and not v.is_integer():
            raise ValueError(f"invalid size {v!r}: must be a whole number of bytes")
        size = int(cast(float, v))
        if size < 0:
            raise ValueError(f"invalid size {v!r}: must be >= 0")
        return size
    if not isinstance(v, str):
        raise ValueError(f"invalid size {v!r}: {_SIZE_HELP}")
    m = _SIZE.fullmatch(v.strip())
    if m is None:
        raise ValueError(f"invalid size {v!r}: {_SIZE_HELP}")
    number, prefix, binary = m.groups()
    base = 1024 if binary else 1000
    factor = int(base ** _SIZE_POWERS[prefix.lower()]) if prefix else 1
    if "." in number:
        # Exact arithmetic for "1.5KiB": scale the decimal digits, not a float.
        whole, frac = number.split(".")
        scaled = int(whole + frac) * factor
        divisor = int(10 ** len(frac))
        if scaled % divisor:
            raise ValueError(f"invalid size {v!r}: must be a whole number of bytes")
        return scaled // divisor
    return int(number) * factor


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]
"""Seconds as a float; accepts a number of seconds or '250ms', '10s', '5m', '1m30s', '2h'."""

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ]
        }
    ),
]
"""Bytes as an int; accepts a number of bytes or '512', '10KB' (1000s), '10KiB' (1024s)."""
