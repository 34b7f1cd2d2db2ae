"""Signed webhooks: GitHub (body) and Stripe (timestamp + body) styles, real HMACs."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from gateway.body import BytesBody
from gateway.filters.auth import AuthFilter, build_auth_filter
from tests.auth.conftest import WallClock
from tests.auth.support import NOW, ChunkedBody, Terminal, exchange, route_config

SECRET = b"whsec_current_2c8f"
OLD_SECRET = b"whsec_previous_91aa"
BODY = b'{"id":"evt_1","type":"invoice.paid","amount":4200}'


@pytest.fixture
def secrets_file(tmp_path: Path) -> str:
    path = tmp_path / "secrets.txt"
    path.write_bytes(b"# rotate: new first\n" + SECRET + b"\n" + OLD_SECRET + b"\n")
    return str(path)


def hook_filter(clock: WallClock, webhook: dict[str, Any]) -> AuthFilter:
    f = build_auth_filter(route_config({"auth": {"webhook": webhook}}), clock=clock)
    assert f is not None
    return f


def github(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def stripe(body: bytes, t: int, secret: bytes = SECRET) -> str:
    sig = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig},v0=ignored"


GITHUB = {"header": "X-Hub-Signature-256", "prefix": "sha256="}
STRIPE = {"header": "Stripe-Signature", "style": "stripe", "tolerance": "5m"}

# (id, config, signature header value, body sent, status, reason)
CASES: list[tuple[str, dict[str, Any], str, bytes, int, str | None]] = [
    ("github-valid", GITHUB, github(BODY), BODY, 200, None),
    ("github-old-secret", GITHUB, github(BODY, OLD_SECRET), BODY, 200, None),
    ("github-tampered-body", GITHUB, github(BODY), BODY.replace(b"4200", b"9999"), 401,
     "signature_mismatch"),
    ("github-wrong-secret", GITHUB, github(BODY, b"guess"), BODY, 401, "signature_mismatch"),
    ("github-no-prefix", GITHUB, github(BODY)[7:], BODY, 401, "signature_malformed"),
    ("github-not-hex", GITHUB, "sha256=zz", BODY, 401, "signature_malformed"),
    ("stripe-valid", STRIPE, stripe(BODY, int(NOW) - 10), BODY, 200, None),
    ("stripe-stale", STRIPE, stripe(BODY, int(NOW) - 301), BODY, 401, "signature_stale"),
    ("stripe-future", STRIPE, stripe(BODY, int(NOW) + 301), BODY, 401, "signature_stale"),
    ("stripe-tampered-body", STRIPE, stripe(BODY, int(NOW)), BODY + b" ", 401,
     "signature_mismatch"),
    ("stripe-timestamp-changed", STRIPE,
     stripe(BODY, int(NOW) - 10).replace(f"t={int(NOW) - 10}", f"t={int(NOW)}"), BODY, 401,
     "signature_mismatch"),
    ("stripe-no-timestamp", STRIPE, "v1=" + "0" * 64, BODY, 401, "signature_malformed"),
    ("stripe-no-v1", STRIPE, f"t={int(NOW)}", BODY, 401, "signature_malformed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cfg", "signature", "body", "status", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_signatures(
    clock: WallClock,
    secrets_file: str,
    cfg: dict[str, Any],
    signature: str,
    body: bytes,
    status: int,
    reason: str | None,
) -> None:
    f = hook_filter(clock, {**cfg, "secrets_file": secrets_file})
    t = Terminal()
    ex = exchange(route_config({}), [(cfg["header"], signature)], method="POST", body=body)
    reply = await f(ex, t)
    assert reply.status == status
    if reason is None:
        assert t.body == body  # the upstream gets exactly the verified bytes
    else:
        assert t.calls == 0 and f.failures == {reason: 1}
        assert reply.headers["WWW-Authenticate"] == 'Signature realm="gateway"'


async def test_sha512_base64_over_a_chunked_body(clock: WallClock, secrets_file: str) -> None:
    f = hook_filter(
        clock,
        {"header": "X-Sig", "algorithm": "sha512", "encoding": "base64",
         "secrets_file": secrets_file},
    )  # fmt: skip
    chunks = [b"a" * 1000, b"b" * 1000, b"c" * 7]
    body = b"".join(chunks)
    sig = base64.b64encode(hmac.new(SECRET, body, hashlib.sha512).digest()).decode()
    ex = exchange(route_config({}), [("X-Sig", sig)], method="POST", body=ChunkedBody(chunks))
    t = Terminal()
    assert (await f(ex, t)).status == 200
    assert t.body == body
    assert type(ex.body) is BytesBody  # resendable by the pool on a stale connection


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_body_over_the_limit_is_413(
    clock: WallClock, secrets_file: str, declared: bool
) -> None:
    f = hook_filter(clock, {**GITHUB, "secrets_file": secrets_file, "max_body_bytes": 1000})
    chunks = [b"x" * 600, b"y" * 600]
    body = b"".join(chunks)
    ex = exchange(
        route_config({}),
        [("X-Hub-Signature-256", github(body))],
        method="POST",
        body=ChunkedBody(chunks),
        content_length=len(body) if declared else None,
    )
    t = Terminal()
    reply = await f(ex, t)
    assert reply.status == 413 and t.calls == 0
    assert f.failures == {"body_too_large": 1}


async def test_no_body_signs_the_empty_string(clock: WallClock, secrets_file: str) -> None:
    f = hook_filter(clock, {**GITHUB, "secrets_file": secrets_file})
    ex = exchange(route_config({}), [("X-Hub-Signature-256", github(b""))], method="POST")
    assert (await f(ex, Terminal())).status == 200


async def test_missing_signature(clock: WallClock, secrets_file: str) -> None:
    f = hook_filter(clock, {**GITHUB, "secrets_file": secrets_file})
    reply = await f(exchange(route_config({}), [], method="POST", body=BODY), Terminal())
    assert reply.status == 401 and f.failures == {"signature_missing": 1}


def test_empty_secrets_file(clock: WallClock, tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match="holds no secret"):
        hook_filter(clock, {**GITHUB, "secrets_file": str(path)})
