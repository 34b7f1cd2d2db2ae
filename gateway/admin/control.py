"""Control: the admin operations over every worker process, asked and merged once.

The admin app (app.py) talks to one `Control`; how the workers are reached is the
subclass's business:

- `LocalControl`: one process; the worker's `WorkerOps` is called in-process.
- `FanoutControl` (fanout.py): the supervisor of N workers; each worker serves its
  `WorkerOps` on a Unix socket in the supervisor's private run directory, and every
  operation goes to every ready worker at once.

Either way the answers are a list of `Answer`s (worker id, pid, HTTP status, body)
and the merging below is the same, so one process is just the N = 1 case:

- Lists are merged per object: bans by address, blocks by address, rollouts by name,
  upstream endpoints by (upstream, endpoint), each keeping which workers hold it
  (`workers`), summing what adds up (in-flight, pool counts, blocks) and taking the
  worst of states (a breaker open in one worker shows open). Reads succeed when at
  least one worker answered; the others are listed under `unreachable`.
- Actions run in every worker; the result is the merged success when all succeeded,
  else the first failure's status and message with every worker's outcome
  (`workers`). A rollout whose state is shared (Redis) is acted on by one worker; the
  others are told to re-read the store, so none replays the move (it would be a 409).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.admin.ops import ControlError, WorkerOps

log = logging.getLogger("gateway.admin")

BREAKER_RANK = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True, slots=True)
class Answer:
    worker: int
    pid: int
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200

    def outcome(self) -> dict[str, Any]:
        out: dict[str, Any] = {"worker": self.worker, "pid": self.pid, "status": self.status}
        if not self.ok:
            out["error"] = self.body.get("error", "")
        return out


@dataclass(frozen=True, slots=True)
class Target:
    worker: int
    pid: int
    address: str  # the control socket's path; "" in-process


class Control:
    """The admin operations; subclasses say how to reach the workers (`call_one`)."""

    def targets(self) -> list[Target]:
        raise NotImplementedError

    async def call_one(self, target: Target, op: str, args: dict[str, Any]) -> Answer:
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections (FanoutControl's sessions)."""

    async def each(
        self, op: str, args: dict[str, Any], targets: Sequence[Target] | None = None
    ) -> list[Answer]:
        ts = self.targets() if targets is None else list(targets)
        if not ts:
            raise ControlError(503, "no worker process is ready")
        return list(await asyncio.gather(*(self.call_one(t, op, args) for t in ts)))

    async def read(self, op: str, args: dict[str, Any] | None = None) -> list[Answer]:
        """Answers of the workers that answered 200; the first failure if none did."""
        answers = await self.each(op, args or {})
        good = [a for a in answers if a.ok]
        if not good:
            raise _failure(answers)
        return good

    async def act(self, op: str, args: dict[str, Any]) -> list[Answer]:
        """Every worker's answer, all 200; else ControlError with each one's outcome."""
        answers = await self.each(op, args)
        if not all(a.ok for a in answers):
            raise _failure(answers)
        return answers

    async def _read_with_gaps(self, op: str) -> tuple[list[Answer], list[dict[str, Any]]]:
        answers = await self.each(op, {})
        good = [a for a in answers if a.ok]
        if not good:
            raise _failure(answers)
        return good, [a.outcome() for a in answers if not a.ok]

    # -- reading ----------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        answers, gaps = await self._read_with_gaps("status")
        first = answers[0].body
        hashes = {a.body["config_hash"] for a in answers}
        latest = max(answers, key=lambda a: a.body["last_reload"]["at"] or 0.0).body
        return {
            "version": first["version"],
            "config_path": first["config_path"],
            "config_hash": first["config_hash"] if len(hashes) == 1 else None,
            "consistent": len(hashes) == 1,
            "loaded_at": min(a.body["loaded_at"] for a in answers),
            "last_reload": latest["last_reload"],
            "workers": [
                {
                    "worker": a.worker,
                    "pid": a.pid,
                    "ready": a.body["ready"],
                    "config_hash": a.body["config_hash"],
                    "loaded_at": a.body["loaded_at"],
                    "reloads": a.body["reloads"],
                    "last_reload": a.body["last_reload"]["result"],
                }
                for a in answers
            ],
        } | ({"unreachable": gaps} if gaps else {})

    async def routes(self) -> dict[str, Any]:
        answers, gaps = await self._read_with_gaps("routes")
        return _gaps({"routes": answers[0].body["routes"]}, gaps)

    async def services(self) -> dict[str, Any]:
        answers, gaps = await self._read_with_gaps("services")
        return _gaps({"services": answers[0].body["services"]}, gaps)

    async def upstreams(self) -> dict[str, Any]:
        answers, gaps = await self._read_with_gaps("upstreams")
        merged: dict[str, dict[str, Any]] = {}
        for a in answers:
            for up in a.body["upstreams"]:
                into = merged.setdefault(up["name"], {**up, "endpoints": []})
                eps = {e["endpoint"]: e for e in into["endpoints"]}
                for ep in up["endpoints"]:
                    _merge_endpoint(eps, ep, a)
                into["endpoints"] = list(eps.values())
        return _gaps({"upstreams": list(merged.values())}, gaps)

    async def blocks(self) -> dict[str, Any]:
        answers, gaps = await self._read_with_gaps("blocks")
        rows: dict[str, dict[str, Any]] = {}
        for a in answers:
            for row in a.body["blocks"]:
                have = rows.get(row["ip"])
                if have is None:
                    rows[row["ip"]] = {**row, "workers": [a.worker]}
                else:
                    have["blocks"] += row["blocks"]
                    have["last_s_ago"] = min(have["last_s_ago"], row["last_s_ago"])
                    have["workers"].append(a.worker)
        out = sorted(rows.values(), key=lambda r: r["last_s_ago"])
        return _gaps({"blocks": out}, gaps)

    # -- bans -------------------------------------------------------------------------

    async def bans(self) -> dict[str, Any]:
        answers, gaps = await self._read_with_gaps("bans")
        rows: dict[str, dict[str, Any]] = {}
        for a in answers:
            for row in a.body["bans"]:
                have = rows.get(row["ip"])
                if have is None or row["remaining_s"] > have["remaining_s"]:
                    workers = have["workers"] if have is not None else []
                    have = rows[row["ip"]] = {**row, "workers": workers}
                have["workers"].append(a.worker)
        return _gaps({"bans": [rows[ip] for ip in sorted(rows)]}, gaps)

    async def lift_ban(self, ip: str) -> dict[str, Any]:
        answers = await self.act("ban_lift", {"ip": ip})
        lifted = answers[0].body["ip"]
        if not any(a.body["lifted"] for a in answers):
            raise ControlError(404, f"{lifted} is not banned")
        return {"lifted": lifted}

    # -- rollouts ---------------------------------------------------------------------

    async def rollouts(self) -> dict[str, Any]:
        answers, gaps = await self._read_with_gaps("rollouts")
        by_name: dict[str, list[tuple[Answer, dict[str, Any]]]] = {}
        for a in answers:
            for r in a.body["rollouts"]:
                by_name.setdefault(r["name"], []).append((a, r))
        return _gaps({"rollouts": [_merge_rollout(rows) for rows in by_name.values()]}, gaps)

    async def rollout(self, name: str) -> dict[str, Any]:
        answers = await self.read("rollout", {"name": name})
        return _merge_rollout([(a, a.body) for a in answers])

    async def rollout_act(self, name: str, action: str, who: str) -> dict[str, Any]:
        targets = self.targets()
        if not targets:
            raise ControlError(503, "no worker process is ready")
        args = {"name": name, "action": action, "who": who}
        (first,) = await self.each("rollout_act", args, targets[:1])
        rest: list[Answer] = []
        if first.ok and len(targets) > 1:
            op = "rollout_sync" if first.body.get("shared") else "rollout_act"
            rest = await self.each(op, args, targets[1:])
        answers = [first, *rest]
        if not all(a.ok for a in answers):
            raise _failure(answers)
        return _merge_rollout([(a, a.body) for a in answers])

    # -- actions ----------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        answers = await self.act("reload", {})
        hashes = {a.body["config_hash"] for a in answers}
        return {
            "ok": True,
            "config_hash": answers[0].body["config_hash"] if len(hashes) == 1 else None,
            "workers": [{**a.outcome(), "config_hash": a.body["config_hash"]} for a in answers],
        }

    async def breaker_reset(self, upstream: str, endpoint: str | None) -> dict[str, Any]:
        answers = await self.act("breaker_reset", {"upstream": upstream, "endpoint": endpoint})
        return {"upstream": upstream, "reset": answers[0].body["reset"], "workers": len(answers)}

    async def cache_purge(
        self, *, key: str | None, prefix: str | None, tag: str | None
    ) -> dict[str, Any]:
        answers = await self.act("cache_purge", {"key": key, "prefix": prefix, "tag": tag})
        return {"purged": sum(a.body["purged"] for a in answers), "workers": len(answers)}


def _gaps(payload: dict[str, Any], gaps: list[dict[str, Any]]) -> dict[str, Any]:
    """`payload`, naming the workers that did not answer (when some did not)."""
    if gaps:
        payload["unreachable"] = gaps
    return payload


def _failure(answers: list[Answer]) -> ControlError:
    """The first failure's status and body; with several workers, each one's outcome."""
    bad = next(a for a in answers if not a.ok)
    extra = {k: v for k, v in bad.body.items() if k != "error"}
    if len(answers) > 1:
        extra["workers"] = [a.outcome() for a in answers]
    message = str(bad.body.get("error", f"worker {bad.worker} answered {bad.status}"))
    return ControlError(bad.status, message, **extra)


def _merge_endpoint(eps: dict[str, dict[str, Any]], ep: dict[str, Any], a: Answer) -> None:
    state = ep["breaker"]["state"]
    view = {
        "worker": a.worker,
        "pid": a.pid,
        "available": ep["available"],
        "up": ep["health"]["up"],
        "breaker": state,
        "in_flight": ep["in_flight"],
    }
    have = eps.get(ep["endpoint"])
    if have is None:
        eps[ep["endpoint"]] = {**ep, "pool": dict(ep["pool"]), "workers": [view]}
        return
    have["workers"].append(view)
    have["available"] = have["available"] and ep["available"]
    have["in_flight"] += ep["in_flight"]
    for k, v in ep["pool"].items():
        have["pool"][k] += v
    if BREAKER_RANK[state] > BREAKER_RANK[have["breaker"]["state"]]:
        have["breaker"] = ep["breaker"]
    if not ep["health"]["up"]:
        have["health"] = ep["health"]


def _merge_rollout(rows: list[tuple[Answer, dict[str, Any]]]) -> dict[str, Any]:
    _, first = rows[0]
    first = {k: v for k, v in first.items() if k != "shared"}
    views = [
        {
            "worker": a.worker,
            "pid": a.pid,
            "state": r["state"],
            "step": r["step"],
            "weight": r["weight"],
            "generation": r["generation"],
            "window": r["window"],
        }
        for a, r in rows
    ]
    consistent = len({(v["state"], v["step"]) for v in views}) == 1
    return {**first, "consistent": consistent, "workers": views}


class LocalControl(Control):
    """One process: the operations run on this process's worker."""

    def __init__(self, ops: WorkerOps) -> None:
        self.ops = ops

    def targets(self) -> list[Target]:
        return [Target(self.ops.worker_id, os.getpid(), "")]

    async def call_one(self, target: Target, op: str, args: dict[str, Any]) -> Answer:
        return await answer_locally(self.ops, target, op, args)

    def __repr__(self) -> str:
        return f"<LocalControl {self.ops!r}>"


async def answer_locally(ops: WorkerOps, target: Target, op: str, args: dict[str, Any]) -> Answer:
    """Run `op` on `ops`; refusals and faults become an Answer (faults logged, 500)."""
    try:
        body = await ops.call(op, args)
    except ControlError as exc:
        return Answer(target.worker, target.pid, exc.status, exc.body())
    except Exception as exc:
        log.exception("admin operation %s failed", op)
        return Answer(target.worker, target.pid, 500, {"error": f"internal error: {exc!r}"})
    return Answer(target.worker, target.pid, 200, body)
