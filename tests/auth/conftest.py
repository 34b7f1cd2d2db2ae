"""Keys made once per test module (RSA 2048, EC P-256, Ed25519) and a fake wall clock."""

from __future__ import annotations

import pytest

from tests.auth.support import NOW, SigningKey
from tests.support import FakeClock


class WallClock(FakeClock):
    """Unix seconds that move only when a test says so."""

    def __init__(self, start: float = NOW) -> None:
        super().__init__(start)


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture(scope="session")
def keys() -> dict[str, SigningKey]:
    """One signing key per algorithm, kids 'rsa-1', 'ec-1', 'ed-1'."""
    return {
        "RS256": SigningKey.generate("RS256", "rsa-1"),
        "ES256": SigningKey.generate("ES256", "ec-1"),
        "EdDSA": SigningKey.generate("EdDSA", "ed-1"),
    }


@pytest.fixture(scope="session")
def other_rsa() -> SigningKey:
    """Another RSA key published under the same kid as keys['RS256'] nowhere."""
    return SigningKey.generate("RS256", "rsa-1")
