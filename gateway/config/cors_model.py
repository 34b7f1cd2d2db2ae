"""CORS config: a route's `cors` section (the Fetch standard's CORS protocol).

    cors:
      origins: ["https://app.example.com", "https://*.example.com"]   # or ["*"]
      methods: [GET, POST, PUT]
      headers: [Content-Type, Authorization]                          # or ["*"]
      credentials: true
      max_age: 10m
      expose_headers: [X-Request-ID]

An origin is 'scheme://host[:port]' exactly as browsers send it (lower-case, no path);
'https://*.example.com' matches any subdomain of example.com (not example.com itself).
`*` with credentials is refused: browsers reject it, and reflecting every origin with
credentials would let any site act as the user.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from gateway.config.fields import Method, StrictModel, Token, unit
from gateway.config.units import Duration

__all__ = ["Cors"]

_HOST = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
_ORIGIN = re.compile(rf"(https?)://(\*\.)?({_HOST}|\[[0-9a-f:.]+\])(:[0-9]{{1,5}})?")
_ORIGIN_HELP = "expected 'https://host[:port]', 'https://*.example.com' or '*'"


class Cors(StrictModel):
    """Which browser origins may call the route, and how."""

    origins: list[str] = Field(
        min_length=1,
        description="Allowed origins: exact 'https://app.example.com', wildcard subdomains "
        "'https://*.example.com', or '*' (any; not with credentials).",
    )
    methods: list[Method] = Field(
        default=["GET", "HEAD", "POST"],
        description="Methods a preflight may allow; '*' any (reflected with credentials).",
    )
    headers: list[str] = Field(
        default=[],
        description="Request headers a preflight may allow; '*' any (Authorization only "
        "when listed, as the Fetch standard says).",
    )
    credentials: bool = Field(
        default=False, description="Allow cookies / HTTP auth (Access-Control-Allow-Credentials)."
    )
    max_age: Duration = Field(
        default=unit("10m"), description="How long browsers may cache a preflight answer."
    )
    expose_headers: list[Token] = Field(
        default=[], description="Response headers scripts may read (Access-Control-Expose-Headers)."
    )

    @field_validator("origins")
    @classmethod
    def _check_origins(cls, v: list[str]) -> list[str]:
        out = []
        for origin in v:
            if origin == "*":
                out.append(origin)
                continue
            low = origin.lower()
            if not _ORIGIN.fullmatch(low):
                raise ValueError(f"invalid origin {origin!r}: {_ORIGIN_HELP}")
            out.append(low)
        return out

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, v: list[str]) -> list[str]:
        for name in v:
            if name != "*" and not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
                raise ValueError(f"invalid header name {name!r}: must be an HTTP token")
        return v

    @model_validator(mode="after")
    def _no_star_with_credentials(self) -> Cors:
        if self.credentials and "*" in self.origins:
            raise ValueError(
                "origins '*' with credentials: true is refused (browsers reject it); "
                "list the origins"
            )
        if "*" in self.origins and len(self.origins) > 1:
            raise ValueError("'*' allows every origin: list no others with it")
        return self
