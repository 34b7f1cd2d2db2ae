"""`gateway check` and `python -m gateway` as an operator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

THREE_MISTAKES = """\
listeners:
  - address: "127.0.0.1:8080"
upstreams:
  users:
    endpoints: ["http://127.0.0.1:9001"]
routes:
  - name: users
    match: {path: {prefix: /users}}
    upstream: billing
    timeouts: {connect: "fast"}
  - name: other
    upstream: users
    retry_count: 3
"""


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_check_reports_all_three_mistakes_with_paths(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(THREE_MISTAKES)
    res = gateway("check", str(f))
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "routes[0].upstream: unknown upstream 'billing'" in out
    assert "routes[0].timeouts.connect:" in out
    assert "routes[1].retry_count: unknown key" in out
    assert "3 errors" in out


def test_check_example_config_ok() -> None:
    res = gateway("check", "config/example.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("\n") == 1
    assert "OK" in res.stdout


def test_run_refuses_bad_config(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(THREE_MISTAKES)
    res = gateway("run", str(f))
    assert res.returncode == 2
    assert "unknown upstream 'billing'" in res.stderr


def test_check_fails_on_a_key_that_does_not_match_its_certificate(tmp_path: Path) -> None:
    assert gateway("cert", "dev", str(tmp_path)).returncode == 0
    f = tmp_path / "tls.yaml"
    f.write_text(
        f"""\
listeners:
  - address: "127.0.0.1:8443"
    tls:
      certificates:
        - cert_file: {tmp_path / "server.pem"}
          key_file: {tmp_path / "client-key.pem"}
upstreams:
  u: {{endpoints: ["http://127.0.0.1:9001"]}}
routes: []
"""
    )
    res = gateway("check", str(f))
    assert res.returncode == 1, res.stdout
    assert "listeners[0].tls.certificates[0].key_file: key does not match" in res.stdout
    # The same file with the right key passes.
    f.write_text(f.read_text().replace("client-key.pem", "server-key.pem"))
    res = gateway("check", str(f))
    assert res.returncode == 0, res.stdout
