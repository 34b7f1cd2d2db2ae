"""The admin API against a real `gateway run`, in one process and with two workers.

With two workers the admin listener is the supervisor's and every operation goes to
both workers over their control sockets; each test checks that both took part (the
merged answers name their workers) and that actions reached both."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

import gateway
from tests.admin.conftest import ATTACK, StartGateway

WORKERS = [pytest.param(1, id="one-process"), pytest.param(2, id="two-workers")]


def rollout(body: dict[str, Any], name: str = "users") -> dict[str, Any]:
    return next(r for r in body["rollouts"] if r["name"] == name)


@pytest.mark.parametrize("workers", WORKERS)
async def test_reading(start_gateway: StartGateway, workers: int) -> None:
    gw = await start_gateway(workers)
    admin = gw.admin
    status = await admin.get("/api/status")
    assert status["version"] == gateway.__version__
    assert status["config_path"] == str(gw.proc.config_path.resolve())
    assert len(status["config_hash"]) == 64 and status["consistent"] is True
    assert status["last_reload"] == {"result": None, "at": None, "errors": []}
    assert len(status["workers"]) == workers and status["process"]["ready"] is True

    routes = {r["name"]: r for r in (await admin.get("/api/routes"))["routes"]}
    assert routes["api"]["filters"] == ["bans", "screening"]
    assert routes["api"]["match"] == {"path": {"prefix": "/api"}}
    assert routes["users"]["upstream"] == "users" and routes["users"]["service"] is True

    ups = {u["name"]: u for u in (await admin.get("/api/upstreams"))["upstreams"]}
    (ep,) = ups["v1"]["endpoints"]
    assert ep["breaker"]["state"] == "closed" and ep["available"] is True
    assert len(ep["workers"]) == workers and {"open", "idle"} <= set(ep["pool"])

    (svc,) = (await admin.get("/api/services"))["services"]
    assert svc["name"] == "users" and svc["rollout"] is True

    async with aiohttp.ClientSession() as s:
        for _ in range(5):
            async with s.get(gw.url + "/users/1") as r:
                assert r.status == 200
    stats = await admin.until(
        "/api/stats", lambda b: b["routes"].get("users", {}).get("requests") == 5
    )
    assert (
        stats["routes"]["users"]["by_class"]["2xx"] == 5 and stats["routes"]["users"]["errors"] == 0
    )


@pytest.mark.parametrize("workers", WORKERS)
async def test_rollout_actions_reach_every_worker(
    start_gateway: StartGateway, workers: int
) -> None:
    gw = await start_gateway(workers)
    admin = gw.admin
    await admin.until(
        "/api/rollouts",
        lambda b: all(w["state"] == "progressing" for w in rollout(b)["workers"]),
    )
    status, body = await admin.call("POST", "/api/rollouts/users/pause")
    assert status == 200, body
    assert body["state"] == "paused" and body["consistent"] is True
    assert [w["state"] for w in body["workers"]] == ["paused"] * workers
    listed = rollout(await admin.get("/rollouts"))  # the older alias
    assert [w["state"] for w in listed["workers"]] == ["paused"] * workers

    status, body = await admin.call("POST", "/api/rollouts/users/pause")
    assert status == 409 and body["error"] == "cannot pause a rollout that is paused"
    assert (await admin.call("POST", "/api/rollouts/users/explode"))[0] == 404
    assert (await admin.call("POST", "/api/rollouts/nobody/pause"))[0] == 404
    status, body = await admin.call("POST", "/api/rollouts/users/resume")
    assert status == 200 and [w["state"] for w in body["workers"]] == ["progressing"] * workers


@pytest.mark.parametrize("workers", WORKERS)
async def test_bans_list_and_lift_without_redis(
    start_gateway: StartGateway, session: aiohttp.ClientSession, workers: int
) -> None:
    gw = await start_gateway(workers)

    async def attack() -> None:
        async with session.get(gw.url + ATTACK) as r:
            assert r.status == 403

    body = await gw.admin.until(
        "/api/bans",
        lambda b: len(b["bans"]) == 1 and len(b["bans"][0]["workers"]) == workers,
        poke=attack,
    )
    (ban,) = body["bans"]
    assert ban["ip"] == "127.0.0.1" and ban["shared"] is False
    blocks = await gw.admin.get("/api/blocks")
    assert isinstance(blocks["blocks"], list)
    status, lifted = await gw.admin.call("DELETE", "/api/bans/127.0.0.1")
    assert (status, lifted) == (200, {"lifted": "127.0.0.1"})
    assert (await gw.admin.get("/api/bans"))["bans"] == []
    for _ in range(4):  # every worker serves the client again
        async with session.get(gw.url + "/users/1") as r:
            assert r.status == 200
    assert (await gw.admin.call("DELETE", "/bans/127.0.0.1"))[0] == 404
    assert (await gw.admin.call("DELETE", "/bans/not-an-ip"))[0] == 400


@pytest.mark.parametrize("workers", WORKERS)
async def test_breaker_reset(
    start_gateway: StartGateway, session: aiohttp.ClientSession, workers: int
) -> None:
    gw = await start_gateway(workers)

    async def fail() -> None:
        async with session.get(gw.url + "/dead") as r:
            assert r.status in (502, 503)

    def all_open(body: dict[str, Any]) -> bool:
        up = next(u for u in body["upstreams"] if u["name"] == "dead")
        views = up["endpoints"][0]["workers"]
        return len(views) == workers and all(v["breaker"] == "open" for v in views)

    await gw.admin.until("/api/upstreams", all_open, poke=fail)
    status, body = await gw.admin.call("POST", "/api/upstreams/dead/reset-breakers", {})
    assert status == 200 and body["workers"] == workers and len(body["reset"]) == 1
    up = next(u for u in (await gw.admin.get("/api/upstreams"))["upstreams"] if u["name"] == "dead")
    assert [v["breaker"] for v in up["endpoints"][0]["workers"]] == ["closed"] * workers
    cases = [
        ("/api/upstreams/nope/reset-breakers", {}, 404),
        ("/api/upstreams/dead/reset-breakers", {"endpoint": "http://10.9.9.9:1"}, 404),
        ("/api/upstreams/dead/reset-breakers", {"endpoint": 7}, 400),
        ("/api/upstreams/dead/reset-breakers", {"other": "x"}, 400),
    ]
    for path, payload, expected in cases:
        assert (await gw.admin.call("POST", path, payload))[0] == expected, (path, payload)


@pytest.mark.parametrize("workers", WORKERS)
async def test_reload_through_the_api(start_gateway: StartGateway, workers: int) -> None:
    gw = await start_gateway(workers)
    before = (await gw.admin.get("/api/status"))["config_hash"]
    good = {**gw.config, "routes": [*gw.config["routes"], {"name": "extra", "upstream": "v1"}]}
    gw.rewrite(good)
    status, body = await gw.admin.call("POST", "/api/reload")
    assert status == 200 and body["ok"] is True and body["config_hash"] != before
    good_hash = body["config_hash"]
    assert len(body["workers"]) == workers
    assert "extra" in {r["name"] for r in (await gw.admin.get("/api/routes"))["routes"]}

    bad = {**good, "routes": [*good["routes"], {"name": "broken", "upstream": "nowhere"}]}
    gw.rewrite(bad)
    status, body = await gw.admin.call("POST", "/api/reload")
    assert status == 422, body
    assert {"path": "routes[4].upstream"}.items() <= body["errors"][0].items()
    st = await gw.admin.get("/api/status")
    assert st["config_hash"] == good_hash  # every worker kept serving the good config
    assert st["last_reload"]["result"] == "failed"
    assert st["last_reload"]["errors"][0]["path"] == "routes[4].upstream"


def with_cache(cfg: dict[str, Any]) -> None:
    route = {"name": "cached", "match": {"path": {"prefix": "/cached"}}, "upstream": "v1",
             "cache": {"default_ttl": "10m"}}  # fmt: skip
    cfg["routes"].insert(0, route)


@pytest.mark.parametrize("workers", WORKERS)
async def test_cache_purge(
    start_gateway: StartGateway, session: aiohttp.ClientSession, workers: int
) -> None:
    gw = await start_gateway(workers, edit=with_cache)
    bad_bodies = [{}, {"key": "a", "tag": "b"}, {"prefix": ""}, {"key": 3}, ["key"], {"x": "y"}]
    for payload in bad_bodies:
        assert (await gw.admin.call("POST", "/api/cache/purge", payload))[0] == 400, payload
    statuses = []
    for _ in range(6):  # fills the cache of each worker it reaches, then hits
        async with session.get(gw.url + "/cached/a") as r:
            statuses.append(r.headers.get("Cache-Status", ""))
    assert any("hit" in s for s in statuses), statuses
    host = "127.0.0.1"  # entries are named host/path?query, the host without its port
    status, body = await gw.admin.call("POST", "/api/cache/purge", {"prefix": f"{host}/cached"})
    assert status == 200, body
    assert 1 <= body["purged"] <= workers and body["workers"] == workers
    async with session.get(gw.url + "/cached/a") as r:
        assert "hit" not in r.headers.get("Cache-Status", "")
    status, body = await gw.admin.call("POST", "/api/cache/purge", {"key": f"{host}/nothing"})
    assert (status, body["purged"]) == (200, 0)
