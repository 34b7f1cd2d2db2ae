"""The control channel in one test process: a real Worker serving its control socket,
a FanoutControl asking it and a socket nobody serves (a worker that died), and two
workers sharing rollout and ban state through a real redis-server."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.admin.control import Target
from gateway.admin.fanout import FanoutControl, start_control
from gateway.admin.ops import ControlError, WorkerOps
from tests.admin.conftest import StartGateway, admin_config
from tests.conftest import GatewayFactory
from tests.redis_server import RedisServer
from tests.support import free_port


@pytest.fixture
async def live_and_dead(gateway: GatewayFactory, upstream: int, tmp_path: Path) -> Any:
    cfg = admin_config(0, free_port(), upstream, 1)
    gw = await gateway(cfg)
    path = str(tmp_path / "worker-0.sock")
    runner = await start_control(WorkerOps(gw.worker), path)
    live = Target(0, 100, path)
    dead = Target(1, 101, str(tmp_path / "worker-1.sock"))
    ctl = FanoutControl(lambda: [live, dead])
    yield ctl, live, dead, path
    await ctl.close()
    await runner.cleanup()


def test_socket_is_private(live_and_dead: Any) -> None:
    *_, path = live_and_dead
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600


async def test_reads_name_the_workers_that_did_not_answer(live_and_dead: Any) -> None:
    ctl, *_ = live_and_dead
    body = await ctl.routes()
    assert [r["name"] for r in body["routes"]] == ["api", "users", "dead"]
    (gap,) = body["unreachable"]
    assert gap["worker"] == 1 and gap["status"] == 503 and "unreachable" in gap["error"]


async def test_actions_fail_with_each_workers_outcome(live_and_dead: Any) -> None:
    ctl, *_ = live_and_dead
    with pytest.raises(ControlError) as info:
        await ctl.breaker_reset("dead", None)
    err = info.value
    assert err.status == 503
    assert [(w["worker"], w["status"]) for w in err.extra["workers"]] == [(0, 200), (1, 503)]


async def test_nobody_answering(live_and_dead: Any) -> None:
    _, _, dead, _ = live_and_dead
    lonely = FanoutControl(lambda: [dead])
    with pytest.raises(ControlError) as info:
        await lonely.status()
    assert info.value.status == 503
    with pytest.raises(ControlError) as info:
        await FanoutControl(list).rollouts()
    assert info.value.message == "no worker process is ready"
    await lonely.close()


# (id, operation, body, status)
WIRE = [
    ("not-an-object", "routes", b"[1]", 400),
    ("not-json", "routes", b"{", 400),
    ("unknown-operation", "explode", b"{}", 404),
    ("unknown-rollout", "rollout", b'{"name": "nobody"}', 404),
    ("fine", "routes", b"{}", 200),
]


@pytest.mark.parametrize(("op", "body", "status"), [c[1:] for c in WIRE], ids=[c[0] for c in WIRE])
async def test_wire(live_and_dead: Any, op: str, body: bytes, status: int) -> None:
    *_, path = live_and_dead
    connector = aiohttp.UnixConnector(path=path)
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.post(f"http://worker/op/{op}", data=body) as r,
    ):
        assert r.status == status


def shared(redis_server: RedisServer) -> Any:
    def edit(cfg: dict[str, Any]) -> None:
        cfg["redis"] = {"url": redis_server.url, "key_prefix": f"adm{uuid.uuid4().hex[:8]}:"}
        cfg["bans"]["sync_interval"] = "100ms"

    return edit


async def test_shared_rollout_is_moved_once(
    start_gateway: StartGateway, redis_server: RedisServer
) -> None:
    gw = await start_gateway(2, edit=shared(redis_server))
    await gw.admin.until("/api/rollouts", lambda b: b["rollouts"][0]["state"] == "progressing")
    status, body = await gw.admin.call("POST", "/api/rollouts/users/pause")
    assert status == 200, body  # not a 409 from the second worker replaying it
    assert [w["state"] for w in body["workers"]] == ["paused", "paused"]
    assert len({w["generation"] for w in body["workers"]}) == 1
