"""The header filter: a route's request and response header rules and security headers.

How it works. Everything is decided when the config loads: each value template is
parsed once (`gateway.config.headers_model.parse_template`) into literal strings and
getter functions `(ex, now) -> str`; a value without variables stays a plain str, one
that is a single variable is that variable's getter, and `${route}` / `${upstream}`
are folded into literals since they are fixed per route. Names are `istr`s, so the
CIMultiDict does not fold their case per request. A request pays a loop over a few
tuples, one call per variable and, only when a template names a time variable, one
clock read (one timestamp per request, shared by both sides).

Order (fixed): on the request, remove -> set -> add, on `ex.headers` before `next`
(the Forwarder builds the upstream head from them afterwards); on the response,
remove -> set -> add -> security, on `reply.headers` after `next` returns.

Semantics on duplicates: `remove` drops every value of a name; `set` leaves exactly one
value (where the first of those present was, else at the end); `add` appends one more,
keeping what is there. Names go out spelled as configured. A
variable without a value renders as "", and `set` still replaces: an identity header
set from `${client_cert_subject}` carries "" on a request without a certificate rather
than whatever the client sent.

Security headers: a header in `keep_upstream` that the reply already carries (from the
upstream, or from this route's response rules, which run first) is left alone;
otherwise the configured value is set. Strict-Transport-Security goes out only when
the client's connection is TLS (`ex.scheme == "https"`); over plain HTTP any HSTS is
removed, the upstream's too (RFC 6797 7.2: never over non-secure transport).

Every reply: response rules apply to gateway-made errors too (a 502 or 504 from the
Forwarder). The filter turns a `GatewayError` raised by the rest of the chain into the
same JSON error reply, and the same log line, that the server would have made, so the
client sees the route's headers on it. Errors raised after this filter returned (a
failure while streaming the body) and 404s for unrouted requests are outside any
route's chain and do not get them.

Injection: client-sourced strings (SNI, Host, path, request id) are stripped of CR,
LF and NUL before they are rendered; the HTTP parser already refuses them in the
request line and headers, but a TLS ClientHello's server name is less policed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from multidict import CIMultiDict, istr

from gateway.config.headers_model import (
    SECURITY_HEADERS,
    VARIABLES,
    HeaderEdits,
    HeaderRules,
    Variable,
    parse_template,
    preset_values,
)
from gateway.errors import GatewayError
from gateway.exchange import Exchange, Reply
from gateway.pipeline import Next

__all__ = ["GETTERS", "Getter", "HeaderFilter", "Value", "compile_template"]

log = logging.getLogger("gateway.server")

Getter = Callable[[Exchange, float], str]
Value = str | Getter
"""A compiled template: a plain str, or a function of the exchange and the time."""

_HSTS_NAME = SECURITY_HEADERS["hsts"][0]
HSTS = istr(_HSTS_NAME)


def _clean(v: str) -> str:
    if "\r" in v or "\n" in v or "\0" in v:
        return v.replace("\r", "").replace("\n", "").replace("\0", "")
    return v


def _client_port(ex: Exchange, now: float) -> str:
    return str(ex.client_port) if ex.client_port else ""  # 0: unknown, never a source port


def _tls_version(ex: Exchange, now: float) -> str:
    return ex.tls.version if ex.tls is not None else ""


def _tls_cipher(ex: Exchange, now: float) -> str:
    return ex.tls.cipher if ex.tls is not None else ""


def _sni(ex: Exchange, now: float) -> str:
    return _clean(ex.tls.sni) if ex.tls is not None and ex.tls.sni else ""


def _cert(field: str) -> Getter:
    def get(ex: Exchange, now: float) -> str:
        cert = ex.tls.client_cert if ex.tls is not None else None
        return str(getattr(cert, field)) if cert is not None else ""

    get.__qualname__ = f"client_cert_{field}"
    return get


def _time_iso(ex: Exchange, now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def _time_unix(ex: Exchange, now: float) -> str:
    return str(int(now))


# Every template variable but the per-route constants (route, upstream).
GETTERS: dict[str, Getter] = {
    "client_ip": lambda ex, now: ex.client_ip,
    "client_port": _client_port,
    "request_id": lambda ex, now: _clean(ex.request_id),
    "scheme": lambda ex, now: ex.scheme,
    "host": lambda ex, now: _clean(ex.host),
    "method": lambda ex, now: ex.method,
    "path": lambda ex, now: _clean(ex.path),
    "tls_version": _tls_version,
    "tls_cipher": _tls_cipher,
    "sni": _sni,
    "client_cert_subject": _cert("subject"),
    "client_cert_issuer": _cert("issuer"),
    "client_cert_fingerprint": _cert("sha256_fingerprint"),
    "client_cert_not_after": _cert("not_after"),
    "client_cert_serial": _cert("serial"),
    "time_iso": _time_iso,
    "time_unix": _time_unix,
}
_CONSTANTS = frozenset(VARIABLES) - frozenset(GETTERS)  # route, upstream
_TIME_VARIABLES = frozenset({"time_iso", "time_unix"})


def compile_template(text: str, constants: Mapping[str, str]) -> Value:
    """`text` compiled: a str when nothing varies per request, else a getter.

    `constants` gives the per-route variables (route, upstream), folded in here.
    """
    parts: list[str | Getter] = []
    for part in parse_template(text):
        if isinstance(part, Variable) and part.name not in _CONSTANTS:
            parts.append(GETTERS[part.name])
            continue
        literal = constants[part.name] if isinstance(part, Variable) else part
        if parts and isinstance(parts[-1], str):
            parts[-1] += literal
        else:
            parts.append(literal)
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    frozen = tuple(parts)

    def render(ex: Exchange, now: float) -> str:
        return "".join([p if isinstance(p, str) else p(ex, now) for p in frozen])

    return render


def _uses_clock(text: str) -> bool:
    return any(isinstance(p, Variable) and p.name in _TIME_VARIABLES for p in parse_template(text))


class _Edits:
    """One side's compiled rules: names to remove, (name, value) to set and to add."""

    __slots__ = ("add", "remove", "set", "source")

    def __init__(self, cfg: HeaderEdits, constants: Mapping[str, str]) -> None:
        self.remove = tuple(istr(n) for n in cfg.remove)
        self.set = tuple((istr(n), compile_template(v, constants)) for n, v in cfg.set.items())
        self.add = tuple((istr(n), compile_template(v, constants)) for n, v in cfg.add.items())
        self.source = cfg

    def apply(self, h: CIMultiDict[str], ex: Exchange, now: float) -> None:
        for name in self.remove:
            h.popall(name, None)
        for name, value in self.set:
            h[name] = value if isinstance(value, str) else value(ex, now)
        for name, value in self.add:
            h.add(name, value if isinstance(value, str) else value(ex, now))

    def __repr__(self) -> str:
        c = self.source
        out = []
        if c.remove:
            out.append(f"remove={list(c.remove)}")
        if c.set:
            out.append(f"set={dict(c.set)}")
        if c.add:
            out.append(f"add={dict(c.add)}")
        return " ".join(out)


class HeaderFilter:
    """A route's header rules, compiled once at config load; immutable afterwards."""

    __slots__ = ("_clock", "_hsts", "_request", "_response", "_security", "_uses_clock", "route")

    def __init__(
        self,
        rules: HeaderRules,
        *,
        route: str,
        upstream: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        constants = {"route": route, "upstream": upstream}
        self.route = route
        self._request = _Edits(rules.request, constants) if not rules.request.empty else None
        self._response = _Edits(rules.response, constants) if not rules.response.empty else None
        # (name, value, keep_upstream) for each security header sent, HSTS apart;
        # _hsts is None without a security section, else (value or None, keep).
        self._security: tuple[tuple[istr, str, bool], ...] = ()
        self._hsts: tuple[str | None, bool] | None = None
        sec = rules.security
        if sec is not None:
            keep = set(sec.keep_upstream)
            values = preset_values(sec)
            self._security = tuple(
                (istr(name), value, name in keep)
                for name, value in values.items()
                if value is not None and name != _HSTS_NAME
            )
            self._hsts = (values[_HSTS_NAME], _HSTS_NAME in keep)
        templates: Sequence[str] = [
            *rules.request.set.values(),
            *rules.request.add.values(),
            *rules.response.set.values(),
            *rules.response.add.values(),
        ]
        self._uses_clock = any(_uses_clock(t) for t in templates)
        self._clock = clock

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        now = self._clock() if self._uses_clock else 0.0
        if self._request is not None:
            self._request.apply(ex.headers, ex, now)
        try:
            reply = await next(ex)
        except GatewayError as exc:
            # As server.py would answer it, so the response rules below apply to it too.
            log.warning(
                "%d %s on route %s (id=%s): %s",
                exc.status,
                exc.code,
                self.route,
                ex.request_id,
                exc.message,
            )
            reply = Reply.error(exc.status, exc.code, exc.message, ex.request_id)
        h = reply.headers
        if self._response is not None:
            self._response.apply(h, ex, now)
        for name, value, keep in self._security:
            if not (keep and name in h):
                h[name] = value
        if self._hsts is not None:
            if ex.scheme != "https":
                h.popall(HSTS, None)  # RFC 6797 7.2
            else:
                hsts, keep_hsts = self._hsts
                if hsts is not None and not (keep_hsts and HSTS in h):
                    h[HSTS] = hsts
        return reply

    def __repr__(self) -> str:
        parts = [f"route={self.route}"]
        if self._request is not None:
            parts.append(f"request=[{self._request!r}]")
        if self._response is not None:
            parts.append(f"response=[{self._response!r}]")
        if self._hsts is not None:
            sent = [str(n) for n, _, _ in self._security]
            if self._hsts[0] is not None:
                sent.append(f"{HSTS} (https only)")
            kept = [str(n) for n, _, k in self._security if k]
            if self._hsts[1]:
                kept.append(str(HSTS))
            parts.append(f"security={sent} keep_upstream={kept}")
        return f"<HeaderFilter {' '.join(parts)}>"
