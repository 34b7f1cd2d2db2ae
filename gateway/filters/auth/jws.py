"""JWS signature checks on `cryptography` primitives: JWK parsing and verify functions.

Why not PyJWT: the signature check is a few calls into `cryptography` (which PyJWT
uses too), PyJWT's JWKS client is synchronous (a blocking fetch in an event loop),
and the claim checks have to run again on every hit of the verified-token cache, so
they would be ours anyway. What we keep from PyJWT's lessons:

- Algorithm confusion (CVE-2015-9235 and friends): a key knows its one algorithm
  family and verifies nothing else. RSA keys verify RS256 only, P-256 keys ES256 only,
  Ed25519 keys EdDSA only; HS256 is verified with the configured secret only, never
  with a JWKS key: `oct` keys in a JWKS are refused, and a secret that looks like a
  PEM or SSH public key is refused at load (so "the RS256 public key used as an HS256
  secret" cannot happen by misconfiguration either). `alg: none` is in no table.
- ES256 signatures are raw r||s (RFC 7518 3.4), 64 bytes, converted to DER here.
- RSA keys under 2048 bits are refused (RFC 7518 3.3).

Each key is parsed once, when its key set is loaded; verifying costs the public-key
operation and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["VerifyKey", "b64url", "hs256_key", "jwk_key", "parse_jwks"]

# kty (+ crv) -> the one algorithm such a key verifies.
MIN_RSA_BITS = 2048
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: at least the hash output size
MAX_KEYS = 64  # a key set is small; a huge one is a mistake or an attack

Verify = Callable[[bytes, bytes], None]  # raises InvalidSignature


def b64url(text: str) -> bytes:
    """base64url without padding (RFC 7515 2) -> bytes; ValueError on anything else."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def _b64int(text: Any) -> int:
    if not isinstance(text, str) or not text:
        raise ValueError("expected a base64url number")
    return int.from_bytes(b64url(text), "big")


class VerifyKey:
    """One public key (or the HS256 secret) and the one algorithm it verifies."""

    __slots__ = ("_verify", "alg", "kid")

    def __init__(self, alg: str, kid: str | None, verify: Verify) -> None:
        self.alg = alg
        self.kid = kid
        self._verify = verify

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            self._verify(signing_input, signature)
        except (InvalidSignature, ValueError):
            return False
        return True

    def __repr__(self) -> str:
        return f"<VerifyKey {self.alg} kid={self.kid}>"


def _rsa(key: rsa.RSAPublicKey) -> Verify:
    pad, sha = padding.PKCS1v15(), hashes.SHA256()

    def verify(data: bytes, sig: bytes) -> None:
        key.verify(sig, data, pad, sha)

    return verify


def _ec(key: ec.EllipticCurvePublicKey) -> Verify:
    algorithm = ec.ECDSA(hashes.SHA256())

    def verify(data: bytes, sig: bytes) -> None:
        if len(sig) != 64:
            raise InvalidSignature
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        key.verify(encode_dss_signature(r, s), data, algorithm)

    return verify


def _ed(key: Ed25519PublicKey) -> Verify:
    def verify(data: bytes, sig: bytes) -> None:
        key.verify(sig, data)

    return verify


def jwk_key(jwk: Any) -> VerifyKey:
    """A verification key from one JWK (RFC 7517/7518/8037); ValueError if unusable."""
    if not isinstance(jwk, dict):
        raise ValueError("a JWK is a JSON object")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid must be a string")
    if jwk.get("use", "sig") != "sig":
        raise ValueError(f"use {jwk.get('use')!r} is not 'sig'")
    kty = jwk.get("kty")
    verify: Verify
    if kty == "RSA":
        alg = "RS256"
        rsa_key = rsa.RSAPublicNumbers(_b64int(jwk.get("e")), _b64int(jwk.get("n"))).public_key()
        if rsa_key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {rsa_key.key_size} bits (at least {MIN_RSA_BITS})")
        verify = _rsa(rsa_key)
    elif kty == "EC":
        alg = "ES256"
        if jwk.get("crv") != "P-256":
            raise ValueError(f"EC curve {jwk.get('crv')!r} (only P-256, for ES256)")
        x, y = _b64int(jwk.get("x")), _b64int(jwk.get("y"))
        # from_encoded_point checks the point is on the curve.
        point = b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")
        verify = _ec(ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point))
    elif kty == "OKP":
        alg = "EdDSA"
        if jwk.get("crv") != "Ed25519":
            raise ValueError(f"OKP curve {jwk.get('crv')!r} (only Ed25519)")
        okp_x = jwk.get("x")
        if not isinstance(okp_x, str):
            raise ValueError("OKP key without x")
        verify = _ed(Ed25519PublicKey.from_public_bytes(b64url(okp_x)))
    elif kty == "oct":
        raise ValueError("symmetric (oct) keys are refused in a JWKS: HS256 uses the secret file")
    else:
        raise ValueError(f"unsupported kty {kty!r}")
    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        raise ValueError(f"alg {declared!r} does not fit a {kty} key (expected {alg})")
    return VerifyKey(alg, kid, verify)


def parse_jwks(doc: Any, on_skip: Callable[[int, str], None]) -> list[VerifyKey]:
    """The usable keys of a JWKS document; each unusable key is reported to `on_skip`.

    ValueError when the document is no key set or holds no usable key."""
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise ValueError("not a JWKS: expected an object with a 'keys' list")
    if len(keys) > MAX_KEYS:
        raise ValueError(f"{len(keys)} keys (at most {MAX_KEYS})")
    out = []
    for i, jwk in enumerate(keys):
        try:
            out.append(jwk_key(jwk))
        except (ValueError, TypeError, OverflowError) as e:
            on_skip(i, str(e))
    if not out:
        raise ValueError("no usable key in the key set")
    return out


def hs256_key(secret: bytes) -> VerifyKey:
    """The HS256 verification key; ValueError for a short secret or a public key."""
    text = secret.lstrip()
    if text.startswith((b"-----BEGIN", b"ssh-rsa", b"ssh-ed25519", b"ecdsa-sha2-", b"{")):
        raise ValueError(
            "the HS256 secret looks like a public key or a JWK: HS256 needs a shared "
            "secret (an asymmetric key used as one is the algorithm-confusion attack)"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the HS256 secret is {len(secret)} bytes (at least {MIN_SECRET_BYTES})")

    def verify(data: bytes, sig: bytes) -> None:
        if not hmac.compare_digest(hmac.new(secret, data, hashlib.sha256).digest(), sig):
            raise InvalidSignature

    return VerifyKey("HS256", None, verify)
