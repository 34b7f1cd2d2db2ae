"""JwksSource: a JWKS from a file (read at load) or a URL (fetched, cached, refreshed).

URL sources, all times from the injected monotonic `clock`:

- the first token that needs a key waits for the first fetch (one fetch however many
  requests wait: single flight);
- once `refresh_s` has passed since the last good fetch, the next lookup starts a
  refresh in the background and is answered from the keys at hand;
- a token whose `kid` is not in the set refetches at once, but at most once per
  `min_refresh_s` (counted from the last attempt, good or not), so a flood of tokens
  with made-up kids costs one fetch per interval, not one per request;
- a failed fetch keeps the last good key set for `max_stale_s` past its refresh time
  (`fetched_at + refresh_s + max_stale_s`); past that, and with no key set at all,
  `keys_for` answers None and the filter answers 503 (not 401: it is not the caller's
  fault). A failed fetch is logged as a warning; the body and status are never trusted
  beyond parsing.

The fetch uses aiohttp's client (a session per fetch: fetches are minutes apart),
bounded by `timeout_s` and `MAX_JWKS_BYTES`. Sources are shared by URL and settings
(`shared_source`, a WeakValueDictionary), so routes naming the same URL and a reload
that keeps it reuse the cached keys instead of refetching.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable

import orjson

from gateway.filters.auth.jws import VerifyKey, parse_jwks

__all__ = ["MAX_JWKS_BYTES", "JwksSource", "shared_source"]

log = logging.getLogger("gateway.auth")

MAX_JWKS_BYTES = 1 << 20


class JwksSource:
    """One key set; static (file) or fetched from `url`."""

    __slots__ = (
        "__weakref__",
        "_attempted",
        "_by_kid",
        "_doc",
        "_keys",
        "_task",
        "clock",
        "failures",
        "fetched_at",
        "fetches",
        "generation",
        "max_stale_s",
        "min_refresh_s",
        "refresh_s",
        "timeout_s",
        "url",
    )

    def __init__(
        self,
        *,
        url: str | None = None,
        keys: list[VerifyKey] | None = None,
        refresh_s: float = 300.0,
        min_refresh_s: float = 30.0,
        max_stale_s: float = 3600.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (url is None) == (keys is None):
            raise ValueError("a JWKS source has a url or keys")
        self.url = url
        self.refresh_s = refresh_s
        self.min_refresh_s = min_refresh_s
        self.max_stale_s = max_stale_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.fetched_at: float | None = None  # the last good fetch
        self._attempted = -float("inf")  # the last fetch attempt
        self.fetches = 0  # attempts made
        self.failures = 0  # attempts that failed
        self._task: asyncio.Task[None] | None = None
        self._keys: list[VerifyKey] | None = None
        self._by_kid: dict[str, list[VerifyKey]] = {}
        # Bumped whenever a different key set is installed: caches of tokens verified
        # with the old set (JwtCheck) are dropped, so a key removed from the set stops
        # vouching for the tokens it signed at the next request.
        self.generation = 0
        self._doc: bytes | None = None
        if keys is not None:
            self._install(keys)

    @classmethod
    def from_file(cls, path: str) -> JwksSource:
        """A static key set; ValueError naming the problem."""
        try:
            with open(path, "rb") as f:
                doc = orjson.loads(f.read(MAX_JWKS_BYTES + 1))
        except OSError as e:
            raise ValueError(f"cannot read the JWKS file {path!r}: {e.strerror}") from None
        except orjson.JSONDecodeError as e:
            raise ValueError(f"the JWKS file {path!r} is not JSON: {e}") from None
        keys = parse_jwks(doc, lambda i, why: log.warning("%s: key %d skipped: %s", path, i, why))
        return cls(keys=keys)

    def _install(self, keys: list[VerifyKey]) -> None:
        by_kid: dict[str, list[VerifyKey]] = {}
        for k in keys:
            if k.kid is not None:
                by_kid.setdefault(k.kid, []).append(k)
        self._keys, self._by_kid = keys, by_kid
        self.generation += 1

    def _match(self, kid: str | None, alg: str) -> list[VerifyKey]:
        if kid is not None:
            return [k for k in self._by_kid.get(kid, ()) if k.alg == alg]
        return [k for k in self._keys or () if k.alg == alg]

    async def keys_for(self, kid: str | None, alg: str) -> list[VerifyKey] | None:
        """Keys that may have signed a token with `kid` and `alg` ([] none: unknown kid);
        None when no usable key set is at hand (first fetch failed, or too stale)."""
        if self.url is None:
            return self._match(kid, alg)
        now = self.clock()
        if self.fetched_at is None or now > self.fetched_at + self.refresh_s + self.max_stale_s:
            if now - self._attempted >= self.min_refresh_s or self._task is not None:
                await self.refresh()
            now = self.clock()
            if self.fetched_at is None or now > self.fetched_at + self.refresh_s + self.max_stale_s:
                return None
        elif now >= self.fetched_at + self.refresh_s and self._task is None:
            self._start()  # in the background; this lookup uses the keys at hand
        found = self._match(kid, alg)
        if not found and kid is not None and now - self._attempted >= self.min_refresh_s:
            await self.refresh()  # a new signing key may have been published
            found = self._match(kid, alg)
        return found

    def _start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._fetch())
        return self._task

    async def refresh(self) -> None:
        """Fetch now (joining a fetch already running); never raises."""
        await asyncio.shield(self._start())

    async def _fetch(self) -> None:
        import aiohttp

        assert self.url is not None
        self._attempted = self.clock()
        self.fetches += 1
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.url, allow_redirects=False) as resp,
            ):
                if resp.status != 200:
                    raise ValueError(f"status {resp.status}")
                data = b""
                while chunk := await resp.content.read(65536):
                    data += chunk
                    if len(data) > MAX_JWKS_BYTES:
                        raise ValueError(f"key set over {MAX_JWKS_BYTES} bytes")
            doc = orjson.loads(data)
            keys = parse_jwks(
                doc, lambda i, why: log.warning("%s: key %d skipped: %s", self.url, i, why)
            )
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            # orjson.JSONDecodeError is a ValueError
            self.failures += 1
            log.warning("JWKS fetch from %s failed: %s", self.url, e or type(e).__name__)
        else:
            if data != self._doc:  # an unchanged document keeps the verified tokens
                self._doc = data
                self._install(keys)
            self.fetched_at = self.clock()
            log.info("JWKS fetched from %s: %d key(s)", self.url, len(keys))
        finally:
            self._task = None

    def __repr__(self) -> str:
        where = self.url or "file"
        n = len(self._keys) if self._keys is not None else 0
        return (
            f"<JwksSource {where} keys={n} fetched_at={self.fetched_at} "
            f"fetches={self.fetches} failures={self.failures}>"
        )


_shared: weakref.WeakValueDictionary[tuple[object, ...], JwksSource] = weakref.WeakValueDictionary()


def shared_source(
    url: str, refresh_s: float, min_refresh_s: float, max_stale_s: float, timeout_s: float
) -> JwksSource:
    """The live source for these settings, or a new one (kept while a filter uses it)."""
    key = (url, refresh_s, min_refresh_s, max_stale_s, timeout_s)
    src = _shared.get(key)
    if src is None:
        src = JwksSource(
            url=url,
            refresh_s=refresh_s,
            min_refresh_s=min_refresh_s,
            max_stale_s=max_stale_s,
            timeout_s=timeout_s,
        )
        _shared[key] = src
    return src
