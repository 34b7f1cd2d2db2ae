"""JwtCheck: a route's bearer-token validation, with a cache of verified tokens.

Per request: the configured claim headers are removed from the request whatever
happens (a client must never supply X-User-Id itself), then the token is read
(`Authorization: Bearer <token>`, or the bare value of another header).

A token seen before is a dict lookup in the cache (token -> `_Verified`: the principal,
tier and claim headers to send, and `until`), like Envoy jwt_authn's token cache: a
hit costs the lookup, one time comparison and the header edits. `until` is the
token's exp plus leeway, capped at `CACHE_MAX_AGE_S` after it was verified (a token
without exp is verified again then); a hit past `until` is dropped and verified again,
so an expired token is refused with the right reason. The cache holds at most
`cache_max_tokens`, the oldest entry leaving first. A fetched key set that differs
from the one before (JwksSource.generation) empties the cache: a key removed from the
JWKS stops vouching for the tokens it signed at the next request.

A miss verifies in full, in this order (RFC 7519 7.2, RFC 8725 3.1):
1. three base64url parts, a JSON object header without `crit`;
2. `alg` among the route's algorithms (`none` never is), `kid` a string if present;
3. the keys for (kid, alg): the HS256 secret, or the JWKS (which may fetch, see
   jwks.py); no key set at all -> 503, no key with that kid -> 401 unknown_kid;
4. the signature, with keys of the token's algorithm only (jws.py);
5. the claims: a JSON object; exp (a number; now <= exp + leeway), nbf (now >= nbf -
   leeway), iss, aud (a string or a list, one of `audiences`), required claims present.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.config.auth_model import Jwt
from gateway.exchange import Exchange
from gateway.filters.auth.common import Failure
from gateway.filters.auth.jwks import JwksSource
from gateway.filters.auth.jws import VerifyKey, b64url

__all__ = ["CACHE_MAX_AGE_S", "JwtCheck"]

CACHE_MAX_AGE_S = 3600.0
_MAX_TOKEN = 16 * 1024


def _bearer(reason: str, message: str, status: int = 401, error: str = "invalid_token") -> Failure:
    # RFC 6750 3: no error code when the request carried no token at all.
    challenge = 'Bearer realm="gateway"'
    if error:
        challenge += f', error="{error}", error_description="{message}"'
    return Failure(status, reason, message, challenge if status == 401 else None)


MISSING = _bearer("token_missing", "a bearer token is required", error="")
MALFORMED = _bearer("token_malformed", "the token is not a well-formed JWT")
BAD_ALG = _bearer("algorithm_refused", "the token's algorithm is not accepted")
UNKNOWN_KID = _bearer("unknown_kid", "the token's key is unknown")
BAD_SIGNATURE = _bearer("bad_signature", "the token's signature is invalid")
EXPIRED = _bearer("token_expired", "the token has expired")
NOT_YET = _bearer("token_not_yet_valid", "the token is not valid yet")
BAD_ISSUER = _bearer("wrong_issuer", "the token's issuer is not accepted")
BAD_AUDIENCE = _bearer("wrong_audience", "the token is not meant for this audience")
MISSING_CLAIM = _bearer("claim_missing", "the token lacks a required claim")
BAD_CLAIM = _bearer("claim_invalid", "a claim of the token has the wrong type")
UNAVAILABLE = Failure(503, "jwks_unavailable", "the token keys are unavailable", None)


def _header_value(v: Any) -> str | None:
    """A claim as a header value: strings as they are, the rest as JSON; None if unsafe."""
    text = v if isinstance(v, str) else orjson.dumps(v).decode()
    if any(c < " " or c == "\x7f" for c in text):  # no CR/LF/NUL: header injection
        return None
    return text


class _Verified:
    __slots__ = ("headers", "principal", "tier", "until")

    def __init__(
        self, principal: str | None, tier: str | None, headers: tuple[tuple[str, str], ...]
    ) -> None:
        self.principal = principal
        self.tier = tier
        self.headers = headers
        self.until = 0.0


class JwtCheck:
    """One route's JWT settings, key sources and verified-token cache."""

    __slots__ = (
        "_cache",
        "_generation",
        "algorithms",
        "audiences",
        "bearer",
        "cache_max",
        "claim_headers",
        "clock",
        "forward_token",
        "header",
        "hs256",
        "issuer",
        "jwks",
        "leeway_s",
        "required",
        "tier_claim",
    )

    def __init__(
        self,
        cfg: Jwt,
        *,
        jwks: JwksSource | None,
        hs256: VerifyKey | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.header = cfg.header
        self.bearer = cfg.header.lower() == "authorization"
        self.algorithms = frozenset(cfg.accepted)
        self.jwks = jwks
        self.hs256 = [hs256] if hs256 is not None else []
        self.issuer = cfg.issuer
        self.audiences = frozenset(cfg.audiences)
        self.required = tuple(cfg.required_claims)
        self.leeway_s = cfg.leeway
        self.claim_headers = tuple(cfg.claims_to_headers.items())
        self.tier_claim = cfg.tier_claim
        self.forward_token = cfg.forward_token
        self.cache_max = cfg.cache_max_tokens
        self.clock = clock  # wall time: exp and nbf are unix seconds
        self._cache: dict[str, _Verified] = {}
        self._generation = jwks.generation if jwks is not None else 0

    async def __call__(self, ex: Exchange) -> Failure | None:
        headers = ex.headers
        for _, name in self.claim_headers:
            if name in headers:
                del headers[name]
        raw = headers.get(self.header)
        if not raw:
            return MISSING
        if self.bearer:
            scheme, _, token = raw.partition(" ")
            if scheme.lower() != "bearer":
                return MISSING
            token = token.strip()
        else:
            token = raw.strip()
        now = self.clock()
        if self.jwks is not None and self.jwks.generation != self._generation:
            self._cache.clear()  # another key set: verify again
            self._generation = self.jwks.generation
        v = self._cache.get(token)
        if v is None or now >= v.until:
            if v is not None:
                del self._cache[token]
            result = await self._verify(token, now)
            if isinstance(result, Failure):
                return result
            v = result
            if self.cache_max:
                if len(self._cache) >= self.cache_max:
                    del self._cache[next(iter(self._cache))]  # the oldest entry
                self._cache[token] = v
        ex.principal = v.principal
        if v.tier is not None:
            ex.principal_tier = v.tier
        for name, value in v.headers:
            headers[name] = value
        if not self.forward_token:
            del headers[self.header]
        return None

    async def _verify(self, token: str, now: float) -> _Verified | Failure:
        parts = token.split(".")
        if len(parts) != 3 or len(token) > _MAX_TOKEN or not token.isascii():
            return MALFORMED
        try:
            header = orjson.loads(b64url(parts[0]))
            signature = b64url(parts[2])
        except ValueError:
            return MALFORMED
        if not isinstance(header, dict) or "crit" in header:
            return MALFORMED
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:  # 'none', confusion, ...
            return BAD_ALG
        if kid is not None and not isinstance(kid, str):
            return MALFORMED
        if alg == "HS256":
            keys: list[VerifyKey] | None = self.hs256
        elif self.jwks is not None:
            keys = await self.jwks.keys_for(kid, alg)
            if keys is None:
                return UNAVAILABLE
        else:
            keys = []
        if not keys:
            return UNKNOWN_KID
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
        if not any(k.verify(signing_input, signature) for k in keys):
            return BAD_SIGNATURE
        try:
            claims = orjson.loads(b64url(parts[1]))
        except ValueError:
            return MALFORMED
        if not isinstance(claims, dict):
            return MALFORMED
        return self._claims(claims, now)

    def _claims(self, claims: dict[str, Any], now: float) -> _Verified | Failure:
        for name in self.required:
            if name not in claims:
                return MISSING_CLAIM
        leeway = self.leeway_s
        until = now + CACHE_MAX_AGE_S
        exp = claims.get("exp")
        if exp is not None:
            if not isinstance(exp, int | float) or isinstance(exp, bool):
                return BAD_CLAIM
            if now > exp + leeway:
                return EXPIRED
            until = min(until, exp + leeway)
        nbf = claims.get("nbf")
        if nbf is not None:
            if not isinstance(nbf, int | float) or isinstance(nbf, bool):
                return BAD_CLAIM
            if now < nbf - leeway:
                return NOT_YET
        if self.issuer is not None and claims.get("iss") != self.issuer:
            return BAD_ISSUER
        if self.audiences:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(isinstance(a, str) and a in self.audiences for a in auds):
                return BAD_AUDIENCE
        sub = claims.get("sub")
        principal = sub if isinstance(sub, str) and sub else None
        tier = None
        if self.tier_claim is not None:
            t = claims.get(self.tier_claim)
            tier = t if isinstance(t, str) and t else None
        forwarded = []
        for claim, name in self.claim_headers:
            if claim in claims:
                value = _header_value(claims[claim])
                if value is None:
                    return BAD_CLAIM
                forwarded.append((name, value))
        v = _Verified(principal, tier, tuple(forwarded))
        v.until = until
        return v

    def __repr__(self) -> str:
        return (
            f"<JwtCheck {self.header} algs={sorted(self.algorithms)} iss={self.issuer} "
            f"aud={sorted(self.audiences)} cached={len(self._cache)} jwks={self.jwks!r}>"
        )
