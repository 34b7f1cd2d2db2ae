"""Every async TLS test runs on asyncio's default loop and on uvloop (the gateway's loop):
their TLS implementations differ (uvloop has its own SSL protocol over memory BIOs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

from tests.tls.certs import CA, make_ca


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def ca() -> CA:
    return make_ca("gateway test CA")


@pytest.fixture(scope="session")
def other_ca() -> CA:
    """A CA nobody trusts, with the same name as `ca` (only the key tells them apart)."""
    return make_ca("gateway test CA")
