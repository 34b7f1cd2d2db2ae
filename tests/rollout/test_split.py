"""The sticky split: bucket shares, clients never moved back, overrides, the cookie."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.routing.split import BUCKETS, VersionSplit, bucket_of
from tests.rollout.conftest import FakeClock, exchange, runtime_for, service_config

EP1, EP2 = ["http://127.0.0.1:9"], ["http://127.0.0.1:10"]


def split_of(service: dict[str, Any] | None = None) -> tuple[Any, VersionSplit]:
    rt = runtime_for(service_config(EP1, EP2, service), FakeClock())
    return rt, rt.splits["users"]


def static(weights: tuple[float, float], **extra: Any) -> dict[str, Any]:
    return {
        "versions": {
            "stable": {"upstream": "users-v1", "weight": weights[0]},
            "canary": {"upstream": "users-v2", "weight": weights[1]},
        },
        "rollout": None,
        **extra,
    }


def test_bucket_is_stable_and_in_range() -> None:
    assert bucket_of("users:alice") == bucket_of("users:alice")
    assert all(0 <= bucket_of(f"k{i}") < BUCKETS for i in range(1000))


def test_ten_thousand_clients_at_25_percent_land_within_23_to_27() -> None:
    rt, split = split_of(static((75, 25)))
    canary = sum(
        split.choose(exchange(rt, {"X-Client": f"client-{i}"}))[0].name == "canary"
        for i in range(10_000)
    )
    assert 2300 <= canary <= 2700


def test_raising_the_weight_never_sends_a_canary_client_back() -> None:
    rt, split = split_of()
    clients = [exchange(rt, {"X-Client": f"c{i}"}) for i in range(1000)]
    on_canary: set[int] = set()
    for weight in (5, 10, 25, 50):
        split.set_weight(weight)
        now = {i for i, ex in enumerate(clients) if split.choose(ex)[0].name == "canary"}
        assert on_canary <= now, "a client went from canary back to stable"
        assert abs(len(now) - weight * 10) < 40
        on_canary = now
    # And a client keeps its version while the weight stays.
    assert {i for i, ex in enumerate(clients) if split.choose(ex)[0].name == "canary"} == on_canary


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Canary": "always"}, "canary"),
        ({"X-Canary": "never"}, "stable"),
        ({"X-Canary": "stable"}, "stable"),
        ({"Cookie": "a=1; canary=always"}, "canary"),
        ({"Cookie": "canary=never"}, "stable"),
        ({"X-Canary": "never", "Cookie": "canary=always"}, "stable"),  # the header wins
        ({"X-Canary": "bogus"}, None),  # ignored: the split decides
    ],
    ids=["header-always", "header-never", "header-name", "cookie-always", "cookie-never",
         "header-wins", "unknown-ignored"],
)  # fmt: skip
def test_overrides(headers: dict[str, str], expected: str | None) -> None:
    rt, split = split_of({"override": {"header": "X-Canary", "cookie": "canary"}})
    split.set_weight(50)
    for i in range(50):
        ex = exchange(rt, {**headers, "X-Client": f"c{i}"})
        got = split.choose(ex)[0].name
        plain = split.choose(exchange(rt, {"X-Client": f"c{i}"}))[0].name
        assert got == (expected or plain)


def test_cookie_key_hands_out_a_cookie_and_keeps_the_client_on_it() -> None:
    rt, split = split_of({"sticky": {"key": "cookie", "name": "gw_v"}})
    split.set_weight(50)
    version, cookie = split.choose(exchange(rt))
    assert cookie is not None and len(cookie) == 16
    for _ in range(20):
        again, new = split.choose(exchange(rt, {"Cookie": f"gw_v={cookie}"}))
        assert new is None and again is version


@pytest.mark.parametrize(
    ("sticky", "headers", "ip"),
    [
        ({"key": "client_ip"}, {}, "192.0.2.7"),
        ({"key": "api_key"}, {"X-API-Key": "k-1"}, "10.0.0.1"),
        ({"key": "header", "name": "X-User"}, {"X-User": "u-1"}, "10.0.0.1"),
    ],
    ids=["client_ip", "api_key", "header"],
)
def test_sticky_keys(sticky: dict[str, Any], headers: dict[str, str], ip: str) -> None:
    rt, split = split_of({"sticky": sticky})
    split.set_weight(50)
    first = split.choose(exchange(rt, headers, ip))[0]
    assert all(split.choose(exchange(rt, headers, ip))[0] is first for _ in range(10))


def test_missing_header_key_falls_back_to_client_address() -> None:
    rt, split = split_of({"sticky": {"key": "header", "name": "X-User"}})
    split.set_weight(50)
    a = {split.choose(exchange(rt, {}, "198.51.100.1"))[0].name for _ in range(10)}
    assert len(a) == 1
    assert split.cookie is None


def test_static_weights_from_the_config() -> None:
    _, split = split_of(static((90.5, 9.5)))
    assert split.by_name["canary"].buckets == 950
    assert split.by_name["stable"].buckets == 9050
    assert repr(split) == "<VersionSplit users [canary=9.5%, stable=90.5%]>"
