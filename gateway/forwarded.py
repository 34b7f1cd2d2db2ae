"""Who the client is, and what the upstream is told about it.

Trust (issue: TLS-aware header injection). The socket peer is the only fact the
gateway knows first hand. When the peer is inside `trusted_proxies`, the hops it
added to X-Forwarded-For are believed, walking right to left, up to the first hop
that is not itself a trusted proxy: that one is the client (the "right-most
untrusted hop", as nginx's realip with `real_ip_recursive on`, and Envoy's
`xff_num_trusted_hops` do). Anything to its left was written by the client and is
kept for the record but never used. When the peer is not trusted, every header a
client could forge about itself (X-Forwarded-*, Forwarded, Client-Cert*, the
convenience certificate headers, X-Request-ID) is dropped and rebuilt by the
gateway. A hop that is not an IP address ends the walk at the hop to its right.

Forwarded (RFC 7239): `for`, `proto`, `host` and `by` pairs; an IPv6 node is written
quoted in brackets (section 6: `for="[2001:db8::1]"`), and any value that is not a
token is quoted (section 4).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CACHE_MAX = 4096


class TrustedProxies:
    """A CIDR list with a small cache, built once per config."""

    __slots__ = ("_cache", "networks")

    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def trusts(self, ip: str) -> bool:
        if not self.networks:
            return False
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            trusted = False
        else:
            trusted = any(addr in net for net in self.networks)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[ip] = trusted
        return trusted

    def resolve(self, peer_ip: str, xff: Sequence[str]) -> tuple[str, bool]:
        """(client address, whether the peer is trusted), per the module note."""
        if not self.trusts(peer_ip):
            return peer_ip, False
        client = peer_ip
        for value in reversed(xff):
            for hop in reversed(value.split(",")):
                hop = hop.strip()
                if not _is_ip(hop):
                    return client, True
                client = hop
                if not self.trusts(hop):
                    return client, True
        return client, True

    def __repr__(self) -> str:
        return f"<TrustedProxies {[str(n) for n in self.networks]}>"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def node(ip: str, port: int | None = None) -> str:
    """An RFC 7239 node, unquoted: IPv6 in brackets, then the port if any."""
    text = f"[{ip}]" if ":" in ip else ip
    return f"{text}:{port}" if port is not None else text


def quote(value: str) -> str:
    if _TOKEN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def forwarded_element(client_ip: str, proto: str, host: str, by: str | None) -> str:
    """One Forwarded element; `by` is a node already quoted (`quote(node(...))`, done
    once per listener)."""
    ip = f'"[{client_ip}]"' if ":" in client_ip else (client_ip or "unknown")
    element = f"for={ip};by={by};proto={proto}" if by else f"for={ip};proto={proto}"
    return f"{element};host={quote(host)}" if host else element
