"""`check_tls_files`: open every TLS file a config names, as `gateway check` and loads do.

The config model only names files (a config must validate on a machine without
them); this is the step that reads them. Errors stop a load: a file missing or
unreadable, not PEM, an encrypted key, a key that does not match its certificate, a
CA bundle OpenSSL cannot load. Warnings do not: a certificate that expired, expires
within 14 days or is not valid yet; an explicit server name the certificate does not
cover (clients will refuse it); a non-default pair that no SNI name can reach.

Each pair is loaded exactly as `ServerTLS` loads it (cryptography, then OpenSSL), so
what `gateway check` accepts, the listener accepts. `now` is injectable for tests.
"""

from __future__ import annotations

import re
import ssl
import time

from gateway.config.model import Config
from gateway.config.tls_model import CertificatePair, ListenerTLS, UpstreamTLS
from gateway.errors import ConfigError
from gateway.tls.certs import (
    CertFileError,
    CertFileErrors,
    CertInfo,
    expiry_warning,
    load_chain,
    load_pair,
    read_ca_pem,
    read_certificates,
)

__all__ = ["check_tls_files"]

_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")  # as load.py formats paths


def _errors(at: str, e: CertFileError) -> list[ConfigError]:
    found = e.errors if isinstance(e, CertFileErrors) else [e]
    return [ConfigError(f"{at}.{x.field}", x.message) for x in found]


def _covers(cert_names: list[str], name: str) -> bool:
    """Does a certificate for `cert_names` verify as `name` (RFC 6125 6.4.3)?"""
    if name in cert_names:
        return True
    if not name.startswith("*."):
        _, dot, parent = name.partition(".")
        return bool(dot) and f"*.{parent}" in cert_names
    return False


def _check_pair(
    at: str, pair: CertificatePair, now: float, *, default: bool, what: str = "certificate"
) -> tuple[list[ConfigError], list[str], CertInfo | None]:
    try:
        info = load_pair(pair.cert_file, pair.key_file)
        load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), pair.cert_file, pair.key_file)
    except CertFileError as e:
        return _errors(at, e), [], None
    warnings = []
    warning = expiry_warning(info.leaf, now, what=what)
    if warning:
        warnings.append(f"{at}.cert_file: {warning}")
    for cert in info.chain[1:]:
        warning = expiry_warning(cert, now, what="intermediate certificate")
        if warning:
            warnings.append(f"{at}.cert_file: {warning} ({cert.subject.rfc4514_string()})")
    if pair.server_names is not None:
        for j, name in enumerate(pair.server_names):
            if not _covers(info.dns_names, name):
                warnings.append(
                    f"{at}.server_names[{j}]: {name!r} is not among the certificate's names "
                    f"{info.dns_names} (clients will reject it)"
                )
    elif not info.dns_names and not default:
        warnings.append(
            f"{at}.cert_file: the certificate has no DNS names and server_names is not "
            "set, so no SNI name selects it"
        )
    return [], warnings, info


def _check_ca(at: str, path: str, field: str, now: float) -> tuple[list[ConfigError], list[str]]:
    try:
        read_ca_pem(path, field)
    except CertFileError as e:
        return _errors(at, e), []
    warnings = []
    for cert in read_certificates(path, field):
        warning = expiry_warning(cert, now, what="CA certificate")
        if warning:
            warnings.append(f"{at}.{field}: {warning} ({cert.subject.rfc4514_string()})")
    return [], warnings


def _check_listener(at: str, tls: ListenerTLS, now: float) -> tuple[list[ConfigError], list[str]]:
    errors: list[ConfigError] = []
    warnings: list[str] = []
    for k, pair in enumerate(tls.certificates):
        errs, warns, _ = _check_pair(f"{at}.certificates[{k}]", pair, now, default=k == 0)
        errors += errs
        warnings += warns
    if tls.client_auth != "off" and tls.client_ca_file is not None:
        errs, warns = _check_ca(at, tls.client_ca_file, "client_ca_file", now)
        errors += errs
        warnings += warns
    return errors, warnings


def _check_upstream(at: str, tls: UpstreamTLS, now: float) -> tuple[list[ConfigError], list[str]]:
    errors: list[ConfigError] = []
    warnings: list[str] = []
    if tls.ca_file is not None:
        errs, warns = _check_ca(at, tls.ca_file, "ca_file", now)
        errors += errs
        warnings += warns
    if tls.cert_file is not None and tls.key_file is not None:
        pair = CertificatePair(cert_file=tls.cert_file, key_file=tls.key_file)
        errs, warns, _ = _check_pair(at, pair, now, default=True, what="client certificate")
        errors += errs
        warnings += warns
    return errors, warnings


def check_tls_files(
    config: Config, *, now: float | None = None
) -> tuple[list[ConfigError], list[str]]:
    """(errors, warnings) about every TLS file `config` names; paths as in config errors.

    Errors: `listeners[1].tls.certificates[0].key_file: key does not match certificate`.
    Warnings: `listeners[0].tls.certificates[0].cert_file: certificate expires in 5 days
    (2030-01-31T12:00:00Z)`.
    """
    now = time.time() if now is None else now
    errors: list[ConfigError] = []
    warnings: list[str] = []
    for i, listener in enumerate(config.listeners):
        if listener.tls is not None:
            errs, warns = _check_listener(f"listeners[{i}].tls", listener.tls, now)
            errors += errs
            warnings += warns
    for name, upstream in config.upstreams.items():
        key = f".{name}" if _SIMPLE_KEY.match(name) else f'["{name}"]'
        errs, warns = _check_upstream(f"upstreams{key}.tls", upstream.tls, now)
        errors += errs
        warnings += warns
    return errors, warnings
