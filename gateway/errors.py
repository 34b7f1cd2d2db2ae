"""The gateway's error hierarchy.

Transport and protocol faults are translated once, where they enter (the upstream
client, the server's parser hooks), into a `GatewayError` carrying the HTTP status
to answer with, as httpcore's `_exceptions.py` does. Expected outcomes (a 429, a
403, a cache hit) are never raised: filters return a Reply for those.
"""

from __future__ import annotations


class GatewayError(Exception):
    """A fault that ends the request with `status` and a short, safe `message`."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message or self.code)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


class RequestTimeout(GatewayError):
    """The client stopped sending its request body (server.body_timeout)."""

    status = 408
    code = "request_timeout"


class UpstreamError(GatewayError):
    """Something went wrong talking to an upstream endpoint."""

    status = 502
    code = "bad_gateway"


class UpstreamConnectError(UpstreamError):
    """No connection could be made; nothing was sent, so any method may be retried."""

    code = "upstream_connect_failed"


class UpstreamProtocolError(UpstreamError):
    """The upstream answered with something that is not valid HTTP/1.1."""

    code = "upstream_protocol_error"


class UpstreamResponseTooLarge(UpstreamError):
    """The response body is over the route's `max_response_bytes`."""

    code = "upstream_response_too_large"


class UpstreamClosed(UpstreamError):
    """The upstream closed the connection before a complete response.

    `before_response` is True when not a byte of the response arrived: on a reused
    keep-alive connection this is the classic stale-connection race, safe to retry
    for idempotent requests whose body was not consumed.
    """

    code = "upstream_closed"

    def __init__(self, message: str = "", *, before_response: bool = False) -> None:
        super().__init__(message)
        self.before_response = before_response


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"


class NoUpstreamAvailable(GatewayError):
    status = 503
    code = "no_upstream_available"


class ClientDisconnected(Exception):
    """The downstream client went away; nothing can be answered."""


class ConfigError(Exception):
    """One problem in a config file, with the path of the offending value."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class ConfigErrors(Exception):
    """Every problem found in one config file, reported together."""

    def __init__(self, source: str, errors: list[ConfigError]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{source}: {len(errors)} error(s)\n{lines}")
