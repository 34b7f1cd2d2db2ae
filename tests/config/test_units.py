"""Durations and sizes: every accepted spelling, and the messages for the rest."""

from __future__ import annotations

import pytest

from gateway.config.units import parse_duration, parse_size

GOOD_DURATIONS = [
    ("int-seconds", 10, 10.0),
    ("float-seconds", 1.5, 1.5),
    ("zero-int", 0, 0.0),
    ("zero-string", "0", 0.0),
    ("bare-number-string", "2.5", 2.5),
    ("milliseconds", "250ms", 0.25),
    ("fractional-seconds", "1.5s", 1.5),
    ("seconds", "10s", 10.0),
    ("minutes", "5m", 300.0),
    ("hours", "2h", 7200.0),
    ("combined", "1m30s", 90.0),
    ("combined-with-ms", "1h1m1s500ms", 3661.5),
    ("upper-case", "10S", 10.0),
    ("upper-case-ms", "250MS", 0.25),
    ("surrounding-space", " 5m ", 300.0),
]


@pytest.mark.parametrize(
    ("value", "seconds"), [c[1:] for c in GOOD_DURATIONS], ids=[c[0] for c in GOOD_DURATIONS]
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


HELP = "expected a number of seconds or a string like '250ms', '10s', '5m'"
BAD_DURATIONS = [
    ("word", "abc", f"invalid duration 'abc': {HELP}"),
    ("empty", "", f"invalid duration '': {HELP}"),
    ("negative-number", -1, "invalid duration -1: must be >= 0"),
    ("negative-string", "-5s", f"invalid duration '-5s': {HELP}"),
    ("unknown-unit", "5d", f"invalid duration '5d': {HELP}"),
    ("unit-only", "s", f"invalid duration 's': {HELP}"),
    ("inner-space", "1m 30s", f"invalid duration '1m 30s': {HELP}"),
    ("bool", True, f"invalid duration True: {HELP}"),
    ("none", None, f"invalid duration None: {HELP}"),
    ("list", [1], f"invalid duration [1]: {HELP}"),
    ("infinite", float("inf"), f"invalid duration inf: {HELP}"),
]


@pytest.mark.parametrize(
    ("value", "message"), [c[1:] for c in BAD_DURATIONS], ids=[c[0] for c in BAD_DURATIONS]
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == message


GOOD_SIZES = [
    ("int", 512, 512),
    ("integral-float", 512.0, 512),
    ("zero", 0, 0),
    ("digits", "512", 512),
    ("bytes-suffix", "512B", 512),
    ("kilobytes", "10KB", 10_000),
    ("kibibytes", "10KiB", 10_240),
    ("k-without-b", "10k", 10_000),
    ("megabytes", "10MB", 10_000_000),
    ("mebibytes", "10MiB", 10 * 1024**2),
    ("gigabytes", "1GB", 10**9),
    ("gibibytes", "1GiB", 1024**3),
    ("lower-case", "10kib", 10_240),
    ("space-before-unit", "10 KiB", 10_240),
    ("fraction-exact", "1.5KiB", 1536),
]


@pytest.mark.parametrize(
    ("value", "size"), [c[1:] for c in GOOD_SIZES], ids=[c[0] for c in GOOD_SIZES]
)
def test_parse_size_accepts(value: object, size: int) -> None:
    assert parse_size(value) == size


SIZE_HELP = "expected a number of bytes or a string like '512', '10KB', '10KiB', '1GiB'"
BAD_SIZES = [
    ("word", "big", f"invalid size 'big': {SIZE_HELP}"),
    ("unknown-unit", "10XB", f"invalid size '10XB': {SIZE_HELP}"),
    ("negative", -1, "invalid size -1: must be >= 0"),
    ("negative-string", "-1KB", f"invalid size '-1KB': {SIZE_HELP}"),
    ("fractional-bytes", "1.5B", "invalid size '1.5B': must be a whole number of bytes"),
    ("fractional-number", 1.5, "invalid size 1.5: must be a whole number of bytes"),
    ("bool", False, f"invalid size False: {SIZE_HELP}"),
    ("none", None, f"invalid size None: {SIZE_HELP}"),
]


@pytest.mark.parametrize(
    ("value", "message"), [c[1:] for c in BAD_SIZES], ids=[c[0] for c in BAD_SIZES]
)
def test_parse_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert str(info.value) == message
