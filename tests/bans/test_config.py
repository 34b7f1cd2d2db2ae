"""The bans section: defaults, and each constraint's exact message at its exact path."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import validate_data
from gateway.errors import ConfigErrors


def data(bans: Any, **top: Any) -> dict[str, Any]:
    return {
        "listeners": [{"address": "127.0.0.1:8080"}],
        "upstreams": {"up": {"endpoints": ["http://127.0.0.1:9101"]}},
        "routes": [{"name": "api", "upstream": "up"}],
        "bans": bans,
        **top,
    }


def test_defaults_and_units() -> None:
    cfg = validate_data(data({}))
    b = cfg.bans
    assert b is not None
    assert (b.mode, b.after_blocks, b.window, b.ban_for, b.repeat_factor, b.max_ban) == (
        "enforce", 5, 60.0, 900.0, 2.0, 86400.0)  # fmt: skip
    assert (b.forget_after, b.sync_interval, b.store, b.max_clients) == (86400.0, 1.0, None,
                                                                         100_000)  # fmt: skip
    assert cfg.routes[0].bans is True
    assert not b.uses_redis(False) and b.uses_redis(True)
    cfg = validate_data(data({"allow": ["10.0.0.0/8", "::1"], "repeat_factor": 1.5,
                              "user_agent_deny": ["(?i)sqlmap"]}))  # fmt: skip
    assert cfg.bans is not None and cfg.bans.allow == ["10.0.0.0/8", "::1/128"]
    assert validate_data(data(None)).bans is None


CIDR = "expected an address or a network like '10.0.0.0/8' or 'fd00::/8'"

# (id, bans section, extra top-level keys, expected "path: message")
ERRORS: list[tuple[str, Any, dict[str, Any], str]] = [
    ("after-blocks-zero", {"after_blocks": 0}, {}, "bans.after_blocks: must be >= 1"),
    ("after-blocks-string", {"after_blocks": "5"}, {},
     "bans.after_blocks: must be an integer (got '5')"),
    ("window-zero", {"window": "0s"}, {}, "bans.window: must be > 0"),
    ("ban-for-bad-unit", {"ban_for": "15 minutes"}, {},
     "bans.ban_for: invalid duration '15 minutes': expected a number of seconds or a string "
     "like '250ms', '10s', '5m'"),
    ("repeat-factor-below-1", {"repeat_factor": 0.5}, {}, "bans.repeat_factor: must be >= 1"),
    ("max-below-first", {"ban_for": "1h", "max_ban": "10m"}, {},
     "bans: max_ban must be >= ban_for"),
    ("allow-bad-cidr", {"allow": ["10.0.0.0/33"]}, {},
     f"bans.allow[0]: invalid CIDR '10.0.0.0/33': {CIDR}"),
    ("deny-host-bits", {"deny": ["10.0.0.1/8"]}, {},
     "bans.deny[0]: invalid CIDR '10.0.0.1/8': host bits are set (did you mean '10.0.0.0/8'?)"),
    ("deny-twice", {"deny": ["10.0.0.0/8", "10.0.0.0/8"]}, {},
     "bans.deny: '10.0.0.0/8' given twice"),
    ("ua-bad-regex", {"user_agent_deny": ["(sqlmap"]}, {},
     "bans.user_agent_deny[0]: invalid regex '(sqlmap': missing ), unterminated subpattern at "
     "position 0"),
    ("ua-empty", {"user_agent_deny": [""]}, {},
     "bans.user_agent_deny[0]: invalid user_agent_deny pattern '': expected a non-empty regex"),
    ("mode-bad", {"mode": "block"}, {},
     "bans.mode: invalid mode 'block': expected 'enforce' or 'shadow'"),
    ("store-bad", {"store": "disk"}, {},
     "bans.store: invalid store 'disk': expected 'memory' or 'redis'"),
    ("store-redis-without-redis", {"store": "redis"}, {},
     "bans.store: 'redis' needs the top-level redis section"),
    ("unknown-key", {"ban_time": "1h"}, {}, "bans.ban_time: unknown key"),
    ("sync-zero", {"sync_interval": 0}, {}, "bans.sync_interval: must be > 0"),
    ("route-switch-not-bool", {}, {"routes": [{"name": "api", "upstream": "up", "bans": "no"}]},
     "routes[0].bans: must be true or false (got 'no')"),
]  # fmt: skip


@pytest.mark.parametrize(("bans", "top", "expected"), [c[1:] for c in ERRORS],
                         ids=[c[0] for c in ERRORS])  # fmt: skip
def test_errors_at_their_paths(bans: Any, top: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        validate_data(data(bans, **top), "test.yaml")
    assert [str(e) for e in info.value.errors] == [expected]


def test_store_redis_with_redis_is_valid() -> None:
    cfg = validate_data(data({"store": "redis"}, redis={"url": "redis://127.0.0.1:6379/0"}))
    assert cfg.bans is not None and cfg.bans.uses_redis(True)
