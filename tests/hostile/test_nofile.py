"""The gateway raises its open-file soft limit to the hard one at start, so a flood
of idle keep-alive clients is bounded by memory (bench/idle_connections.py), not by
a 1024-descriptor default. The soft limit is set just under the hard one here (then
restored)."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from gateway.supervisor import raise_nofile_limit


@pytest.fixture
def limits() -> Iterator[tuple[int, int]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield soft, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("below_hard", [1, 0], ids=["under-hard-limit", "already-at-hard"])
def test_soft_limit_is_raised_to_hard(limits: tuple[int, int], below_hard: int) -> None:
    _soft, hard = limits
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit: the soft one is raised to 1M, not tested here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard - below_hard, hard))
    assert raise_nofile_limit() == (hard, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
