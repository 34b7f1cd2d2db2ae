"""The route `compression` section: defaults, and the exact message at the exact path."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import Config, validate_data
from gateway.config.compression_model import DEFAULT_CONTENT_TYPES
from tests.config.test_model import edited, errors_of

C = "routes[0].compression"
RANGE = (
    "expected 'type/subtype', 'type/*' or 'type/*+suffix', like 'application/json', "
    "'text/*', 'application/*+json'"
)

# (id, edits, "path: message")
INVALID = [
    ("unknown-key", {f"{C}.level": 5}, f"{C}.level: unknown key"),
    ("unknown-encoding", {f"{C}.encodings": ["gzip", "deflate"]},
     f"{C}.encodings[1]: invalid encoding 'deflate': expected 'zstd', 'br' or 'gzip'"),
    ("duplicate-encoding", {f"{C}.encodings": ["gzip", "br", "gzip"]},
     f"{C}.encodings: encoding 'gzip' given twice"),
    ("no-encodings", {f"{C}.encodings": []}, f"{C}.encodings: must have at least 1 item"),
    ("bad-size", {f"{C}.min_size": "1 lightyear"},
     f"{C}.min_size: invalid size '1 lightyear': expected a number of bytes or a string like "
     "'512', '10KB', '10KiB', '1GiB'"),
    ("bad-range", {f"{C}.content_types": ["json"]},
     f"{C}.content_types[0]: invalid content type 'json': {RANGE}"),
    ("star-star", {f"{C}.content_types": ["*/*"]},
     f"{C}.content_types[0]: invalid content type '*/*': {RANGE}"),
    ("params", {f"{C}.content_types": ["text/html; charset=utf-8"]},
     f"{C}.content_types[0]: invalid content type 'text/html; charset=utf-8': {RANGE}"),
    ("duplicate-type", {f"{C}.content_types": ["text/html", "Text/HTML"]},
     f"{C}.content_types: content type 'text/html' given twice"),
    ("gzip-level-high", {f"{C}.levels.gzip": 10}, f"{C}.levels.gzip: must be <= 9"),
    ("gzip-level-zero", {f"{C}.levels.gzip": 0}, f"{C}.levels.gzip: must be >= 1"),
    ("br-level-high", {f"{C}.levels.br": 12}, f"{C}.levels.br: must be <= 11"),
    ("zstd-ultra", {f"{C}.levels.zstd": 22}, f"{C}.levels.zstd: must be <= 19"),
    ("level-string", {f"{C}.levels.br": "4"}, f"{C}.levels.br: must be an integer (got '4')"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edits", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid(edits: dict[str, Any], expected: str) -> None:
    assert errors_of(edited(edits)) == [expected]


def test_defaults() -> None:
    config = validate_data(edited({C: {}}))
    assert isinstance(config, Config)
    c = config.routes[0].compression
    assert c is not None
    assert c.encodings == ["zstd", "br", "gzip"]
    assert c.min_size == 1024
    assert c.content_types == DEFAULT_CONTENT_TYPES
    assert (c.levels.gzip, c.levels.br, c.levels.zstd) == (5, 4, 3)
    assert validate_data(edited({})).routes[0].compression is None


def test_values_parsed() -> None:
    config = validate_data(
        edited(
            {
                C: {
                    "encodings": ["gzip"],
                    "min_size": "4KiB",
                    "content_types": ["Text/*", "application/*+JSON"],
                    "levels": {"gzip": 9},
                }
            }
        )
    )
    c = config.routes[0].compression
    assert c is not None
    assert (c.encodings, c.min_size, c.levels.gzip, c.levels.br) == (["gzip"], 4096, 9, 4)
    assert c.content_types == ["text/*", "application/*+json"]
