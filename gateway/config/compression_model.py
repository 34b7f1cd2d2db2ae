"""Response compression per route: which codings, from what size, for which media types.

A route's `compression` section:

    compression:
      encodings: [zstd, br, gzip]     # the server's preference, best first
      min_size: 1KiB                  # bodies of a known smaller length go as they are
      content_types: [text/*, application/json, image/svg+xml, application/*+json]
      levels: {gzip: 5, br: 4, zstd: 3}

Media ranges are `type/subtype`, `type/*` or `type/*+suffix` (RFC 6839 structured
syntax suffixes), compared case-insensitively; parameters (`; charset=...`) are not
part of a range. The filter (gateway/filters/compression.py) compiles them at load.

Levels are bounded to what a streaming edge should spend and what clients decode:
gzip 1..9 (zlib), br 0..11 (brotli quality), zstd 1..19. zstd stops at 19 because
20..22 ("ultra") need windows above the 8 MiB that RFC 8878 7.2 and browsers accept
for the `zstd` content coding.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from gateway.config.fields import StrictModel, choice, unit
from gateway.config.units import Size

__all__ = ["DEFAULT_CONTENT_TYPES", "ENCODINGS", "Compression", "Encoding", "Levels"]

EncodingName = Literal["zstd", "br", "gzip"]
ENCODINGS: tuple[EncodingName, ...] = ("zstd", "br", "gzip")

# Text-like types that compress well. Already-compressed formats (images other than
# SVG, video, archives, woff2) gain nothing and cost CPU, so they are not listed.
DEFAULT_CONTENT_TYPES = [
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/ecmascript",
    "application/xml",
    "application/*+xml",
    "application/x-ndjson",
    "application/graphql-response+json",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "image/bmp",
    "font/ttf",
    "font/otf",
]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_RANGE = re.compile(rf"({_TOKEN})/(\*|\*\+{_TOKEN}|{_TOKEN})")

Encoding = Annotated[EncodingName, BeforeValidator(choice("encoding", ENCODINGS))]


def _check_media_range(v: str) -> str:
    if not _MEDIA_RANGE.fullmatch(v) or v.startswith("*"):
        raise ValueError(
            f"invalid content type {v!r}: expected 'type/subtype', 'type/*' or "
            "'type/*+suffix', like 'application/json', 'text/*', 'application/*+json'"
        )
    return v.lower()


MediaRange = Annotated[str, AfterValidator(_check_media_range)]


def _unique(what: str, values: list[Any]) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} given twice")
        seen.add(v)


class Levels(StrictModel):
    """Compression level per coding: higher is smaller and slower."""

    gzip: int = Field(default=5, ge=1, le=9, description="zlib level, 1..9.")
    br: int = Field(default=4, ge=0, le=11, description="brotli quality, 0..11.")
    zstd: int = Field(
        default=3, ge=1, le=19, description="zstd level, 1..19 (higher needs > 8 MiB windows)."
    )


class Compression(StrictModel):
    """Compress responses the client accepts (Accept-Encoding), streamed, memory bounded."""

    encodings: list[Encoding] = Field(
        default=list(ENCODINGS),
        min_length=1,
        description="Codings offered, the server's preference first: breaks ties between "
        "codings the client rates equally.",
    )
    min_size: Size = Field(
        default=unit("1KiB"),
        ge=0,
        description="Bodies of a known length below this are sent uncompressed; bodies of "
        "unknown length are compressed.",
    )
    content_types: list[MediaRange] = Field(
        default=DEFAULT_CONTENT_TYPES,
        min_length=1,
        description="Media ranges compressed ('text/*', 'application/json', "
        "'application/*+json'); text/event-stream never is (it needs each event flushed).",
    )
    levels: Levels = Field(default=Levels(), description="Compression level per coding.")

    @field_validator("encodings")
    @classmethod
    def _unique_encodings(cls, v: list[str]) -> list[str]:
        _unique("encoding", v)
        return v

    @field_validator("content_types")
    @classmethod
    def _unique_types(cls, v: list[str]) -> list[str]:
        _unique("content type", v)
        return v
