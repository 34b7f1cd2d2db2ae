"""What every auth check returns when it refuses: a `Failure`, built once per reason.

A check is `async (ex) -> Failure | None`: None lets the request go on (the check may
have set `ex.principal` / `ex.principal_tier` and edited headers or the body). The
AuthFilter turns a Failure into the reply, the counter and the log line. `reason` is
a short fixed word (a metric label: bounded), `message` is safe to show the caller,
`challenge` the WWW-Authenticate value of a 401 (RFC 9110 11.6.1), if any.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.exchange import Exchange

__all__ = ["Check", "Failure"]


class Failure:
    __slots__ = ("challenge", "message", "reason", "status")

    def __init__(self, status: int, reason: str, message: str, challenge: str | None) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.challenge = challenge

    def __repr__(self) -> str:
        return f"<Failure {self.status} {self.reason}>"


Check = Callable[[Exchange], Awaitable[Failure | None]]
