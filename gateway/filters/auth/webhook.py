"""WebhookCheck: an HMAC signature over the request body, GitHub or Stripe style.

- `plain` (GitHub): the header is `<prefix><signature>`, e.g.
  `X-Hub-Signature-256: sha256=<hex of HMAC-SHA256(secret, body)>`;
- `stripe`: `Stripe-Signature: t=<unix s>,v1=<sig>[,v1=<sig>...]`, signed over
  `<t>.` + body; `t` must be within `tolerance` of now (replays of an old delivery
  are refused), and any `v1` item may match (Stripe sends one per active secret).

Several secrets (one per line in `secrets_file`) may match, so a secret can be rotated
without a window of refusals. Signatures are compared with `hmac.compare_digest`,
every candidate against every secret (no early exit).

The body: a Content-Length above `max_body_bytes` is 413 at once, unread; otherwise
the body is read chunk by chunk, each chunk fed to the HMACs as it arrives (the MAC is
never computed over a second copy), and counted: past `max_body_bytes` it is 413.
The chunks are then joined once (a single chunk, the usual case for small bodies, is
not copied at all), the list dropped, and `ex.body` becomes a `BytesBody` of those
bytes: the upstream receives exactly the bytes that were verified, the body is held
once, and the pool may resend it on a stale keep-alive connection. A route's size
filter still applies (it wraps the body before this check reads it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable

from gateway.body import BytesBody
from gateway.config.auth_model import Webhook
from gateway.exchange import Exchange
from gateway.filters.auth.common import Failure

__all__ = ["WebhookCheck", "load_secrets"]

_CHALLENGE = 'Signature realm="gateway"'
MISSING = Failure(401, "signature_missing", "a request signature is required", _CHALLENGE)
MALFORMED = Failure(401, "signature_malformed", "the request signature is malformed", _CHALLENGE)
STALE = Failure(401, "signature_stale", "the signature timestamp is too old", _CHALLENGE)
MISMATCH = Failure(401, "signature_mismatch", "the request signature does not match", _CHALLENGE)
TOO_LARGE = Failure(413, "body_too_large", "the signed body is too large to verify", None)


def load_secrets(path: str) -> list[bytes]:
    """Secrets, one per line ('#' comments and blank lines skipped); ValueError if none."""
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read the secrets file {path!r}: {e.strerror}") from None
    secrets = [s.strip() for s in lines if s.strip() and not s.strip().startswith(b"#")]
    if not secrets:
        raise ValueError(f"the secrets file {path!r} holds no secret")
    return secrets


class WebhookCheck:
    """A route's webhook signature settings and secrets."""

    __slots__ = (
        "clock",
        "decode",
        "digest",
        "header",
        "max_body_bytes",
        "prefix",
        "secrets",
        "signature_key",
        "stripe",
        "tolerance_s",
    )

    def __init__(
        self, cfg: Webhook, secrets: list[bytes], clock: Callable[[], float] = time.time
    ) -> None:
        self.header = cfg.header
        self.stripe = cfg.style == "stripe"
        self.digest = getattr(hashlib, cfg.algorithm)
        self.decode: Callable[[str], bytes] = (
            bytes.fromhex if cfg.encoding == "hex" else lambda s: base64.b64decode(s, validate=True)
        )
        self.prefix = cfg.prefix
        self.signature_key = cfg.signature_key
        self.tolerance_s = cfg.tolerance
        self.max_body_bytes = cfg.max_body_bytes
        self.secrets = secrets
        self.clock = clock  # wall time: the signed timestamp is unix seconds

    def _signatures(self, raw: str) -> tuple[bytes, list[bytes]] | Failure:
        """(bytes signed before the body, candidate signatures), or the failure."""
        try:
            if not self.stripe:
                if not raw.startswith(self.prefix):
                    return MALFORMED
                return b"", [self.decode(raw[len(self.prefix) :].strip())]
            t = None
            sigs = []
            for item in raw.split(","):
                k, _, v = item.strip().partition("=")
                if k == "t":
                    t = v
                elif k == self.signature_key:
                    sigs.append(self.decode(v))
        except (ValueError, binascii.Error):
            return MALFORMED
        if t is None or not (t.isascii() and t.isdigit()) or len(t) > 12 or not sigs:
            return MALFORMED
        if abs(self.clock() - int(t)) > self.tolerance_s:
            return STALE
        return t.encode() + b".", sigs

    async def __call__(self, ex: Exchange) -> Failure | None:
        raw = ex.headers.get(self.header)
        if not raw:
            return MISSING
        parsed = self._signatures(raw)
        if isinstance(parsed, Failure):
            return parsed
        lead, sigs = parsed
        limit = self.max_body_bytes
        if ex.content_length is not None and ex.content_length > limit:
            return TOO_LARGE
        macs = [hmac.new(s, lead, self.digest) for s in self.secrets]
        body = ex.body
        if body is not None:
            chunks: list[bytes] = []
            n = 0
            while chunk := await body.read():
                n += len(chunk)
                if n > limit:
                    return TOO_LARGE
                for m in macs:
                    m.update(chunk)
                chunks.append(chunk)
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            ex.body = BytesBody(data)
        ok = False
        for m in macs:
            mac = m.digest()
            for sig in sigs:
                ok |= hmac.compare_digest(mac, sig)
        return None if ok else MISMATCH

    def __repr__(self) -> str:
        style = "stripe" if self.stripe else "plain"
        return (
            f"<WebhookCheck {self.header} {style} {self.digest().name} "
            f"secrets={len(self.secrets)} max_body={self.max_body_bytes}>"
        )
