"""Edge authentication config: a route's `auth` section (API keys, JWT, signed webhooks).

    auth:
      api_keys:
        header: X-API-Key          # and/or query: api_key
        keys:                      # SHA-256 of the key, never the key itself
          - {name: billing, hash: "sha256:9f86d0...", tier: gold}
        file: /etc/gateway/keys.txt  # lines '<name> sha256:<hex> [<tier>]', '#' comments
      jwt:
        jwks_url: https://idp.example.com/.well-known/jwks.json   # or jwks_file
        issuer: https://idp.example.com/
        audiences: [orders-api]
        claims_to_headers: {sub: X-User-Id}
      webhook:
        header: Stripe-Signature
        style: stripe              # 't=<unix>,v1=<hex>' over '<t>.<body>'; plain: body only
        secrets_file: /etc/gateway/stripe-secrets.txt

Every configured check must pass (api_keys, then jwt, then webhook: cheapest first, the
body last). Secrets live in files, never in the config: API keys as hashes, the HS256
secret and webhook secrets in files read when the config is built. A hash is written
`sha256:<64 hex>`; make one with `printf %s "$KEY" | sha256sum`.

The `cors` section has its own module (`cors_model.py`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gateway.config.fields import FilePath, Name, StrictModel, Token, choice, one_or_many, unit
from gateway.config.units import Duration, Size

__all__ = ["ALGORITHMS", "ApiKey", "ApiKeys", "Auth", "Jwt", "Webhook", "parse_key_hash"]

ALGORITHMS = ("RS256", "ES256", "EdDSA", "HS256")
_HASH = re.compile(r"sha256:([0-9a-fA-F]{64})")
_QUERY_NAME = re.compile(r"[A-Za-z0-9_.~-]+")
_HASH_HELP = "expected 'sha256:<64 hex digits>' (printf %s \"$KEY\" | sha256sum)"


def parse_key_hash(text: str) -> bytes:
    """'sha256:<hex>' -> the 32-byte digest; ValueError with the expected shape."""
    m = _HASH.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"invalid key hash: {_HASH_HELP}")
    return bytes.fromhex(m.group(1))


class ApiKey(StrictModel):
    """One API key: a name (the principal), its SHA-256 hash, an optional tier."""

    name: Name = Field(description="Who holds the key: the principal rate limits key on.")
    hash: str = Field(
        description="'sha256:<64 hex digits>' of the key; the key itself never appears.",
        examples=["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )
    tier: Name | None = Field(
        default=None, description="Rate-limit tier of the key (a policy's `tiers` entry)."
    )

    @field_validator("hash")
    @classmethod
    def _check_hash(cls, v: str) -> str:
        parse_key_hash(v)
        return v.strip().lower()


class ApiKeys(StrictModel):
    """API keys read from a header and/or a query parameter, checked against hashes."""

    header: Token | None = Field(
        default="X-API-Key", description="Request header carrying the key; null: none."
    )
    query: str | None = Field(
        default=None, description="Query parameter carrying the key (used when no header)."
    )
    keys: list[ApiKey] = Field(default=[], description="Keys, as name + hash (+ tier).")
    file: FilePath | None = Field(
        default=None,
        description="A file of keys, one per line: '<name> sha256:<hex> [<tier>]'; read when "
        "the config is loaded or reloaded.",
    )
    strip: bool = Field(default=True, description="Remove the key from the request sent upstream.")
    realm: str = Field(
        default="gateway",
        pattern=r'^[^"\\\x00-\x1f]*$',
        description="The realm of the WWW-Authenticate challenge on a 401.",
    )

    @field_validator("query")
    @classmethod
    def _check_query(cls, v: str | None) -> str | None:
        if v is not None and not _QUERY_NAME.fullmatch(v):
            raise ValueError(f"invalid query parameter name {v!r}: letters, digits, '_.~-'")
        return v

    @model_validator(mode="after")
    def _sources(self) -> ApiKeys:
        if self.header is None and self.query is None:
            raise ValueError("give a header or a query parameter to read the key from")
        if not self.keys and self.file is None:
            raise ValueError("give keys or a file of keys")
        seen: set[str] = set()
        for key in self.keys:
            if key.name in seen:
                raise ValueError(f"duplicate key name {key.name!r}")
            seen.add(key.name)
        return self


Algorithm = Annotated[
    Literal["RS256", "ES256", "EdDSA", "HS256"], BeforeValidator(choice("algorithm", ALGORITHMS))
]


class Jwt(StrictModel):
    """Bearer JWT validation: signature (JWKS keys or an HS256 secret) and claims."""

    header: Token = Field(
        default="Authorization",
        description="Header carrying the token; 'Authorization' expects 'Bearer <token>'.",
    )
    jwks_file: FilePath | None = Field(
        default=None, description="A JWKS file (RFC 7517 key set), read at config load."
    )
    jwks_url: str | None = Field(
        default=None, description="A JWKS URL, fetched, cached and refreshed."
    )
    hs256_secret_file: FilePath | None = Field(
        default=None,
        description="A file holding the HS256 shared secret (trailing newline stripped).",
    )
    algorithms: list[Algorithm] | None = Field(
        default=None,
        description="Accepted 'alg' values; default RS256, ES256, EdDSA with a JWKS and "
        "HS256 with a secret. 'none' is never accepted.",
    )
    issuer: str | None = Field(default=None, description="Required 'iss' claim value.")
    audiences: Annotated[
        list[str], BeforeValidator(one_or_many, json_schema_input_type=str | list[str])
    ] = Field(default=[], description="The 'aud' claim must name one of these; empty: any.")
    required_claims: list[str] = Field(
        default=["exp"], description="Claims every token must carry."
    )
    leeway: Duration = Field(
        default=unit("30s"), le=300, description="Clock skew allowed on exp and nbf."
    )
    claims_to_headers: dict[str, Token] = Field(
        default={},
        description="Claims sent upstream as headers, {claim: header}; the client's own "
        "copies of those headers are always removed.",
    )
    tier_claim: str | None = Field(
        default=None, description="Claim naming the caller's rate-limit tier."
    )
    forward_token: bool = Field(
        default=False, description="Send the token upstream; false removes its header."
    )
    jwks_refresh: Duration = Field(
        default=unit("5m"), gt=0, description="Refetch the JWKS URL this often."
    )
    jwks_min_refresh: Duration = Field(
        default=unit("30s"),
        description="A token with an unknown kid refetches the JWKS at most this often.",
    )
    jwks_max_stale: Duration = Field(
        default=unit("1h"),
        description="When refetching fails, keep using the last key set this long past its "
        "refresh time; then answer 503.",
    )
    jwks_timeout: Duration = Field(
        default=unit("5s"), gt=0, description="One JWKS fetch, connecting included."
    )
    cache_max_tokens: int = Field(
        default=10_000,
        ge=0,
        description="Verified tokens kept (token -> claims, until exp); 0: verify each time.",
    )

    @field_validator("jwks_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"invalid jwks_url {v!r}: expected an http(s) URL")
        return v

    @model_validator(mode="after")
    def _keys(self) -> Jwt:
        jwks = self.jwks_file is not None or self.jwks_url is not None
        if self.jwks_file is not None and self.jwks_url is not None:
            raise ValueError("give jwks_file or jwks_url, not both")
        if not jwks and self.hs256_secret_file is None:
            raise ValueError("give jwks_file, jwks_url or hs256_secret_file")
        algs = self.accepted
        if "HS256" in algs and self.hs256_secret_file is None:
            raise ValueError("HS256 needs hs256_secret_file")
        if self.hs256_secret_file is not None and "HS256" not in algs:
            raise ValueError("hs256_secret_file given but HS256 is not in algorithms")
        if not jwks and set(algs) - {"HS256"}:
            raise ValueError("RS256, ES256 and EdDSA need jwks_file or jwks_url")
        return self

    @property
    def accepted(self) -> tuple[str, ...]:
        """The algorithms tokens may use."""
        if self.algorithms is not None:
            return tuple(dict.fromkeys(self.algorithms))
        algs: tuple[str, ...] = ()
        if self.jwks_file is not None or self.jwks_url is not None:
            algs = ("RS256", "ES256", "EdDSA")
        if self.hs256_secret_file is not None:
            algs += ("HS256",)
        return algs


class Webhook(StrictModel):
    """An HMAC signature of the request body (GitHub style) or of '<t>.<body>' (Stripe)."""

    header: Token = Field(
        description="Header carrying the signature.",
        examples=["X-Hub-Signature-256", "Stripe-Signature"],
    )
    style: Annotated[
        Literal["plain", "stripe"], BeforeValidator(choice("style", ("plain", "stripe")))
    ] = Field(
        default="plain",
        description="'plain': the header is prefix + signature of the body (GitHub); "
        "'stripe': 't=<unix s>,v1=<sig>[,v1=<sig>]', signed over '<t>.' + body.",
    )
    algorithm: Annotated[
        Literal["sha256", "sha1", "sha512"],
        BeforeValidator(choice("algorithm", ("sha256", "sha1", "sha512"))),
    ] = Field(default="sha256", description="The HMAC hash.")
    encoding: Annotated[
        Literal["hex", "base64"], BeforeValidator(choice("encoding", ("hex", "base64")))
    ] = Field(default="hex", description="How the signature is written.")
    prefix: str = Field(
        default="", description="Text before the signature, e.g. 'sha256=' (plain style)."
    )
    signature_key: Token = Field(
        default="v1", description="Stripe style: the item name that carries signatures."
    )
    tolerance: Duration = Field(
        default=unit("5m"),
        gt=0,
        description="Stripe style: the signed timestamp may be this far from now.",
    )
    secrets_file: FilePath = Field(
        description="Shared secrets, one per line (several while rotating); read at load."
    )
    max_body_bytes: Size = Field(
        default=unit("1MiB"), gt=0, description="Largest body verified; 413 beyond."
    )


class Auth(StrictModel):
    """Who may call the route; every configured check must pass."""

    api_keys: ApiKeys | None = Field(default=None, description="API keys (checked first).")
    jwt: Jwt | None = Field(default=None, description="JWT bearer tokens (checked second).")
    webhook: Webhook | None = Field(
        default=None, description="Signed webhook bodies (checked last: reads the body)."
    )

    @model_validator(mode="after")
    def _something(self) -> Auth:
        if self.api_keys is None and self.jwt is None and self.webhook is None:
            raise ValueError("give at least one of api_keys, jwt, webhook")
        return self
