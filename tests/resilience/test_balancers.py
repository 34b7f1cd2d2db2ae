"""The four balancers: shares, exclusion, out-of-rotation members, stickiness."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.errors import NoUpstreamAvailable
from gateway.upstream import (
    ConnectionPool,
    ConsistentHash,
    EndpointSpec,
    LeastRequest,
    Member,
    RoundRobin,
    SmoothWeighted,
)
from gateway.upstream.breaker import Breaker, BreakerPolicy, Event


def members(*weights: int) -> list[Member]:
    return [
        Member(ConnectionPool(EndpointSpec("http", f"h{i}", 80)), w, Breaker(BreakerPolicy()))
        for i, w in enumerate(weights)
    ]


def eject(m: Member) -> None:
    m.breaker.fire(Event.TRIP, 0.0)


BALANCERS = [RoundRobin, SmoothWeighted, LeastRequest, lambda ms: ConsistentHash(ms, 50)]
IDS = ["round_robin", "weighted", "least_request", "consistent_hash"]


@pytest.mark.parametrize("make", BALANCERS, ids=IDS)
def test_skips_excluded_and_out_of_rotation(make: type[RoundRobin]) -> None:
    ms = members(1, 1, 1)
    bal = make(ms)
    eject(ms[0])
    assert not ms[0].available
    picks = {bal.pick({ms[1].key}, hash_key=f"k{i}").key for i in range(50)}
    assert picks == {ms[2].key}
    with pytest.raises(NoUpstreamAvailable):
        bal.pick({ms[1].key, ms[2].key}, hash_key="k")


@pytest.mark.parametrize("make", BALANCERS, ids=IDS)
def test_health_down_is_out_of_rotation(make: type[RoundRobin]) -> None:
    from gateway.upstream import HealthPolicy, HealthState

    h = HealthState(HealthPolicy(unhealthy_threshold=1), "x")
    ms = members(1, 1)
    m = Member(ms[0].pool, 1, Breaker(BreakerPolicy()), h)
    bal = make([m, ms[1]])
    h.record(False)
    assert not m.available
    assert {bal.pick(hash_key=f"k{i}").key for i in range(20)} == {ms[1].key}


def test_round_robin_ignores_weights() -> None:
    ms = members(5, 1)
    rr = RoundRobin(ms)
    assert [rr.pick().key for _ in range(4)] == [ms[0].key, ms[1].key] * 2


@pytest.mark.parametrize("weights", [(5, 1, 1), (1, 2, 7), (3, 3, 4)], ids=str)
def test_weighted_split_within_two_points_over_10000(weights: tuple[int, ...]) -> None:
    ms = members(*weights)
    bal = SmoothWeighted(ms)
    counts = Counter(bal.pick().key for _ in range(10_000))
    total = sum(weights)
    for m, w in zip(ms, weights, strict=True):
        assert abs(counts[m.key] / 10_000 - w / total) < 0.02


def test_weighted_is_smooth() -> None:
    ms = members(5, 1, 1)
    bal = SmoothWeighted(ms)
    names = "".join(bal.pick().key[8] for _ in range(7))  # 'http://h0:80'[8] == '0'
    assert names == "0010200"  # nginx's example: a a b a c a a


def test_weighted_share_goes_to_the_rest_when_one_is_out() -> None:
    ms = members(2, 1, 1)
    bal = SmoothWeighted(ms)
    eject(ms[0])
    counts = Counter(bal.pick().key for _ in range(1000))
    assert counts[ms[1].key] == counts[ms[2].key] == 500


def test_least_request_prefers_the_less_loaded() -> None:
    ms = members(1, 1, 1)
    ms[0].pool._in_flight = 10
    ms[1].pool._in_flight = 5
    bal = LeastRequest(ms, random.Random(7))
    counts = Counter(bal.pick().key for _ in range(3000))
    # With two choices the busiest is never chosen and the idle one wins both its pairs.
    assert counts[ms[0].key] == 0
    assert counts[ms[2].key] > 1800 and counts[ms[1].key] > 800


def test_least_request_single_member() -> None:
    ms = members(1)
    assert LeastRequest(ms).pick() is ms[0]


def test_consistent_hash_keeps_a_key_on_one_endpoint() -> None:
    bal = ConsistentHash(members(1, 1, 1))
    for i in range(200):
        first = bal.pick(hash_key=f"user-{i}")
        assert all(bal.pick(hash_key=f"user-{i}") is first for _ in range(5))


def test_consistent_hash_same_ring_in_every_process() -> None:
    a = ConsistentHash(members(1, 1, 1))
    b = ConsistentHash(members(1, 1, 1))
    assert all(a.pick(hash_key=f"k{i}").key == b.pick(hash_key=f"k{i}").key for i in range(500))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_consistent_hash_moves_about_one_nth_when_one_leaves(n: int) -> None:
    ms = members(*([1] * n))
    bal = ConsistentHash(ms)
    keys = [f"user-{i}" for i in range(20_000)]
    before = {k: bal.pick(hash_key=k).key for k in keys}
    eject(ms[0])
    after = {k: bal.pick(hash_key=k).key for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == ms[0].key for k in moved)  # only the leaver's keys move
    assert abs(len(moved) / len(keys) - 1 / n) < 0.35 / n  # about 1/N (± 35% of it)
    # and they are spread over the rest, not dumped on one neighbour
    spread = Counter(after[k] for k in moved)
    assert len(spread) == n - 1
    ms[0].breaker.reset(1.0)
    assert {k: bal.pick(hash_key=k).key for k in keys} == before  # back where they were


def test_consistent_hash_without_key_falls_back_to_round_robin() -> None:
    ms = members(1, 1, 1)
    bal = ConsistentHash(ms)
    assert [bal.pick().key for _ in range(3)] == [m.key for m in ms]


def test_consistent_hash_weight_gives_more_points() -> None:
    ms = members(3, 1)
    bal = ConsistentHash(ms)
    counts = Counter(bal.pick(hash_key=f"k{i}").key for i in range(20_000))
    assert 0.65 < counts[ms[0].key] / 20_000 < 0.85


def test_pools_are_accepted_as_members() -> None:
    rr = RoundRobin([ConnectionPool(EndpointSpec("http", h, 80)) for h in "ab"])
    assert [rr.pick().spec.host for _ in range(3)] == ["a", "b", "a"]
    with pytest.raises(ValueError):
        SmoothWeighted([])
