"""Server-side TLS for one listener: a policy context, a context per certificate, SNI.

How it works. `ServerTLS.context` (the one handed to create_server) carries the policy:
minimum version, ALPN ["http/1.1"], verify mode, and an `sni_callback`, but no
certificate. OpenSSL runs the callback for every ClientHello, with the SNI name or
None, and the callback points the connection at the context of the matching pair
(`sslobj.context = ...`, SSL_set_SSL_CTX). After that switch OpenSSL takes the
certificate, the ALPN choice and the trust store for client certificates from the
pair's context, but the verify mode from the listener's, so every pair context
repeats the whole policy and the client CA.

Matching (RFC 6125 section 6.4.3): the exact name first, then '*.' + the name minus
its first label, else the first pair (also when no SNI was sent). Names come from
`server_names` or the certificate's DNS SANs; for a name listed twice the earlier
pair wins (explicit duplicates are config errors, see config/checks.py).

Reload. `reload_if_changed` compares file contents (sha256) with what was loaded, not
mtimes: a same-size rewrite within one kernel tick keeps the mtime, so a cert-then-key
rewrite could be missed for good; the files are a few KB and a poll reads them all. A
changed pair is loaded into a brand-new SSLContext and swapped into the name tables,
so only new handshakes see it (a connection keeps the SSL object it was made with).
A pair loads whole or not at all: on failure the old context stays, the problem is
logged once and listed in `errors` until the files change again. A changed CA file
rebuilds every pair context.

Not `ssl.create_default_context(Purpose.CLIENT_AUTH)`: that loads the system trust
store, so any client certificate from a public CA would pass mTLS.
Known gaps: no OCSP stapling (the ssl module has no server-side API); the listener's
minimum version and client_auth are fixed for the ServerTLS's life (a config change
of those builds a new ServerTLS, which needs a new listening socket's context); after
a CA is dropped from client_ca_file, a client resuming a TLS session made before the
reload is not verified again (the ssl module cannot flush sessions or rotate ticket
keys), until the session expires.
"""

from __future__ import annotations

import logging
import ssl

from gateway.config.tls_model import CertificatePair, ListenerTLS
from gateway.errors import ConfigError, ConfigErrors
from gateway.tls.certs import (
    CertFileError,
    CertFileErrors,
    CertInfo,
    file_digest,
    load_chain,
    load_pair,
    read_ca_pem,
)

__all__ = ["ALPN_PROTOCOLS", "ServerTLS", "build_server_context", "load_client_cert_into"]

log = logging.getLogger("gateway.tls")

ALPN_PROTOCOLS = ["http/1.1"]
_VERIFY = {"off": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _policy_context(tls: ListenerTLS, ca_pem: str | None) -> ssl.SSLContext:
    # SSLContext(PROTOCOL_TLS_SERVER) has the hardened defaults of PEP 644 (no SSLv3,
    # no compression, server cipher preference, SECLEVEL=2 ciphers) and trusts nothing.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # client-initiated renegotiation is a DoS lever
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    ctx.verify_mode = _VERIFY[tls.client_auth]
    if ca_pem is not None:
        try:
            ctx.load_verify_locations(cadata=ca_pem)
        except ssl.SSLError as e:
            raise CertFileError("client_ca_file", f"OpenSSL cannot load it: {e.reason}") from None
    return ctx


def load_client_cert_into(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """Load a client certificate chain and key into `ctx` (mTLS towards an upstream).

    Raises CertFileError (a ValueError; `.field` is 'cert_file' or 'key_file') with a
    readable message when a file is missing, unparsable, or the key does not match.
    """
    load_pair(cert_file, key_file)
    load_chain(ctx, cert_file, key_file)


def _read_ca(tls: ListenerTLS) -> str | None:
    """The client CA bundle as PEM text, checked; None when client_auth is 'off'."""
    if tls.client_auth == "off":
        return None
    if tls.client_ca_file is None:
        raise CertFileError("client_ca_file", f"required when client_auth is {tls.client_auth!r}")
    return read_ca_pem(tls.client_ca_file, "client_ca_file")


Digest = tuple[bytes | None, bytes | None]
_NOT_FAILED: Digest = (b"", b"")  # never a sha256 digest, nor a missing file's None


class _Pair:
    """One certificate pair's live state; `context` is replaced whole on reload."""

    __slots__ = ("config", "context", "digest", "errors", "failed", "index", "info")

    def __init__(self, index: int, config: CertificatePair) -> None:
        self.index = index
        self.config = config
        self.context: ssl.SSLContext | None = None
        self.info: CertInfo | None = None
        self.digest: Digest = _NOT_FAILED
        self.failed: Digest = _NOT_FAILED
        self.errors: list[ConfigError] = []

    def current_digest(self) -> Digest:
        return file_digest(self.config.cert_file), file_digest(self.config.key_file)

    def names(self) -> list[str]:
        if self.config.server_names is not None:
            return list(self.config.server_names)
        return self.info.dns_names if self.info is not None else []

    def __repr__(self) -> str:
        return f"<_Pair {self.index} {self.config.cert_file} names={self.names()}>"


def _load_pair(
    tls: ListenerTLS, config: CertificatePair, ca_pem: str | None
) -> tuple[ssl.SSLContext, CertInfo]:
    info = load_pair(config.cert_file, config.key_file)
    ctx = _policy_context(tls, ca_pem)
    load_chain(ctx, config.cert_file, config.key_file)
    return ctx, info


def _flatten(e: CertFileError) -> list[CertFileError]:
    return e.errors if isinstance(e, CertFileErrors) else [e]


def _handshake_logging_class(at: str) -> type[ssl.SSLObject]:
    """An SSLObject that logs a failed handshake (the event loops log it only in debug).

    asyncio and uvloop both call `SSLContext.wrap_bio`, which makes this class, so the
    failure reason (unknown CA, expired or missing client certificate, plain HTTP on
    the TLS port) reaches the log once per failed connection.
    """

    class HandshakeLoggingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                sni = getattr(self, "gateway_sni", None)
                log.warning("TLS handshake failed on %s (sni=%s): %s", at, sni, exc.reason or exc)
                raise

    return HandshakeLoggingSSLObject


class ServerTLS:
    """The TLS state of one listener: pass `context` to the server, poll `reload_if_changed`."""

    __slots__ = (
        "_at",
        "_ca_digest",
        "_ca_errors",
        "_ca_failed",
        "_ca_pem",
        "_exact",
        "_pairs",
        "_tls",
        "_wildcard",
        "context",
        "reloads",
    )

    def __init__(self, tls: ListenerTLS, at: str = "tls") -> None:
        """Load every file; ConfigErrors (all problems, with `at`-prefixed paths) if any fails."""
        self._tls = tls
        self._at = at
        self.reloads = 0
        self._ca_errors: list[ConfigError] = []
        self._ca_failed: bytes | None = b""  # b"": no failed content on record
        self._ca_digest = file_digest(tls.client_ca_file) if tls.client_auth != "off" else None
        self._ca_pem: str | None = None
        try:
            self._ca_pem = _read_ca(tls)
        except CertFileError as e:
            self._ca_errors = [ConfigError(f"{at}.{e.field}", e.message)]
        self._pairs = [_Pair(i, config) for i, config in enumerate(tls.certificates)]
        for pair in self._pairs:
            pair.digest = pair.current_digest()
            self._load_into(pair)
        if self.errors:
            raise ConfigErrors(at, self.errors)
        self._exact, self._wildcard = self._index()
        self.context = _policy_context(tls, self._ca_pem)
        self.context.sni_callback = self._on_sni
        self.context.sslobject_class = _handshake_logging_class(at)

    # --- serving ---------------------------------------------------------------------

    def _on_sni(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        # Runs inside OpenSSL's ClientHello processing: dict lookups only, never raise.
        ctx = self._pick(server_name).context
        if ctx is not None:
            sslobj.context = ctx
        # Kept on the SSL object for the ${sni} header variable: the ssl module has no
        # server-side accessor for the name the client asked for.
        sslobj.gateway_sni = server_name  # type: ignore[attr-defined]

    def _pick(self, server_name: str | None) -> _Pair:
        if server_name:
            name = server_name.lower().rstrip(".")
            pair = self._exact.get(name)
            if pair is None:
                _, dot, parent = name.partition(".")
                pair = self._wildcard.get(parent) if dot else None
            if pair is not None:
                return pair
        return self._pairs[0]

    def certificate_for(self, server_name: str | None) -> str:
        """The cert_file a handshake with this SNI name (or None) is served."""
        return self._pick(server_name).config.cert_file

    def _index(self) -> tuple[dict[str, _Pair], dict[str, _Pair]]:
        exact: dict[str, _Pair] = {}
        wildcard: dict[str, _Pair] = {}
        for pair in self._pairs:
            for name in pair.names():
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], pair)
                else:
                    exact.setdefault(name, pair)
        return exact, wildcard

    # --- reload ----------------------------------------------------------------------

    def _load_into(self, pair: _Pair) -> bool:
        """Load `pair` from its files (digest already taken); False and errors if it fails."""
        try:
            pair.context, pair.info = _load_pair(self._tls, pair.config, self._ca_pem)
        except CertFileError as e:
            at = f"{self._at}.certificates[{pair.index}]"
            pair.errors = [ConfigError(f"{at}.{x.field}", x.message) for x in _flatten(e)]
            return False
        pair.errors = []
        return True

    def reload_if_changed(self) -> bool:
        """Reload changed certificate, key and CA files; True if any context was swapped.

        Safe to call often (each call reads the files and hashes them). Problems are
        logged once per file content and kept in `errors`; the old certificate stays.
        """
        ca_changed = False
        if self._tls.client_auth != "off":
            ca_digest = file_digest(self._tls.client_ca_file)
            if ca_digest == self._ca_digest:
                self._ca_errors, self._ca_failed = [], b""  # back to what is loaded
            elif ca_digest != self._ca_failed:
                try:
                    pem = _read_ca(self._tls)
                except CertFileError as e:
                    self._ca_failed = ca_digest
                    self._ca_errors = [ConfigError(f"{self._at}.{e.field}", e.message)]
                    log.error("TLS reload failed, keeping the old CA: %s", self._ca_errors[0])
                else:
                    self._ca_pem, self._ca_digest, self._ca_failed = pem, ca_digest, b""
                    self._ca_errors = []
                    ca_changed = True
        changed = False
        for pair in self._pairs:
            digest = pair.current_digest()
            if not ca_changed and digest == pair.digest:
                pair.errors, pair.failed = [], _NOT_FAILED  # back to what is served
                continue
            if not ca_changed and digest == pair.failed:
                continue
            if self._load_into(pair):  # on failure pair.context and pair.info are untouched
                pair.digest, pair.failed = digest, _NOT_FAILED
                changed = True
                assert pair.info is not None
                log.info(
                    "TLS %s.certificates[%d]: loaded %s (%s, expires %s)",
                    self._at,
                    pair.index,
                    pair.config.cert_file,
                    pair.info.leaf.subject.rfc4514_string(),
                    pair.info.leaf.not_valid_after_utc.isoformat(),
                )
            else:
                pair.failed = digest
                for err in pair.errors:
                    log.error("TLS reload failed, keeping the old certificate: %s", err)
        if changed:
            self._exact, self._wildcard = self._index()
            self.reloads += 1
        return changed

    @property
    def errors(self) -> list[ConfigError]:
        """Outstanding load problems (the previous certificate or CA is still served)."""
        return [*self._ca_errors, *(e for pair in self._pairs for e in pair.errors)]

    def expiries(self) -> dict[str, float]:
        """cert_file -> notAfter (unix time) of the leaf being served, for a metric."""
        return {p.config.cert_file: p.info.not_after for p in self._pairs if p.info is not None}

    def __repr__(self) -> str:
        names = sorted({*self._exact, *(f"*.{n}" for n in self._wildcard)})
        return (
            f"<ServerTLS {self._at} certificates={len(self._pairs)} names={names} "
            f"min_version={self._tls.min_version} client_auth={self._tls.client_auth} "
            f"reloads={self.reloads} errors={len(self.errors)}>"
        )


def build_server_context(tls: ListenerTLS, *, at: str = "tls") -> ServerTLS:
    """Load a listener's certificates; ConfigErrors listing every file problem.

    `at` prefixes error paths: pass `f"listeners[{i}].tls"`.
    """
    return ServerTLS(tls, at)
