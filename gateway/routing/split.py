"""Version split: which version of a service a request goes to, sticky per client.

How: the client key (cookie, header, API key or client address, per `sticky`) is
hashed with a 64-bit BLAKE2b of "<service>:<key>" into 10,000 buckets. Versions own
consecutive bucket ranges: the rolled-out version (the rollout's, else the first
non-baseline) owns [0, w*100), the other non-baseline versions follow in config
order, and the baseline owns the top, up to 10,000. So a client keeps its version
while the weights stay, and raising the rolled-out version's weight only moves
clients from the baseline to it, never back (its range grows, nothing moves inside
it). The hash is the same in every worker, on every host and across restarts.
Salting with the service name splits services independently of each other.

A request without the key: `cookie` with `set_cookie` gets a fresh random id, is
split on it, and the reply sets the cookie; otherwise the client address is used.

Overrides (`override.header` / `override.cookie`, the header wins): `always` sends to
the rolled-out version, `never` to the baseline, a version's name to that version;
any other value is ignored. `version_header` names the version on the response.

Weights are set at load (from the config, or the rollout's current step) and by the
rollout controller (`set_weight`): an int store per version, so requests on either
side of a change see one consistent table.

Known gap: with three or more versions, raising a middle version's weight shifts the
ranges after it; the never-back guarantee holds for the rolled-out version only.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from gateway.errors import GatewayError
from gateway.exchange import Exchange, Reply

if TYPE_CHECKING:
    from gateway.rollout.stats import VersionStats
    from gateway.upstream.service import Upstream

__all__ = ["BUCKETS", "KeyOf", "Version", "VersionSplit", "bucket_of", "cookie_value", "key_of"]

BUCKETS = 10_000
KeyOf = Callable[[Exchange], str | None]
Send = Callable[[Exchange, "Upstream", "KeyOf | None"], Awaitable[Reply]]


def bucket_of(text: str) -> int:
    """0..9999, stable everywhere (BLAKE2b, not Python's salted hash())."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def cookie_value(ex: Exchange, name: str) -> str | None:
    prefix = f"{name}="
    for header in ex.headers.getall("Cookie", ()):
        for part in header.split(";"):
            part = part.strip()
            if part.startswith(prefix):
                return part[len(prefix) :]
    return None


def key_of(kind: str, name: str) -> KeyOf:
    """A reader of a request key, built at load: 'header', 'api_key', 'cookie', 'client_ip'."""
    if kind in ("header", "api_key"):
        return lambda ex: ex.headers.get(name) or None
    if kind == "cookie":
        return lambda ex: cookie_value(ex, name) or None
    return lambda ex: ex.client_ip


class Version:
    """One version: its upstream (regions, endpoints, breakers), share and stats."""

    __slots__ = ("buckets", "hash_key_of", "name", "stats", "upstream")

    def __init__(self, name: str, upstream: Upstream, stats: VersionStats) -> None:
        self.name = name
        self.upstream = upstream
        self.stats = stats
        self.buckets = 0  # share in hundredths of a percent
        hk = upstream.hash_key
        self.hash_key_of: KeyOf | None = key_of(*hk) if hk is not None else None

    @property
    def weight(self) -> float:
        return self.buckets / 100

    def __repr__(self) -> str:
        return f"<Version {self.name} -> {self.upstream.name} {self.weight:g}% {self.stats!r}>"


class VersionSplit:
    """A service's versions and how a request picks one; shared by its routes."""

    __slots__ = (
        "_bounds",
        "_key",
        "_override_cookie",
        "_override_header",
        "baseline",
        "by_name",
        "cookie",
        "name",
        "set_cookies",
        "target",
        "version_header",
        "versions",
    )

    def __init__(
        self,
        name: str,
        versions: Sequence[Version],
        *,
        baseline: str,
        target: str | None = None,
        sticky: tuple[str, str] = ("client_ip", ""),
        set_cookie_max_age_s: float | None = None,
        override_header: str | None = None,
        override_cookie: str | None = None,
        version_header: str | None = None,
    ) -> None:
        self.name = name
        self.by_name = {v.name: v for v in versions}
        self.baseline = self.by_name[baseline]
        others = [v for v in versions if v is not self.baseline]
        if target is not None:
            others.sort(key=lambda v: v.name != target)  # the rolled-out one first
        self.target = others[0]
        self.versions: tuple[Version, ...] = (*others, self.baseline)
        kind, key_name = sticky
        self._key = key_of(kind, key_name)
        self.cookie: tuple[str, str] | None = None  # (name, attributes) when set
        if kind == "cookie" and set_cookie_max_age_s is not None:
            attrs = f"; Path=/; Max-Age={int(set_cookie_max_age_s)}; HttpOnly; SameSite=Lax"
            self.cookie = (key_name, attrs)
        self._override_header = override_header
        self._override_cookie = override_cookie
        self.version_header = version_header
        self.set_cookies = 0  # cookies handed out
        self._bounds: list[int] = []
        self._rebuild()

    def set_weights(self, weights: dict[str, float]) -> None:
        """Percents by version name; the baseline takes what the others leave."""
        for v in self.versions:
            if v is not self.baseline:
                v.buckets = round(weights.get(v.name, 0.0) * 100)
        self._rebuild()

    def set_weight(self, percent: float) -> None:
        """The rolled-out version's share (a two-version service); the baseline the rest."""
        self.set_weights({self.target.name: percent})

    def _rebuild(self) -> None:
        bounds = []
        total = 0
        for v in self.versions[:-1]:
            total = min(BUCKETS, total + v.buckets)
            bounds.append(total)
        self.baseline.buckets = BUCKETS - total
        bounds.append(BUCKETS)
        self._bounds = bounds

    def override(self, ex: Exchange) -> Version | None:
        value = None
        if self._override_header is not None:
            value = ex.headers.get(self._override_header)
        if value is None and self._override_cookie is not None:
            value = cookie_value(ex, self._override_cookie)
        if value is None:
            return None
        if value == "always":
            return self.target
        if value == "never":
            return self.baseline
        return self.by_name.get(value)

    def choose(self, ex: Exchange) -> tuple[Version, str | None]:
        """(version, cookie value to set or None)."""
        new_cookie = None
        key = self._key(ex)
        if key is None:
            if self.cookie is not None:
                key = new_cookie = secrets.token_hex(8)
            else:
                key = ex.client_ip
        if self._override_header is not None or self._override_cookie is not None:
            forced = self.override(ex)
            if forced is not None:
                return forced, new_cookie
        b = bucket_of(f"{self.name}:{key}")
        return self.versions[bisect.bisect_right(self._bounds, b)], new_cookie

    async def forward(self, ex: Exchange, send: Send) -> Reply:
        """Pick a version, send to its upstream, record the outcome and latency."""
        version, new_cookie = self.choose(ex)
        stats = version.stats
        loop_time = asyncio.get_running_loop().time
        start = loop_time()
        try:
            reply = await send(ex, version.upstream, version.hash_key_of)
        except GatewayError:
            stats.record(502, loop_time() - start)  # the client gets a 5xx for it
            raise
        stats.record(reply.status, loop_time() - start)
        ex.state["version"] = version.name
        if self.version_header is not None:
            reply.headers[self.version_header] = version.name
        if new_cookie is not None and self.cookie is not None:
            self.set_cookies += 1
            reply.headers.add("Set-Cookie", f"{self.cookie[0]}={new_cookie}{self.cookie[1]}")
        return reply

    def __repr__(self) -> str:
        parts = ", ".join(f"{v.name}={v.weight:g}%" for v in self.versions)
        return f"<VersionSplit {self.name} [{parts}]>"
