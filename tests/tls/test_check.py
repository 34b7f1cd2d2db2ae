"""check_tls_files: every file a config names opened, errors and warnings at their paths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import Config, validate_data
from gateway.tls import check_tls_files
from tests.tls.certs import CA, PemFiles, key_pem


class Files:
    """Certificate files in tmp_path, made on demand by kind."""

    def __init__(self, tmp_path: Path, ca: CA) -> None:
        self.dir, self.ca = tmp_path, ca
        self.ca_file = ca.write_ca(tmp_path)

    def pair(self, stem: str, *, days: float = 30, dns: tuple[str, ...] = ("localhost",),
             client: bool = False) -> PemFiles:  # fmt: skip
        return self.ca.issue(dns=dns, days=days, client=client).write(self.dir, stem)


def config(tmp_path: Path, edits: dict[str, Any]) -> Config:
    base: dict[str, Any] = {
        "listeners": [{"address": "127.0.0.1:8080"}],
        "upstreams": {"users": {"endpoints": ["https://127.0.0.1:9101"]}},
        "routes": [],
    }
    return validate_data({**base, **edits})


def tls_listener(*pairs: PemFiles, **kw: Any) -> dict[str, Any]:
    certs = [{"cert_file": p.cert_file, "key_file": p.key_file} for p in pairs]
    return {"address": "127.0.0.1:8443", "tls": {"certificates": certs, **kw}}


def test_good_files_give_nothing(tmp_path: Path, ca: CA) -> None:
    f = Files(tmp_path, ca)
    cfg = config(
        tmp_path,
        {
            "listeners": [
                {"address": "127.0.0.1:8080"},
                tls_listener(f.pair("a"), client_auth="required", client_ca_file=f.ca_file),
            ],
            "upstreams": {"users": {"endpoints": ["https://h:1"], "tls": {
                "ca_file": f.ca_file, **vars(f.pair("client", client=True))}}},
        },
    )  # fmt: skip
    assert check_tls_files(cfg) == ([], [])


Case = Callable[[Files], tuple[dict[str, Any], str]]


def _mismatch(f: Files) -> tuple[dict[str, Any], str]:
    pair = f.pair("a")
    Path(pair.key_file).write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    listeners = [{"address": "127.0.0.1:8080"}, tls_listener(pair)]
    return {
        "listeners": listeners
    }, "listeners[1].tls.certificates[0].key_file: key does not match certificate"


def _missing(f: Files) -> tuple[dict[str, Any], str]:
    pair = PemFiles(str(f.dir / "none.pem"), f.pair("a").key_file)
    return {"listeners": [tls_listener(pair)]}, (
        f"listeners[0].tls.certificates[0].cert_file: file not found: {f.dir / 'none.pem'}"
    )


def _encrypted(f: Files) -> tuple[dict[str, Any], str]:
    issued = f.ca.issue(dns=("localhost",))
    pair = issued.write(f.dir, "a")
    Path(pair.key_file).write_bytes(key_pem(issued.key, b"secret"))
    return {"listeners": [tls_listener(pair)]}, (
        f"listeners[0].tls.certificates[0].key_file: the key in {pair.key_file} is encrypted "
        "(passphrases are not supported)"
    )


def _bad_ca(f: Files) -> tuple[dict[str, Any], str]:
    bad = f.dir / "bad-ca.pem"
    bad.write_text("hello\n")
    listener = tls_listener(f.pair("a"), client_auth="optional", client_ca_file=str(bad))
    return {
        "listeners": [listener]
    }, f"listeners[0].tls.client_ca_file: no PEM certificate in {bad}"


def _upstream_mismatch(f: Files) -> tuple[dict[str, Any], str]:
    a, b = f.pair("a", client=True), f.pair("b", client=True)
    tls = {"cert_file": a.cert_file, "key_file": b.key_file}
    return {"upstreams": {"users": {"endpoints": ["https://h:1"], "tls": tls}}}, (
        "upstreams.users.tls.key_file: key does not match certificate"
    )


def _upstream_ca_missing(f: Files) -> tuple[dict[str, Any], str]:
    tls = {"ca_file": str(f.dir / "nope.pem")}
    return {"upstreams": {"v2.api": {"endpoints": ["https://h:1"], "tls": tls}}}, (
        f'upstreams["v2.api"].tls.ca_file: file not found: {f.dir / "nope.pem"}'
    )


ERRORS: list[tuple[str, Case]] = [
    ("key-mismatch", _mismatch),
    ("cert-missing", _missing),
    ("key-encrypted", _encrypted),
    ("client-ca-unloadable", _bad_ca),
    ("upstream-client-key-mismatch", _upstream_mismatch),
    ("upstream-ca-missing", _upstream_ca_missing),
]


@pytest.mark.parametrize("case", [c[1] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_errors(tmp_path: Path, ca: CA, case: Case) -> None:
    edits, expected = case(Files(tmp_path, ca))
    errors, _ = check_tls_files(config(tmp_path, edits))
    assert [str(e) for e in errors] == [expected]


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (5.5, "certificate expires in 5 days ("),
        (0.5, "certificate expires within a day ("),
        (-2, "certificate expired on "),
    ],
    ids=["in-5-days", "within-a-day", "expired"],
)
def test_expiry_warnings(tmp_path: Path, ca: CA, days: float, expected: str) -> None:
    f = Files(tmp_path, ca)
    pair = f.pair("a", days=days)
    errors, warnings = check_tls_files(config(tmp_path, {"listeners": [tls_listener(pair)]}))
    assert errors == []
    assert len(warnings) == 1
    assert warnings[0].startswith(f"listeners[0].tls.certificates[0].cert_file: {expected}")


def test_fifteen_days_left_is_fine_and_now_is_injectable(tmp_path: Path, ca: CA) -> None:
    f = Files(tmp_path, ca)
    cfg = config(tmp_path, {"listeners": [tls_listener(f.pair("a", days=15))]})
    assert check_tls_files(cfg) == ([], [])
    later = ca.cert.not_valid_before_utc.timestamp() + 2 * 86400
    assert check_tls_files(cfg, now=later)[1] != []  # 13+ days from the end: warned


def test_name_warnings(tmp_path: Path, ca: CA) -> None:
    f = Files(tmp_path, ca)
    named = f.pair("a", dns=("a.example.com",))
    nameless = f.pair("b", dns=())
    listener = tls_listener(f.pair("default"), named, nameless)
    listener["tls"]["certificates"][1]["server_names"] = ["a.example.com", "x.example.com"]
    errors, warnings = check_tls_files(config(tmp_path, {"listeners": [listener]}))
    assert errors == []
    assert warnings == [
        "listeners[0].tls.certificates[1].server_names[1]: 'x.example.com' is not among the "
        "certificate's names ['a.example.com'] (clients will reject it)",
        "listeners[0].tls.certificates[2].cert_file: the certificate has no DNS names and "
        "server_names is not set, so no SNI name selects it",
    ]
