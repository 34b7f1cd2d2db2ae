"""ApiKeyCheck: a key from a header or a query parameter, checked against SHA-256 hashes.

The key set is `{sha256(key): (name, tier)}`, from the config's `keys` and the key
file, built at load. A request's key is hashed and looked up: the lookup's timing can
tell an attacker about the hash, never about a key (SHA-256 is preimage resistant),
which is why no constant-time compare is needed here, and why keys are stored hashed:
neither the config, the file nor a memory dump holds a usable key. A key is never
logged; the principal is the key's name.

The header is read first, then the query parameter. With `strip` (the default) the
key is removed from the request sent upstream (the header, or the query parameter:
the rest of the query is kept byte for byte).

Key file: one key per line, `<name> sha256:<64 hex> [<tier>]`; blank lines and lines
starting with '#' are skipped; an error names the file and line.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote_plus

from gateway.config.auth_model import ApiKeys, parse_key_hash
from gateway.config.fields import NAME_PATTERN
from gateway.exchange import Exchange
from gateway.filters.auth.common import Failure

__all__ = ["ApiKeyCheck", "load_key_file"]

_NAME = re.compile(NAME_PATTERN)
KeyEntry = tuple[str, bytes, str | None]  # name, sha256 digest, tier


def load_key_file(path: str) -> list[KeyEntry]:
    """The keys of a key file; ValueError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read the key file {path!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the key file {path!r} is not UTF-8") from None
    out = []
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path}:{n}"
        if len(fields) not in (2, 3):
            raise ValueError(f"{where}: expected '<name> sha256:<hex> [<tier>]'")
        name, digest, tier = fields[0], fields[1], fields[2] if len(fields) == 3 else None
        if not _NAME.match(name) or (tier is not None and not _NAME.match(tier)):
            raise ValueError(f"{where}: names and tiers are [A-Za-z0-9_.-]")
        try:
            out.append((name, parse_key_hash(digest), tier))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return out


def _query_value(query: str, name: str) -> str | None:
    for pair in query.split("&"):
        k, _, v = pair.partition("=")
        if unquote_plus(k) == name:
            return unquote_plus(v)
    return None


def _without(query: str, name: str) -> str:
    return "&".join(p for p in query.split("&") if unquote_plus(p.partition("=")[0]) != name)


class ApiKeyCheck:
    """A route's API keys (hashes only) and where the key is read from."""

    __slots__ = ("by_hash", "header", "invalid", "missing", "query", "strip")

    def __init__(self, cfg: ApiKeys, file_keys: list[KeyEntry] | None = None) -> None:
        self.header = cfg.header
        self.query = cfg.query
        self.strip = cfg.strip
        challenge = f'ApiKey realm="{cfg.realm}"'
        self.missing = Failure(401, "key_missing", "an API key is required", challenge)
        self.invalid = Failure(401, "key_invalid", "the API key is not valid", challenge)
        entries = [(k.name, parse_key_hash(k.hash), k.tier) for k in cfg.keys]
        entries += file_keys or []
        self.by_hash: dict[bytes, tuple[str, str | None]] = {}
        names: set[str] = set()
        for name, digest, tier in entries:
            if name in names:
                raise ValueError(f"API key name {name!r} is given twice")
            if digest in self.by_hash:
                raise ValueError(f"API keys {self.by_hash[digest][0]!r} and {name!r} are the same")
            names.add(name)
            self.by_hash[digest] = (name, tier)

    async def __call__(self, ex: Exchange) -> Failure | None:
        key = None
        from_header = False
        if self.header is not None:
            key = ex.headers.get(self.header)
            from_header = bool(key)
        if not key and self.query is not None and ex.query:
            key = _query_value(ex.query, self.query)
        if not key:
            return self.missing
        entry = self.by_hash.get(hashlib.sha256(key.strip().encode("utf-8", "replace")).digest())
        if entry is None:
            return self.invalid
        ex.principal, ex.principal_tier = entry
        if self.strip:
            if from_header:
                assert self.header is not None
                del ex.headers[self.header]
            elif self.query is not None:
                ex.query = _without(ex.query, self.query)
        return None

    def __repr__(self) -> str:
        return (
            f"<ApiKeyCheck header={self.header} query={self.query} keys={len(self.by_hash)} "
            f"strip={self.strip}>"
        )
