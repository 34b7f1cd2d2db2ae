"""Field types, checks and the StrictModel base shared by the config models.

Each check raises ValueError with a short message naming the bad value; the loader
adds the path. `split_host_port` is also used by the cross-field checks (`checks.py`).

`choice` fields (a fixed set of strings, like a TLS version) are checked before
pydantic's Literal so the message can explain the two classic YAML slips: a bare `off`
is read as false and a bare `1.2` as a float.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

# RFC 9110 section 5.6.2: token = 1*tchar; methods and field names are tokens.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST_LABEL = r"(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_ADDRESS_HELP = "expected 'host:port', like '127.0.0.1:8080', '0.0.0.0:8080' or '[::1]:8080'"


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors; loaded configs are values."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


def split_host_port(address: str) -> tuple[str, int]:
    """Split 'host:port' ('[v6]:port' for IPv6) into (host, port); ValueError if invalid."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"invalid address {address!r}: {_ADDRESS_HELP}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid address {address!r}: bad IPv6 address {host!r}") from None
    elif ":" in host:
        raise ValueError(f"invalid address {address!r}: write IPv6 hosts in brackets, '[::1]:8080'")
    elif not _HOSTNAME.fullmatch(host.lower()):
        raise ValueError(f"invalid address {address!r}: bad host {host!r}")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"invalid address {address!r}: port must be a number in 0..65535")
    return host, int(port_text)


def _check_address(v: str) -> str:
    split_host_port(v)
    return v


def _check_token(what: str) -> Any:
    def check(v: str) -> str:
        if not _TOKEN.fullmatch(v):
            raise ValueError(f"invalid {what} {v!r}: must be an HTTP token (RFC 9110 5.6.2)")
        return v

    return check


def _check_host(v: str) -> str:
    host = v.lower()
    if ":" in host:
        raise ValueError(f"invalid host {v!r}: a host match carries no port")
    bare = host[2:] if host.startswith("*.") else host
    if not bare or "*" in bare or not _HOSTNAME.fullmatch(bare) or bare.endswith("."):
        raise ValueError(
            f"invalid host {v!r}: expected 'api.example.com' or a wildcard '*.example.com'"
        )
    return host


def _check_method(v: str) -> str:
    return str(_check_token("method")(v)).upper()


def check_regex(v: str | None) -> str | None:
    if v is not None:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"invalid regex {v!r}: {e}") from None
    return v


def check_abs_path(v: str | None) -> str | None:
    if v is not None and not v.startswith("/"):
        raise ValueError(f"invalid path {v!r}: must start with '/'")
    return v


def unit(text: str) -> Any:
    """A default written with its unit, as in a file; validate_default makes it a number."""
    return text


def one_or_many(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


def check_cidr(v: str) -> str:
    """'10.0.0.0/8', '::1/128' or a bare address; normalised to 'network/prefix'."""
    try:
        return str(ipaddress.ip_network(v))
    except ValueError:
        pass
    try:
        net = ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise ValueError(
            f"invalid CIDR {v!r}: expected an address or a network like '10.0.0.0/8' or 'fd00::/8'"
        ) from None
    raise ValueError(f"invalid CIDR {v!r}: host bits are set (did you mean '{net}'?)")


def _check_file(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


def choice(what: str, options: tuple[str, ...]) -> Any:
    """A before-validator: `v` must be one of the strings in `options`."""
    listed = ", ".join(repr(o) for o in options[:-1]) + f" or {options[-1]!r}"

    def check(v: Any) -> Any:
        if isinstance(v, str) and v in options:
            return v
        if isinstance(v, bool):
            hint = f" (quote it: YAML reads a bare {'on' if v else 'off'} as {str(v).lower()})"
        elif isinstance(v, int | float) and str(v) in options:
            hint = f" (quote it: write '{v}')"
        else:
            hint = ""
        raise ValueError(f"invalid {what} {v!r}: expected {listed}{hint}")

    return check


Address = Annotated[
    str, AfterValidator(_check_address), Field(examples=["127.0.0.1:8080", "[::1]:8080"])
]
Host = Annotated[str, AfterValidator(_check_host)]
Method = Annotated[str, AfterValidator(_check_method)]
Token = Annotated[str, AfterValidator(_check_token("header name"))]
Pseudonym = Annotated[str, AfterValidator(_check_token("pseudonym"))]
Cidr = Annotated[
    str, AfterValidator(check_cidr), Field(examples=["10.0.0.0/8", "192.0.2.7", "::1/128"])
]
FilePath = Annotated[str, AfterValidator(_check_file)]
"""A file path, not opened by the model (configs validate on any machine)."""
