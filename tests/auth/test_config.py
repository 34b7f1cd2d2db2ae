"""The auth and cors sections, and rate-limit principals and tiers: defaults, and each
constraint's message at its path."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import validate_data
from gateway.errors import ConfigErrors
from tests.auth.support import key_hash

HASH = key_hash("k")


def data(route: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [{"address": "127.0.0.1:8080"}],
        "upstreams": {"up": {"endpoints": ["http://127.0.0.1:9101"]}},
        "routes": [{"name": "api", "upstream": "up", **route}],
    }


def test_defaults() -> None:
    cfg = validate_data(
        data(
            {
                "auth": {
                    "api_keys": {
                        "keys": [{"name": "a", "hash": HASH.upper().replace("SHA", "sha")}]
                    },
                    "jwt": {"jwks_url": "https://idp.example.com/jwks.json"},
                    "webhook": {"header": "X-Sig", "secrets_file": "/etc/s"},
                },
                "cors": {"origins": ["https://App.Example.com"]},
            }
        )
    )
    r = cfg.routes[0]
    assert r.auth is not None and r.auth.api_keys is not None and r.auth.jwt is not None
    assert r.auth.api_keys.header == "X-API-Key" and r.auth.api_keys.strip
    assert r.auth.api_keys.keys[0].hash == HASH  # normalised to lower case
    j = r.auth.jwt
    assert j.accepted == ("RS256", "ES256", "EdDSA")
    assert (j.leeway, j.jwks_refresh, j.jwks_min_refresh, j.jwks_max_stale) == (30, 300, 30, 3600)
    assert j.required_claims == ["exp"] and not j.forward_token
    assert r.auth.webhook is not None and r.auth.webhook.max_body_bytes == 1 << 20
    assert r.cors is not None and r.cors.origins == ["https://app.example.com"]
    assert r.cors.methods == ["GET", "HEAD", "POST"] and r.cors.max_age == 600


def test_tiers() -> None:
    cfg = validate_data(
        data(
            {
                "auth": {"api_keys": {"keys": [{"name": "a", "hash": HASH, "tier": "gold"}]}},
                "rate_limits": [
                    {
                        "name": "per-key",
                        "rate": "10/min",
                        "key": ["principal"],
                        "tiers": {"gold": "100/min", "silver": {"rate": "1/s", "burst": 5}},
                    }
                ],
            }
        )
    )
    p = cfg.routes[0].rate_limits[0]
    assert p.tier_limits() == {"gold": (100 / 60, 100), "silver": (1.0, 5)}


JWKS = {"jwks_file": "/etc/jwks.json"}
# (id, route keys, expected "path: message")
ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("auth-empty", {"auth": {}}, "routes[0].auth: give at least one of api_keys, jwt, webhook"),
    ("key-hash-bad", {"auth": {"api_keys": {"keys": [{"name": "a", "hash": "abc"}]}}},
     "routes[0].auth.api_keys.keys[0].hash: invalid key hash: expected 'sha256:<64 hex "
     "digits>' (printf %s \"$KEY\" | sha256sum)"),
    ("key-no-source", {"auth": {"api_keys": {"header": "X-Key"}}},
     "routes[0].auth.api_keys: give keys or a file of keys"),
    ("key-nowhere", {"auth": {"api_keys": {"header": None, "file": "/k"}}},
     "routes[0].auth.api_keys: give a header or a query parameter to read the key from"),
    ("key-duplicate", {"auth": {"api_keys": {"keys": [{"name": "a", "hash": HASH},
                                                       {"name": "a", "hash": HASH}]}}},
     "routes[0].auth.api_keys: duplicate key name 'a'"),
    ("key-clear-text", {"auth": {"api_keys": {"keys": [{"name": "a", "key": "k"}]}}},
     "routes[0].auth.api_keys.keys[0].hash: required ;; "
     "routes[0].auth.api_keys.keys[0].key: unknown key"),
    ("jwt-no-keys", {"auth": {"jwt": {}}},
     "routes[0].auth.jwt: give jwks_file, jwks_url or hs256_secret_file"),
    ("jwt-two-jwks", {"auth": {"jwt": {**JWKS, "jwks_url": "https://x/jwks"}}},
     "routes[0].auth.jwt: give jwks_file or jwks_url, not both"),
    ("jwt-hs256-no-secret", {"auth": {"jwt": {**JWKS, "algorithms": ["HS256"]}}},
     "routes[0].auth.jwt: HS256 needs hs256_secret_file"),
    ("jwt-alg-none", {"auth": {"jwt": {**JWKS, "algorithms": ["none"]}}},
     "routes[0].auth.jwt.algorithms[0]: invalid algorithm 'none': expected 'RS256', "
     "'ES256', 'EdDSA' or 'HS256'"),
    ("jwt-rs-without-jwks", {"auth": {"jwt": {"hs256_secret_file": "/s",
                                               "algorithms": ["RS256", "HS256"]}}},
     "routes[0].auth.jwt: RS256, ES256 and EdDSA need jwks_file or jwks_url"),
    ("jwt-url-scheme", {"auth": {"jwt": {"jwks_url": "file:///etc/jwks"}}},
     "routes[0].auth.jwt.jwks_url: invalid jwks_url 'file:///etc/jwks': expected an http(s) URL"),
    ("webhook-style", {"auth": {"webhook": {"header": "X", "secrets_file": "/s",
                                             "style": "slack"}}},
     "routes[0].auth.webhook.style: invalid style 'slack': expected 'plain' or 'stripe'"),
    ("cors-star-credentials", {"cors": {"origins": ["*"], "credentials": True}},
     "routes[0].cors: origins '*' with credentials: true is refused (browsers reject it); "
     "list the origins"),
    ("cors-origin-path", {"cors": {"origins": ["https://app.example.com/"]}},
     "routes[0].cors.origins: invalid origin 'https://app.example.com/': expected "
     "'https://host[:port]', 'https://*.example.com' or '*'"),
    ("principal-without-auth", {"rate_limits": [{"name": "p", "rate": "1/s",
                                                  "key": ["principal"]}]},
     "routes[0].rate_limits[0].key: 'principal' needs the route's auth.api_keys or auth.jwt"),
    ("tiers-without-auth", {"rate_limits": [{"name": "p", "rate": "1/s",
                                              "tiers": {"gold": "5/s"}}]},
     "routes[0].rate_limits[0].tiers: tiers need the route's auth.api_keys or auth.jwt"),
    ("tier-rate-bad", {"auth": {"jwt": JWKS}, "rate_limits": [
        {"name": "p", "rate": "1/s", "tiers": {"gold": "5/day"}}]},
     "routes[0].rate_limits[0].tiers.gold.rate: invalid rate '5/day': expected '<n>/<s|min|h>', "
     "like '20/s', '1000/min' or '5/h'"),
]  # fmt: skip


@pytest.mark.parametrize(("route", "expected"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_errors_at_their_paths(route: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        validate_data(data(route), "test.yaml")
    assert [str(e) for e in info.value.errors] == expected.split(" ;; ")
