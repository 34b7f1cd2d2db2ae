"""Accept-Encoding negotiation (RFC 9110 12.5.3), as a table: header -> coding chosen."""

from __future__ import annotations

import pytest

from gateway.config.compression_model import Compression
from gateway.filters.compression import CompressionFilter, negotiate

ALL = ("zstd", "br", "gzip")

# (id, Accept-Encoding, offered in server order, coding or None for identity)
CASES = [
    ("absent", None, ALL, None),
    ("empty", "", ALL, None),
    ("gzip-only", "gzip", ALL, "gzip"),
    ("browser", "gzip, deflate, br, zstd", ALL, "zstd"),
    ("browser-no-zstd", "gzip, deflate, br", ALL, "br"),
    ("tie-server-order", "gzip, br", ALL, "br"),
    ("tie-other-server-order", "br, zstd", ("br", "zstd", "gzip"), "br"),
    ("q-beats-order", "zstd;q=0.5, gzip;q=0.8", ALL, "gzip"),
    ("q-three-places", "br;q=0.901, zstd;q=0.9", ALL, "br"),
    ("q-zero-excludes", "zstd;q=0, br;q=0, gzip", ALL, "gzip"),
    ("all-q-zero", "zstd;q=0, br;q=0, gzip;q=0", ALL, None),
    ("q-one-point-zero", "gzip;q=1.000", ALL, "gzip"),
    ("case-insensitive", "GZIP;Q=0.5, Br;q=0.4", ALL, "gzip"),
    ("whitespace", "  br ;  q=0.7 ,gzip;q=0.2  ", ALL, "br"),
    ("star", "*", ALL, "zstd"),
    ("star-q", "*;q=0.5", ALL, "zstd"),
    ("star-below-explicit", "*;q=0.2, gzip;q=0.3", ALL, "gzip"),
    ("star-excludes-unlisted", "*;q=0, br", ALL, "br"),
    ("star-zero-only", "*;q=0", ALL, None),
    ("explicit-zero-beats-star", "*, zstd;q=0", ALL, "br"),
    ("identity-only", "identity", ALL, None),
    ("identity-q0-only", "identity;q=0", ALL, None),
    ("identity-q0-and-gzip", "identity;q=0, gzip", ALL, "gzip"),
    ("identity-q0-star", "identity;q=0, *", ALL, "zstd"),
    ("identity-preferred", "identity, gzip;q=0.5", ALL, None),
    ("identity-tie-compresses", "identity;q=0.5, gzip;q=0.5", ALL, "gzip"),
    ("unknown-codings", "compress, deflate, snappy", ALL, None),
    ("unknown-and-known", "deflate;q=1, compress, gzip;q=0.1", ALL, "gzip"),
    ("x-gzip", "x-gzip", ALL, "gzip"),
    ("not-offered", "br", ("gzip",), None),
    ("malformed-q-ignored", "br;q=high, gzip", ALL, "gzip"),
    ("q-over-one-ignored", "br;q=2, gzip;q=0.1", ALL, "gzip"),
    ("q-too-precise-ignored", "br;q=0.5555, gzip;q=0.1", ALL, "gzip"),
    ("other-param-kept", "br;level=3, gzip", ALL, "br"),
    ("empty-elements", ",, gzip ,,", ALL, "gzip"),
    ("duplicate-takes-max", "gzip;q=0.1, br;q=0.5, gzip;q=0.9", ALL, "gzip"),
]


@pytest.mark.parametrize(
    ("accept", "offered", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_negotiate(accept: str | None, offered: tuple[str, ...], expected: str | None) -> None:
    assert negotiate(accept, offered) == expected


def test_filter_memo_is_bounded_and_consistent() -> None:
    f = CompressionFilter(Compression(), route="r")
    assert f.choose("gzip, br") == "br"
    assert f.choose("gzip, br") == "br"  # from the memo
    for i in range(1000):
        assert f.choose(f"gzip;q=0.{i % 10}, x-{i}") == ("gzip" if i % 10 else None)
    assert len(f._memo) <= 256
    assert f.choose(None) is None
