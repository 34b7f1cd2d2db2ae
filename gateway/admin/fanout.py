"""The control channel between the supervisor and its workers: Unix sockets.

With N workers the admin listener runs in the supervisor, which has no Runtime. Each
worker therefore serves its `WorkerOps` (ops.py) on `worker-<i>.sock` in a private run
directory the supervisor creates (mode 0700, removed at exit; the socket itself 0600),
and `FanoutControl` sends each operation to every ready worker over aiohttp's
UnixConnector, then control.py merges the answers.

Wire format: `POST /op/<name>` with the arguments as a JSON object; the answer is
the operation's JSON body with its HTTP status (200, or the refusal's: 404, 409, ...).
A worker that cannot be reached (restarting, stuck past the timeout) answers 503 in
the merge; it is never retried (actions are not idempotent, pause twice is a 409).

The socket carries no authentication of its own: only the gateway's user can enter
the run directory. Connections are not kept alive (admin traffic is tiny, and a
restarted worker's new socket must be used at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.admin.control import Answer, Control, Target, answer_locally
from gateway.admin.ops import WorkerOps

log = logging.getLogger("gateway.admin")

CALL_TIMEOUT_S = 10.0  # a reload builds a whole Runtime; everything else is quick
RELOAD_TIMEOUT_S = 60.0


def socket_path(run_dir: str, worker_id: int) -> str:
    return os.path.join(run_dir, f"worker-{worker_id}.sock")


class FanoutControl(Control):
    """The supervisor's Control: every operation goes to each ready worker's socket."""

    def __init__(self, targets: Callable[[], list[Target]]) -> None:
        self._targets = targets
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self.calls = 0
        self.failures = 0

    def targets(self) -> list[Target]:
        return self._targets()

    def _session(self, path: str) -> aiohttp.ClientSession:
        session = self._sessions.get(path)
        if session is None or session.closed:
            connector = aiohttp.UnixConnector(path=path, force_close=True)
            session = self._sessions[path] = aiohttp.ClientSession(connector=connector)
        return session

    async def call_one(self, target: Target, op: str, args: dict[str, Any]) -> Answer:
        self.calls += 1
        timeout = RELOAD_TIMEOUT_S if op == "reload" else CALL_TIMEOUT_S
        try:
            async with self._session(target.address).post(
                f"http://worker/op/{op}",
                data=orjson.dumps(args),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                body = await resp.json(loads=orjson.loads, content_type=None)
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self.failures += 1
            log.warning(
                "worker %d (pid %d) did not answer %s: %r", target.worker, target.pid, op, exc
            )
            error = f"worker {target.worker} (pid {target.pid}) unreachable: {exc!r}"
            return Answer(target.worker, target.pid, 503, {"error": error})
        if not isinstance(body, dict):
            body = {"error": f"worker {target.worker} answered {body!r}"}
        return Answer(target.worker, target.pid, status, body)

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions))

    def __repr__(self) -> str:
        return (
            f"<FanoutControl targets={len(self.targets())} calls={self.calls}"
            f" failures={self.failures}>"
        )


def make_control_app(ops: WorkerOps) -> web.Application:
    """The worker's side: one route running a named operation on this worker."""

    async def run(request: web.Request) -> web.Response:
        try:
            args = await request.json(loads=orjson.loads) if request.can_read_body else {}
        except (ValueError, json.JSONDecodeError):
            args = None
        if not isinstance(args, dict):
            return _json(400, {"error": "arguments must be a JSON object"})
        me = Target(ops.worker_id, os.getpid(), "")
        answer = await answer_locally(ops, me, request.match_info["op"], args)
        return _json(answer.status, answer.body)

    app = web.Application()
    app.router.add_post("/op/{op}", run)
    return app


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def start_control(ops: WorkerOps, path: str) -> web.AppRunner:
    """Serve `ops` on the Unix socket `path` (replacing a dead predecessor's file)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    runner = web.AppRunner(make_control_app(ops), access_log=None, handle_signals=False)
    await runner.setup()
    await web.UnixSite(runner, path).start()
    os.chmod(path, 0o600)
    log.debug("worker %d control socket at %s", ops.worker_id, path)
    return runner
