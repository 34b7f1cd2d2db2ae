"""Auth test support: real keys (cryptography), JWKs, signed tokens, a JWKS server, and
helpers that build the route's filters through the config loader as a config load would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from multidict import CIMultiDict

from gateway.body import BodySource, BytesBody
from gateway.config.load import validate_data
from gateway.config.model import Route as RouteConfig
from gateway.exchange import Exchange, Reply
from gateway.routing import Route
from tests.support import serve_app

NOW = 1_900_000_000.0  # the fake wall clock of unit tests

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | Ed25519PrivateKey


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class SigningKey:
    """A private key, its algorithm and kid; signs tokens, exports its public JWK."""

    def __init__(self, alg: str, kid: str, key: PrivateKey | bytes) -> None:
        self.alg = alg
        self.kid = kid
        self.key = key

    @classmethod
    def generate(cls, alg: str, kid: str) -> SigningKey:
        if alg == "RS256":
            return cls(alg, kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if alg == "ES256":
            return cls(alg, kid, ec.generate_private_key(ec.SECP256R1()))
        if alg == "EdDSA":
            return cls(alg, kid, Ed25519PrivateKey.generate())
        raise ValueError(alg)

    def jwk(self) -> dict[str, Any]:
        k = self.key
        if isinstance(k, rsa.RSAPrivateKey):
            pub = k.public_key().public_numbers()
            return {"kty": "RSA", "kid": self.kid, "use": "sig", "n": _int(pub.n), "e": _int(pub.e)}
        if isinstance(k, ec.EllipticCurvePrivateKey):
            pn = k.public_key().public_numbers()
            x, y = pn.x.to_bytes(32, "big"), pn.y.to_bytes(32, "big")
            return {"kty": "EC", "kid": self.kid, "crv": "P-256", "x": b64(x), "y": b64(y)}
        assert isinstance(k, Ed25519PrivateKey)
        raw = k.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {"kty": "OKP", "kid": self.kid, "crv": "Ed25519", "x": b64(raw)}

    def public_pem(self) -> bytes:
        assert not isinstance(self.key, bytes)
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        k = self.key
        if isinstance(k, rsa.RSAPrivateKey):
            return k.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(k, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(k.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        assert isinstance(k, Ed25519PrivateKey)
        return k.sign(data)

    def token(self, claims: dict[str, Any], **header: Any) -> str:
        return make_token(claims, self.sign, {"alg": self.alg, "kid": self.kid, **header})


def make_token(
    claims: dict[str, Any], sign: Callable[[bytes], bytes], header: dict[str, Any]
) -> str:
    head = b64(json.dumps({"typ": "JWT", **header}).encode())
    body = b64(json.dumps(claims).encode())
    signing_input = f"{head}.{body}".encode()
    return f"{head}.{body}.{b64(sign(signing_input))}"


def hs256_token(secret: bytes, claims: dict[str, Any], **header: Any) -> str:
    return make_token(
        claims,
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
        {"alg": "HS256", **header},
    )


def key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def route_config(route: dict[str, Any]) -> RouteConfig:
    cfg = validate_data(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "upstreams": {"users": {"endpoints": ["http://127.0.0.1:1"]}},
            "routes": [{"name": "api", "upstream": "users", **route}],
        }
    )
    return cfg.routes[0]


def exchange(
    route: RouteConfig,
    headers: Sequence[tuple[str, str]] = (),
    *,
    method: str = "GET",
    query: str = "",
    body: bytes | BodySource | None = None,
    content_length: int | None = None,
) -> Exchange:
    source = BytesBody(body) if isinstance(body, bytes) else body
    if isinstance(body, bytes) and content_length is None:
        content_length = len(body)
    return Exchange(
        method=method,
        path="/v1/items",
        query=query,
        headers=CIMultiDict(headers),
        host="api.example.com",
        scheme="https",
        client_ip="203.0.113.7",
        client_port=50123,
        request_id="req-1",
        route=Route(route),
        body=source,
        content_length=content_length,
    )


class Terminal:
    """The end of the chain: records what reached it (headers, query, body)."""

    def __init__(self, reply_headers: Sequence[tuple[str, str]] = ()) -> None:
        self.reply_headers = reply_headers
        self.calls = 0
        self.headers: CIMultiDict[str] | None = None
        self.query: str | None = None
        self.body: bytes | None = None
        self.principal: tuple[str | None, str | None] | None = None

    async def __call__(self, ex: Exchange) -> Reply:
        self.calls += 1
        self.headers = CIMultiDict(ex.headers)
        self.query = ex.query
        self.principal = (ex.principal, ex.principal_tier)
        if ex.body is not None:
            chunks = []
            while chunk := await ex.body.read():
                chunks.append(chunk)
            self.body = b"".join(chunks)
        return Reply(200, CIMultiDict(self.reply_headers), b"ok")


class ChunkedBody:
    """A streamed body in chunks, like a chunked upload from a client."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)

    async def read(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


class JwksServer:
    """A loopback HTTP server answering GET /jwks.json with `doc`, counting hits."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"keys": []}
        self.hits = 0
        self.status = 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        return web.json_response(self.doc)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[JwksServer]:
        app = web.Application()
        app.router.add_get("/jwks.json", self.handle)
        async with serve_app(app) as port:
            self.url = f"http://127.0.0.1:{port}/jwks.json"
            yield self


Run = Callable[..., Awaitable[Reply]]
