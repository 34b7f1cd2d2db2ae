"""Header rules per route: request and response edits with templates, security headers.

A route's `headers` section:

    headers:
      request:  {set: {X-Env: prod, X-Client: "${client_ip}:${client_port}"},
                 add: {X-Trace: "${request_id}"}, remove: [X-Internal]}
      response: {set: {...}, add: {...}, remove: [Server]}
      security: {preset: strict, hsts: "max-age=600", csp: null, keep_upstream: [...]}

Templates. A value may name variables as `${name}`; `$$` is a literal `$`. Any other
`$` is an error, as are unknown names, so a typo fails the load instead of sending
`${clinet_ip}` upstream. `parse_template` is the one parser: the model uses it to
validate, the header filter (gateway/filters/headers.py) to compile each value once
at load into literal and getter parts. A variable with no value for a request
(`tls_version` over plain HTTP, `client_cert_subject` without a client certificate)
renders as the empty string; a `set` then still replaces what the client sent, so an
identity header can never be forged by leaving a variable empty.

Names and values. Names are tokens (RFC 9110 5.6.2) and compare case-insensitively,
so `X-A` and `x-a` in one map is an error. Hop-by-hop and framing headers (RFC 9110
7.6.1: Connection, Transfer-Encoding, Content-Length, ...) are the proxy's business
and are refused in rules. Values may not hold control characters other than HTAB
(RFC 9110 5.5), CR and LF above all: they would split the header block.

Security headers (OWASP Secure Headers Project). `basic` sends X-Content-Type-Options,
X-Frame-Options and Referrer-Policy; `strict` adds Strict-Transport-Security,
Permissions-Policy and Content-Security-Policy. Each header can be overridden (a
value) or turned off (null); a field left out takes the preset's value.
`keep_upstream` lists the headers for which a value the upstream already sent wins;
by default all of them, since the service knows its own CSP and framing needs best
and the gateway only fills the gaps. HSTS is only ever sent over TLS (RFC 6797 7.2);
on plain HTTP the filter removes an upstream's HSTS as well.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from gateway.config.fields import StrictModel, Token, choice
from gateway.hopbyhop import HOP_BY_HOP

__all__ = [
    "MANAGED_HEADERS",
    "SECURITY_HEADERS",
    "VARIABLES",
    "HeaderEdits",
    "HeaderRules",
    "SecurityHeaders",
    "Variable",
    "parse_template",
    "preset_values",
]

# Template variables and what they render; an absent value renders as "".
VARIABLES: dict[str, str] = {
    "client_ip": "the resolved client address (see trusted_proxies)",
    "client_port": "the client's source port",
    "request_id": "the request id (the client's, or generated)",
    "route": "the route's name",
    "upstream": "the route's upstream name",
    "scheme": "'http' or 'https', the client's connection to the gateway",
    "host": "the request's host, lower-cased, without port",
    "method": "the request method",
    "path": "the request path as received (percent-encoded, no query)",
    "tls_version": "the client's TLS version ('TLSv1.3'); empty on plain HTTP",
    "tls_cipher": "the client's TLS cipher suite; empty on plain HTTP",
    "sni": "the server name the client asked for (SNI); empty without one",
    "client_cert_subject": "a verified client certificate's subject (RFC 4514); empty without",
    "client_cert_issuer": "a verified client certificate's issuer (RFC 4514); empty without",
    "client_cert_fingerprint": "a verified client certificate's SHA-256 (hex); empty without",
    "client_cert_not_after": "a verified client certificate's expiry (ISO 8601); empty without",
    "client_cert_serial": "a verified client certificate's serial (hex); empty without",
    "time_iso": "the current time, UTC, ISO 8601 ('2030-01-31T12:00:00Z')",
    "time_unix": "the current time in whole seconds since the Unix epoch",
}

# Header rules may not touch hop-by-hop or framing headers (the proxy rebuilds them).
MANAGED_HEADERS = HOP_BY_HOP

# field -> (header, value in `basic`, value in `strict`); None: not sent by that preset.
SECURITY_HEADERS: dict[str, tuple[str, str | None, str | None]] = {
    "hsts": ("Strict-Transport-Security", None, "max-age=31536000; includeSubDomains"),
    "content_type_options": ("X-Content-Type-Options", "nosniff", "nosniff"),
    "frame_options": ("X-Frame-Options", "DENY", "DENY"),
    "referrer_policy": (
        "Referrer-Policy",
        "strict-origin-when-cross-origin",
        "strict-origin-when-cross-origin",
    ),
    "permissions_policy": (
        "Permissions-Policy",
        None,
        "geolocation=(), microphone=(), camera=()",
    ),
    "csp": ("Content-Security-Policy", None, "default-src 'none'; frame-ancestors 'none'"),
}
_SECURITY_NAMES = {h.lower(): h for h, _, _ in SECURITY_HEADERS.values()}
_KEEP_NAMES = {**_SECURITY_NAMES, **{f: h for f, (h, _, _) in SECURITY_HEADERS.items()}}

# W3C Referrer Policy section 3; a comma-separated list is allowed (the last known wins).
_REFERRER_POLICIES = (
    "no-referrer",
    "no-referrer-when-downgrade",
    "origin",
    "origin-when-cross-origin",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
)
_FRAME = ("DENY", "SAMEORIGIN")
_HSTS_MAX_AGE = re.compile(r'(?:^|;)\s*max-age\s*=\s*"?\d+"?\s*(?:;|$)', re.IGNORECASE)
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Variable(NamedTuple):
    """A `${name}` in a parsed template."""

    name: str


def parse_template(text: str) -> tuple[str | Variable, ...]:
    """`text` as literal and Variable parts (adjacent literals merged, empty ones dropped).

    Raises ValueError naming the problem: a lone `$`, an unclosed `${`, an unknown name.
    """
    parts: list[str | Variable] = []
    literal: list[str] = []
    i = 0
    while (j := text.find("$", i)) >= 0:
        literal.append(text[i:j])
        after = text[j + 1 : j + 2]
        if after == "$":
            literal.append("$")
            i = j + 2
            continue
        if after != "{":
            raise ValueError(
                f"malformed template {text!r}: '$' at position {j} must start '${{name}}' "
                "or be doubled as '$$'"
            )
        end = text.find("}", j + 2)
        if end < 0:
            raise ValueError(f"malformed template {text!r}: '${{' at position {j} is not closed")
        name = text[j + 2 : end]
        if name not in VARIABLES:
            raise ValueError(_unknown_variable(name))
        if lit := "".join(literal):
            parts.append(lit)
        literal = []
        parts.append(Variable(name))
        i = end + 1
    literal.append(text[i:])
    if lit := "".join(literal):
        parts.append(lit)
    return tuple(parts)


def _unknown_variable(name: str) -> str:
    if not name:
        return "empty variable name '${}'"
    close = difflib.get_close_matches(name, VARIABLES, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown variable {name!r}{hint}"


def _check_value(v: str) -> str:
    if _CTL.search(v):
        raise ValueError(
            f"invalid header value {v!r}: must not contain CR, LF or other control "
            "characters (RFC 9110 5.5)"
        )
    return v


def _check_security_value(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty (null turns the header off)")
    return _check_value(v)


def _check_template(v: str) -> str:
    parse_template(_check_value(v))
    return v


def _check_rule_name(v: str) -> str:
    if v.lower() in MANAGED_HEADERS:
        raise ValueError(
            f"header {v!r} is hop-by-hop or framing, managed by the proxy (RFC 9110 7.6.1)"
        )
    return v


def _check_nosniff(v: Any) -> Any:
    if v != "nosniff":
        raise ValueError(f"invalid content_type_options {v!r}: the only value is 'nosniff'")
    return v


def _check_frame_options(v: Any) -> Any:
    # ALLOW-FROM (RFC 7034 2.1) is obsolete, use CSP's frame-ancestors: only the two
    # values browsers honour are accepted, spelled as the JSON Schema spells them.
    if v in _FRAME:
        return v
    hint = f" (write {v.upper()!r})" if isinstance(v, str) and v.upper() in _FRAME else ""
    raise ValueError(f"invalid frame_options {v!r}: expected 'DENY' or 'SAMEORIGIN'{hint}")


def _no_duplicates(names: list[str]) -> None:
    seen: dict[str, str] = {}
    for n in names:
        first = seen.get(n.lower())
        if first is not None:
            same = "" if first == n else f" (names are case-insensitive: {first!r})"
            raise ValueError(f"header {n!r} given twice{same}")
        seen[n.lower()] = n


RuleName = Annotated[Token, AfterValidator(_check_rule_name)]
HeaderTemplate = Annotated[
    str,
    AfterValidator(_check_template),
    Field(examples=["prod", "${client_ip}:${client_port}", "cost: $$5"]),
]
HeaderValue = Annotated[str, AfterValidator(_check_security_value)]
NoSniff = Annotated[Literal["nosniff"], BeforeValidator(_check_nosniff)]
FrameOptions = Annotated[Literal["DENY", "SAMEORIGIN"], BeforeValidator(_check_frame_options)]
Preset = Annotated[
    Literal["strict", "basic", "none"],
    BeforeValidator(choice("preset", ("strict", "basic", "none"))),
]


class HeaderEdits(StrictModel):
    """Edits on one side; applied in the order remove, set, add."""

    remove: list[RuleName] = Field(default=[], description="Headers removed (every value).")
    set: dict[RuleName, HeaderTemplate] = Field(
        default={},
        description="Headers set to one value, replacing any present; values are templates "
        "('${client_ip}', '$$' for '$').",
    )
    add: dict[RuleName, HeaderTemplate] = Field(
        default={},
        description="Headers appended, keeping any values present; values are templates.",
    )

    @field_validator("remove", "set", "add")
    @classmethod
    def _unique(cls, v: Any) -> Any:
        _no_duplicates(list(v))
        return v

    @property
    def empty(self) -> bool:
        return not (self.remove or self.set or self.add)


class SecurityHeaders(StrictModel):
    """Security response headers from a preset; a field left out takes the preset's value,
    null turns the header off, a string replaces it."""

    preset: Preset = Field(
        default="basic",
        description="'basic': X-Content-Type-Options, X-Frame-Options, Referrer-Policy; "
        "'strict': also HSTS, Permissions-Policy, Content-Security-Policy; 'none': only "
        "the headers given here.",
    )
    hsts: HeaderValue | None = Field(
        default=None,
        description="Strict-Transport-Security (sent over TLS only); strict: "
        "'max-age=31536000; includeSubDomains'.",
    )
    content_type_options: NoSniff | None = Field(
        default=None, description="X-Content-Type-Options; basic and strict: 'nosniff'."
    )
    frame_options: FrameOptions | None = Field(
        default=None, description="X-Frame-Options; basic and strict: 'DENY'."
    )
    referrer_policy: HeaderValue | None = Field(
        default=None,
        description="Referrer-Policy; basic and strict: 'strict-origin-when-cross-origin'.",
    )
    permissions_policy: HeaderValue | None = Field(
        default=None,
        description="Permissions-Policy; strict: 'geolocation=(), microphone=(), camera=()'.",
    )
    csp: HeaderValue | None = Field(
        default=None,
        description="Content-Security-Policy; strict: \"default-src 'none'; "
        "frame-ancestors 'none'\".",
    )
    keep_upstream: list[str] = Field(
        default=[h for h, _, _ in SECURITY_HEADERS.values()],
        description="Headers (names or field names, like 'csp') for which the upstream's "
        "own value, when it sent one, is kept; default all (the service knows its needs "
        "best). [] always sends the gateway's values.",
    )

    @field_validator("hsts")
    @classmethod
    def _check_hsts(cls, v: str | None) -> str | None:
        if v is not None and not _HSTS_MAX_AGE.search(v):
            raise ValueError(
                f"invalid hsts {v!r}: needs a max-age directive, like 'max-age=31536000' "
                "(RFC 6797 6.1.1)"
            )
        return v

    @field_validator("referrer_policy")
    @classmethod
    def _check_referrer(cls, v: str | None) -> str | None:
        if v is not None:
            for token in (t.strip() for t in v.split(",")):
                if token.lower() not in _REFERRER_POLICIES:
                    listed = ", ".join(_REFERRER_POLICIES)
                    raise ValueError(f"invalid referrer_policy {token!r}: expected {listed}")
        return v

    @field_validator("keep_upstream")
    @classmethod
    def _check_keep(cls, v: list[str]) -> list[str]:
        out = []
        for name in v:
            canonical = _KEEP_NAMES.get(name.lower())
            if canonical is None:
                listed = ", ".join(SECURITY_HEADERS)
                raise ValueError(
                    f"invalid keep_upstream {name!r}: expected a security header's name "
                    f"or field ({listed})"
                )
            out.append(canonical)
        _no_duplicates(out)
        return out


def preset_values(security: SecurityHeaders) -> dict[str, str | None]:
    """Header -> the value sent (None: not sent), the preset merged with the overrides."""
    column = {"none": 0, "basic": 1, "strict": 2}[security.preset]
    out: dict[str, str | None] = {}
    for field, (header, basic, strict) in SECURITY_HEADERS.items():
        if field in security.model_fields_set:
            out[header] = getattr(security, field)
        else:
            out[header] = (None, basic, strict)[column]
    return out


class HeaderRules(StrictModel):
    """A route's header rules: request and response edits and security headers."""

    request: HeaderEdits = Field(
        default=HeaderEdits(), description="Edits on the request sent upstream."
    )
    response: HeaderEdits = Field(
        default=HeaderEdits(),
        description="Edits on every response to the client, gateway errors included.",
    )
    security: SecurityHeaders | None = Field(
        default=None, description="Security response headers from a preset, with overrides."
    )

    @property
    def empty(self) -> bool:
        return self.request.empty and self.response.empty and self.security is None
