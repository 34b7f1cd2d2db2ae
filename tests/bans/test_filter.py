"""Bans through the real filter chain on a fake clock: counting within the window,
expiry, repeat bans (longer, capped, forgotten), allow/deny lists, user-agent deny,
shadow modes, a route's opt-out, and the state kept across a reload."""

from __future__ import annotations

import orjson
import pytest

from tests.bans.conftest import ATTACK, BENIGN, Chain, FakeClock, config

RULES = {"after_blocks": 3, "window": "1m", "ban_for": "10s", "repeat_factor": 3,
         "max_ban": "50s"}  # fmt: skip


async def ban(chain: Chain, ip: str = "203.0.113.7") -> None:
    """Three blocks in a row: the third starts a ban."""
    assert await chain.statuses([ATTACK] * 3, ip=ip) == [403, 403, 403]
    assert chain.store is not None and chain.store.check(ip) is not None


# (id, seconds between blocks, blocks, banned after them)
COUNTING = [
    ("n-blocks-at-once", 0.0, 3, True),
    ("n-blocks-within-window", 29.0, 3, True),  # 0, 29, 58: all within 60 s
    ("n-minus-1-blocks", 0.0, 2, False),
    ("n-blocks-spread-beyond-window", 30.0, 3, False),  # the first is 60 s old at the third
    ("n-plus-1-spread-recovers", 30.0, 4, False),  # a sliding window: never 3 within 60 s
]


@pytest.mark.parametrize(("gap_s", "blocks", "banned"), [c[1:] for c in COUNTING],
                         ids=[c[0] for c in COUNTING])  # fmt: skip
async def test_ban_after_n_blocks_within_the_window(
    clock: FakeClock, gap_s: float, blocks: int, banned: bool
) -> None:
    chain = Chain(config(RULES), clock)
    for i in range(blocks):
        if i:
            clock.advance(gap_s)
        assert (await chain.send(ATTACK)).status == 403
    reply = await chain.send(BENIGN)
    assert reply.status == (403 if banned else 200)
    if banned:
        body = orjson.loads(reply.body)
        assert body == {"error": "banned", "reason": "ban", "request_id": "req-1",
                        "message": "client banned; retry in 10 s"}  # fmt: skip
        assert reply.headers["Retry-After"] == "10"
        assert chain.upstream.calls == 0
    # Another client is never affected.
    assert (await chain.send(BENIGN, ip="203.0.113.8")).status == 200


async def test_ban_expires_on_the_clock(clock: FakeClock) -> None:
    chain = Chain(config(RULES), clock)
    await ban(chain)
    clock.advance(9.5)
    reply = await chain.send(BENIGN)
    assert reply.status == 403 and reply.headers["Retry-After"] == "1"
    clock.advance(0.5)
    assert (await chain.send(BENIGN)).status == 200
    # Blocks before the ban do not carry over: a fresh count of three.
    assert await chain.statuses([ATTACK, ATTACK, BENIGN]) == [403, 403, 200]


async def test_repeat_bans_grow_by_the_factor_up_to_max_ban(clock: FakeClock) -> None:
    chain = Chain(config(RULES), clock)
    lengths = []
    for _ in range(4):
        await ban(chain)
        lengths.append(int((await chain.send(BENIGN)).headers["Retry-After"]))
        clock.advance(lengths[-1])
        assert (await chain.send(BENIGN)).status == 200
    assert lengths == [10, 30, 50, 50]  # 10 s x 3 per repeat, capped at 50 s
    assert chain.store is not None and chain.store.state.banned == 4


async def test_ban_count_is_forgotten_after_forget_after(clock: FakeClock) -> None:
    chain = Chain(config({**RULES, "forget_after": "1h"}), clock)
    await ban(chain)
    clock.advance(10 + 3599)
    await ban(chain)
    assert (await chain.send(BENIGN)).headers["Retry-After"] == "30"  # still a repeat
    clock.advance(30 + 3600)
    await ban(chain)
    assert (await chain.send(BENIGN)).headers["Retry-After"] == "10"  # forgotten


# (id, bans extra, client address, user agent, status, reason)
LISTS = [
    ("deny-cidr", {"deny": ["198.51.100.0/24"]}, "198.51.100.9", None, 403, "deny_list"),
    ("deny-address", {"deny": ["198.51.100.9"]}, "198.51.100.9", None, 403, "deny_list"),
    ("deny-other-address", {"deny": ["198.51.100.9"]}, "198.51.100.10", None, 200, None),
    ("deny-v6", {"deny": ["2001:db8::/32"]}, "2001:db8::1", None, 403, "deny_list"),
    ("deny-v4-mapped", {"deny": ["198.51.100.0/24"]}, "::ffff:198.51.100.9", None, 403,
     "deny_list"),
    ("allow-beats-deny", {"deny": ["198.51.100.0/24"], "allow": ["198.51.100.9"]},
     "198.51.100.9", None, 200, None),
    ("ua-deny", {"user_agent_deny": ["(?i)sqlmap", "nikto"]}, "203.0.113.7",
     "sqlmap/1.7.2#stable (https://sqlmap.org)", 403, "user_agent"),
    ("ua-deny-second-pattern", {"user_agent_deny": ["(?i)sqlmap", "nikto"]}, "203.0.113.7",
     "Mozilla/5.00 (Nikto/2.5.0) nikto", 403, "user_agent"),
    ("ua-benign", {"user_agent_deny": ["(?i)sqlmap"]}, "203.0.113.7",
     "Mozilla/5.0 (X11; Linux x86_64)", 200, None),
    ("ua-absent", {"user_agent_deny": ["(?i)sqlmap"]}, "203.0.113.7", None, 200, None),
    ("ua-allow-listed", {"user_agent_deny": ["(?i)sqlmap"], "allow": ["203.0.113.0/24"]},
     "203.0.113.7", "sqlmap", 200, None),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "ip", "ua", "status", "reason"), [c[1:] for c in LISTS],
                         ids=[c[0] for c in LISTS])  # fmt: skip
async def test_allow_deny_and_user_agent_lists(
    clock: FakeClock, extra: dict[str, object], ip: str, ua: str | None, status: int,
    reason: str | None,
) -> None:  # fmt: skip
    chain = Chain(config({**RULES, **extra}), clock)
    reply = await chain.send(BENIGN, ip=ip, ua=ua)
    assert reply.status == status
    if reason is not None:
        body = orjson.loads(reply.body)
        assert body["error"] == "banned" and body["reason"] == reason
        assert body["request_id"] == "req-1"
        assert ua is None or ua not in reply.body.decode()  # never echoed
        assert "Retry-After" not in reply.headers


async def test_allow_listed_clients_are_never_banned(clock: FakeClock) -> None:
    chain = Chain(config({**RULES, "allow": ["10.0.0.0/8"]}), clock)
    assert await chain.statuses([ATTACK] * 10, ip="10.1.2.3") == [403] * 10  # screening
    assert (await chain.send(BENIGN, ip="10.1.2.3")).status == 200
    assert chain.store is not None and chain.store.state.blocks_counted == 0


async def test_shadow_bans_decide_and_count_but_let_pass(clock: FakeClock) -> None:
    chain = Chain(config({**RULES, "mode": "shadow", "deny": ["198.51.100.0/24"]}), clock)
    await ban(chain)
    assert (await chain.send(BENIGN)).status == 200
    assert (await chain.send(BENIGN, ip="198.51.100.1")).status == 200
    assert chain.store is not None
    assert chain.store.state.shadow_refused == 2 and chain.store.state.refused == 0


async def test_screening_in_shadow_mode_does_not_count(clock: FakeClock) -> None:
    chain = Chain(config(RULES, screening={"mode": "shadow"}), clock)
    assert await chain.statuses([ATTACK] * 5) == [200] * 5
    assert chain.store is not None and chain.store.check("203.0.113.7") is None


async def test_a_route_can_opt_out(clock: FakeClock) -> None:
    chain = Chain(config({**RULES, "deny": ["203.0.113.0/24"]}, bans=False), clock)
    assert await chain.statuses([ATTACK] * 5 + [BENIGN]) == [403] * 5 + [200]


async def test_no_bans_section_no_filter(clock: FakeClock) -> None:
    chain = Chain(config(None), clock)
    assert chain.store is None
    assert await chain.statuses([ATTACK] * 6 + [BENIGN]) == [403] * 6 + [200]


async def test_bans_and_counts_survive_a_reload(clock: FakeClock) -> None:
    first = Chain(config(RULES), clock)
    await ban(first)
    assert await first.statuses([ATTACK, ATTACK], ip="203.0.113.9") == [403, 403]
    same = Chain(config(RULES), clock, previous=first.store)
    assert same.store is first.store
    changed = Chain(config({**RULES, "ban_for": "20s", "max_ban": "1m"}), clock,
                    previous=first.store)  # fmt: skip
    assert changed.store is not first.store
    assert changed.store is not None and first.store is not None
    assert changed.store.state is first.store.state
    assert (await changed.send(BENIGN)).headers["Retry-After"] == "10"  # the same ban
    # The third block of .9 comes after the reload and bans with the new length.
    assert await changed.statuses([ATTACK, BENIGN], ip="203.0.113.9") == [403, 403]
    assert (await changed.send(BENIGN, ip="203.0.113.9")).headers["Retry-After"] == "20"
