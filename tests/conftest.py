from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.worker import Worker
from tests.redis_server import redis_factory, redis_server  # noqa: F401 - fixtures for all
from tests.support import free_port, serve_app, upstream_app, write_config


class InProcessGateway:
    def __init__(self, worker: Worker, config_path: Path, port: int) -> None:
        self.worker = worker
        self.config_path = config_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def __repr__(self) -> str:
        return f"<InProcessGateway {self.url} {self.worker!r}>"


GatewayFactory = Callable[..., Awaitable[InProcessGateway]]


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    async with serve_app(upstream_app("up")) as port:
        yield port


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start a gateway Worker in the test's event loop from a config dict."""
    started: list[Worker] = []

    async def start(config: dict[str, Any]) -> InProcessGateway:
        path = tmp_path / f"gateway-{len(started)}.yaml"
        write_config(path, config)
        worker = Worker(path)
        await worker.start()
        started.append(worker)
        port = worker.bound[0][1]
        return InProcessGateway(worker, path, port)

    yield start
    for w in started:
        await w.stop()


@pytest.fixture
def ports() -> Callable[[], int]:
    return free_port
