"""JWT validation, called through the route's auth filter with a real Exchange.

Keys are real (tests/auth/conftest.py); the JWKS is a file; the wall clock is fake.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.filters.auth import AuthFilter, build_auth_filter
from gateway.filters.auth.jws import jwk_key
from tests.auth.conftest import WallClock
from tests.auth.support import (
    NOW,
    SigningKey,
    Terminal,
    b64,
    exchange,
    hs256_token,
    make_token,
    route_config,
)

ISS = "https://idp.example.com/"
SECRET = b"s" * 40


def good_claims(**over: Any) -> dict[str, Any]:
    claims = {"iss": ISS, "aud": "orders", "sub": "alice", "exp": NOW + 600, "nbf": NOW - 10}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def jwks_file(tmp_path: Path, keys: dict[str, SigningKey]) -> str:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [k.jwk() for k in keys.values()]}))
    return str(path)


def jwt_filter(clock: WallClock, jwt: dict[str, Any], tmp_path: Path | None = None) -> AuthFilter:
    cfg = route_config({"auth": {"jwt": jwt}})
    f = build_auth_filter(cfg, clock=clock)
    assert f is not None
    return f


def base(jwks_file: str, **over: Any) -> dict[str, Any]:
    return {
        "jwks_file": jwks_file,
        "issuer": ISS,
        "audiences": ["orders"],
        "leeway": "30s",
        "claims_to_headers": {"sub": "X-User-Id", "scope": "X-Scope"},
        **over,
    }


async def call(
    f: AuthFilter, token: str | None, *extra: tuple[str, str]
) -> tuple[int, Terminal, Any]:
    headers = [*extra] + ([("Authorization", f"Bearer {token}")] if token is not None else [])
    ex = exchange(route_config({}), headers)
    t = Terminal()
    reply = await f(ex, t)
    return reply.status, t, reply


# (id, alg, claims overrides, clock offset s, expected status, expected reason)
CASES = [
    ("rs256-valid", "RS256", {}, 0, 200, None),
    ("es256-valid", "ES256", {}, 0, 200, None),
    ("eddsa-valid", "EdDSA", {}, 0, 200, None),
    ("expired", "RS256", {"exp": NOW - 60}, 0, 401, "token_expired"),
    ("expired-within-leeway", "ES256", {"exp": NOW - 20}, 0, 200, None),
    ("not-yet-valid", "EdDSA", {"nbf": NOW + 120}, 0, 401, "token_not_yet_valid"),
    ("nbf-within-leeway", "RS256", {"nbf": NOW + 20}, 0, 200, None),
    ("wrong-issuer", "RS256", {"iss": "https://evil.example/"}, 0, 401, "wrong_issuer"),
    ("wrong-audience", "ES256", {"aud": "billing"}, 0, 401, "wrong_audience"),
    ("audience-in-list", "ES256", {"aud": ["billing", "orders"]}, 0, 200, None),
    ("no-audience", "ES256", {"aud": None}, 0, 401, "wrong_audience"),
    ("no-exp", "RS256", {"exp": None}, 0, 401, "claim_missing"),
    ("exp-not-a-number", "RS256", {"exp": "soon"}, 0, 401, "claim_invalid"),
]


@pytest.mark.parametrize(
    ("alg", "over", "offset", "status", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_claims(
    clock: WallClock,
    keys: dict[str, SigningKey],
    jwks_file: str,
    alg: str,
    over: dict[str, Any],
    offset: float,
    status: int,
    reason: str | None,
) -> None:
    f = jwt_filter(clock, base(jwks_file))
    clock.advance(offset)
    got, t, reply = await call(f, keys[alg].token(good_claims(**over)))
    assert got == status
    if reason is None:
        assert t.calls == 1 and f.failures == {}
    else:
        assert t.calls == 0 and f.failures == {reason: 1}
        assert reply.headers["WWW-Authenticate"].startswith(
            'Bearer realm="gateway", error="invalid_token"'
        )
        assert json.loads(reply.body)["error"] == "unauthorized"


def tamper(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(__import__("base64").urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "admin"
    return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"


def forged(keys: dict[str, SigningKey], other: SigningKey, kind: str) -> str:
    rsa_key = keys["RS256"]
    good = good_claims()
    if kind == "tampered-payload":
        return tamper(rsa_key.token(good))
    if kind == "other-key-same-kid":
        return other.token(good)
    if kind == "unknown-kid":
        return SigningKey("RS256", "rsa-9", other.key).token(good)
    if kind == "alg-none":
        return make_token(good, lambda _: b"", {"alg": "none", "kid": "rsa-1"})
    if kind == "alg-none-no-signature":
        return make_token(good, lambda _: b"", {"alg": "none"})[: -0 or None]
    if kind == "hs256-with-rsa-public-pem":  # the classic algorithm confusion
        return hs256_token(rsa_key.public_pem(), good, kid="rsa-1")
    if kind == "es256-header-on-rsa-kid":  # key type must match alg
        return make_token(good, rsa_key.sign, {"alg": "ES256", "kid": "rsa-1"})
    if kind == "rs256-header-ec-signature":
        return make_token(good, keys["ES256"].sign, {"alg": "RS256", "kid": "ec-1"})
    if kind == "alg-not-a-string":
        return make_token(good, rsa_key.sign, {"alg": ["RS256"], "kid": "rsa-1"})
    if kind == "crit-header":
        return rsa_key.token(good, crit=["exp"])
    if kind == "two-parts":
        return ".".join(rsa_key.token(good).split(".")[:2])
    if kind == "garbage-header":
        return "!!!." + ".".join(rsa_key.token(good).split(".")[1:])
    raise AssertionError(kind)


FORGERIES = [
    ("tampered-payload", "bad_signature"),
    ("other-key-same-kid", "bad_signature"),
    ("unknown-kid", "unknown_kid"),
    ("alg-none", "algorithm_refused"),
    ("alg-none-no-signature", "algorithm_refused"),
    ("hs256-with-rsa-public-pem", "algorithm_refused"),
    ("es256-header-on-rsa-kid", "unknown_kid"),
    ("rs256-header-ec-signature", "unknown_kid"),
    ("alg-not-a-string", "algorithm_refused"),
    ("crit-header", "token_malformed"),
    ("two-parts", "token_malformed"),
    ("garbage-header", "token_malformed"),
]


@pytest.mark.parametrize(("kind", "reason"), FORGERIES, ids=[k for k, _ in FORGERIES])
async def test_forgeries_are_refused(
    clock: WallClock,
    keys: dict[str, SigningKey],
    other_rsa: SigningKey,
    jwks_file: str,
    kind: str,
    reason: str,
) -> None:
    f = jwt_filter(clock, base(jwks_file))
    status, t, _ = await call(f, forged(keys, other_rsa, kind))
    assert (status, t.calls, f.failures) == (401, 0, {reason: 1})


async def test_hs256_confusion_with_a_secret_configured(
    clock: WallClock, keys: dict[str, SigningKey], jwks_file: str, tmp_path: Path
) -> None:
    """HS256 accepted (a secret is configured): a token 'signed' with the RSA public key
    as the HMAC secret still fails, since HS256 only ever uses the configured secret."""
    secret = tmp_path / "hs.secret"
    secret.write_bytes(SECRET + b"\n")
    f = jwt_filter(
        clock, base(jwks_file, hs256_secret_file=str(secret), algorithms=["RS256", "HS256"])
    )
    confused = hs256_token(keys["RS256"].public_pem(), good_claims(), kid="rsa-1")
    assert (await call(f, confused))[0] == 401
    assert f.failures == {"bad_signature": 1}
    assert (await call(f, hs256_token(SECRET, good_claims())))[0] == 200


def test_a_public_key_as_hs256_secret_is_refused_at_load(
    keys: dict[str, SigningKey], tmp_path: Path
) -> None:
    secret = tmp_path / "pem.secret"
    secret.write_bytes(keys["RS256"].public_pem())
    cfg = route_config({"auth": {"jwt": {"hs256_secret_file": str(secret)}}})
    with pytest.raises(ValueError, match="algorithm-confusion"):
        build_auth_filter(cfg)


def test_oct_keys_in_a_jwks_are_refused() -> None:
    with pytest.raises(ValueError, match="oct"):
        jwk_key({"kty": "oct", "k": b64(SECRET)})


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "token_missing"),
        ("Basic YWxpY2U6cHc=", "token_missing"),
        ("Bearer x.y", "token_malformed"),
    ],
    ids=["absent", "basic-scheme", "malformed"],
)
async def test_missing_or_malformed(
    clock: WallClock, jwks_file: str, header: str, reason: str
) -> None:
    f = jwt_filter(clock, base(jwks_file))
    extra = [("Authorization", header)] if header else []
    status, _, reply = await call(f, None, *extra)
    assert (status, f.failures) == (401, {reason: 1})
    if reason == "token_missing":  # RFC 6750 3.1: no error code without a token
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'


async def test_claims_forwarded_and_client_copies_removed(
    clock: WallClock, keys: dict[str, SigningKey], jwks_file: str
) -> None:
    f = jwt_filter(clock, base(jwks_file, tier_claim="plan"))
    token = keys["ES256"].token(good_claims(scope=["read", "write"], plan="gold"))
    spoof = [("X-User-Id", "root"), ("X-Scope", "admin")]
    status, t, _ = await call(f, token, *spoof)
    assert status == 200 and t.headers is not None
    assert t.headers.getall("X-User-Id") == ["alice"]
    assert t.headers.getall("X-Scope") == ['["read","write"]']
    assert "Authorization" not in t.headers  # forward_token: false
    assert t.principal == ("alice", "gold")
    # A token without the claim: the spoofed header is still gone.
    status, t, _ = await call(f, keys["ES256"].token(good_claims(scope=None)), *spoof)
    assert status == 200 and t.headers is not None
    assert "X-Scope" not in t.headers and t.headers["X-User-Id"] == "alice"
    # Refused requests lose the spoofed headers too (they never reach the upstream).


async def test_forward_token_keeps_authorization(
    clock: WallClock, keys: dict[str, SigningKey], jwks_file: str
) -> None:
    f = jwt_filter(clock, base(jwks_file, forward_token=True))
    token = keys["RS256"].token(good_claims())
    _, t, _ = await call(f, token)
    assert t.headers is not None and t.headers["Authorization"] == f"Bearer {token}"


async def test_cache_hit_still_checks_expiry(
    clock: WallClock, keys: dict[str, SigningKey], jwks_file: str
) -> None:
    f = jwt_filter(clock, base(jwks_file))
    check = f.checks[0]
    token = keys["RS256"].token(good_claims(exp=NOW + 100))
    assert (await call(f, token))[0] == 200
    assert len(check._cache) == 1  # type: ignore[attr-defined]
    clock.advance(100 + 29)  # inside the leeway: a cache hit
    assert (await call(f, token))[0] == 200
    clock.advance(2)  # past exp + leeway: dropped, verified again, refused as expired
    assert (await call(f, token))[0] == 401
    assert f.failures == {"token_expired": 1}
    assert len(check._cache) == 0  # type: ignore[attr-defined]


async def test_cache_is_bounded(
    clock: WallClock, keys: dict[str, SigningKey], jwks_file: str
) -> None:
    f = jwt_filter(clock, base(jwks_file, cache_max_tokens=3))
    tokens = [keys["EdDSA"].token(good_claims(sub=f"user-{i}")) for i in range(5)]
    for token in tokens:
        assert (await call(f, token))[0] == 200
    cache = f.checks[0]._cache  # type: ignore[attr-defined]
    assert list(cache) == tokens[2:]


async def test_a_failed_token_is_not_cached(
    clock: WallClock, keys: dict[str, SigningKey], jwks_file: str
) -> None:
    f = jwt_filter(clock, base(jwks_file))
    token = keys["RS256"].token(good_claims(nbf=NOW + 300))
    assert (await call(f, token))[0] == 401
    clock.advance(300)
    assert (await call(f, token))[0] == 200
