"""The operator dashboard end to end in headless Chromium (Debian's chromium package),
driven over the DevTools protocol with aiohttp's websocket client: the page loads from
a two-worker gateway's admin listener, shows a route's live figures after traffic, and
a click on pause (then on its confirmation) pauses the rollout in the page and in
every worker.

Waiting happens in the page: one `Runtime.evaluate` awaits a promise that resolves
when the condition holds (checked every 50 ms, with a deadline), so the test never
sleeps on its own."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.admin.conftest import StartGateway

CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get install -y chromium chromium-driver"


class Page:
    """One page target over the DevTools protocol (commands only; events are skipped)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        await self.ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
        async for msg in self.ws:
            data = json.loads(msg.data)
            if data.get("id") == n:
                if "error" in data:
                    raise AssertionError(f"{method}: {data['error']}")
                return dict(data["result"])
        raise AssertionError("the browser closed the DevTools connection")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, condition: str, timeout_s: float = 20.0) -> Any:
        """Resolve with the JS expression `condition` once it is truthy."""
        return await self.evaluate(
            f"""new Promise((resolve, reject) => {{
                const t0 = Date.now();
                (function check() {{
                    let v = null;
                    try {{ v = ({condition}); }} catch (e) {{}}
                    if (v) return resolve(v);
                    if (Date.now() - t0 > {timeout_s * 1000}) {{
                        return reject(new Error("timed out waiting for: " + {json.dumps(condition)}
                            + "\\n" + document.body.innerText));
                    }}
                    setTimeout(check, 50);
                }})();
            }})"""
        )

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = await self.wait_for(
            f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
                if (!e) return null; const r = e.getBoundingClientRect();
                return {{x: r.x + r.width / 2, y: r.y + r.height / 2}}; }})()"""
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=1,
            )


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    if shutil.which(CHROMIUM) is None:  # missing or not executable
        pytest.fail(f"headless Chromium is needed at {CHROMIUM}: {INSTALL}")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--remote-debugging-port=0",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        browser_ws = ""
        async with asyncio.timeout(30):
            while not browser_ws:
                line = (await proc.stderr.readline()).decode(errors="replace")
                if not line:
                    pytest.fail(
                        f"Chromium exited with {await proc.wait()}; is it usable? {INSTALL}"
                    )
                if line.startswith("DevTools listening on "):
                    browser_ws = line.split(" on ", 1)[1].strip()
        http = browser_ws.replace("ws://", "http://").split("/devtools/")[0]
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{http}/json/list") as r:
                targets = await r.json()
            target = next(t for t in targets if t["type"] == "page")
            async with s.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def cell(route_or_rollout: str, name: str, cls: str) -> str:
    return f"document.querySelector('tr[data-{route_or_rollout}=\"{name}\"] .{cls}')"


async def test_dashboard_shows_live_figures_and_pauses_a_rollout(
    start_gateway: StartGateway, page: Page
) -> None:
    gw = await start_gateway(2)
    admin = gw.admin
    await admin.until(
        "/api/rollouts",
        lambda b: all(w["state"] == "progressing" for w in b["rollouts"][0]["workers"]),
    )
    await page.send("Page.navigate", url=admin.base + "/")
    await page.wait_for("Number(document.body.dataset.polls) >= 1")
    assert await page.evaluate(f"{cell('route', 'users', 'total')}.textContent") == "0"

    async with aiohttp.ClientSession() as s:  # traffic after the page's first poll
        for i in range(20):
            async with s.get(f"{gw.url}/users/{i}", headers={"X-Client": f"c{i}"}) as r:
                assert r.status == 200
    rps = await page.wait_for(
        f"{cell('route', 'users', 'total')}.textContent === '20'"
        f" && parseFloat({cell('route', 'users', 'rps')}.textContent) > 0"
        f" && {cell('route', 'users', 'rps')}.textContent"
    )
    assert float(rps) > 0
    assert await page.evaluate(f"{cell('rollout', 'users', 'state')}.textContent") == "progressing"

    await page.click('tr[data-rollout="users"] button[data-action="pause"]')
    await page.click('tr[data-rollout="users"] button[data-confirm="pause"]')
    await page.wait_for(f"{cell('rollout', 'users', 'state')}.textContent === 'paused'")
    body = await admin.get("/api/rollouts")
    assert [w["state"] for w in body["rollouts"][0]["workers"]] == ["paused", "paused"]
    flash = await page.evaluate("document.getElementById('flash').textContent")
    assert flash == "pause users: done"
