from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.compression.support import compression_upstream
from tests.support import serve_app


@pytest.fixture
async def data_upstream() -> AsyncIterator[int]:
    async with serve_app(compression_upstream()) as port:
        yield port
