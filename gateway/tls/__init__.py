"""TLS for the gateway: listener contexts with SNI and reload, client-certificate facts.

context.py  build_server_context(ListenerTLS) -> ServerTLS: the listener's SSLContext,
            one context per certificate pair chosen by SNI, reload_if_changed(),
            expiries(); load_client_cert_into(ctx, cert, key) for upstream mTLS
facts.py    ClientCertFacts from a verified peer certificate: RFC 9440 Client-Cert /
            Client-Cert-Chain values, subject, issuer, fingerprint, not-after (LRU cached)
check.py    check_tls_files(config) -> (errors, warnings): every named file opened,
            keys matched to certificates, expiry within 14 days warned
certs.py    reading PEM certificates, keys and CA bundles with cryptography into
            CertFileError(field, message) that names the config key to fix
dev.py      write_dev_certs / cert_dev_command: `gateway cert dev DIR`, a local CA
"""

from gateway.tls.certs import CertFileError
from gateway.tls.check import check_tls_files
from gateway.tls.context import (
    ALPN_PROTOCOLS,
    ServerTLS,
    build_server_context,
    load_client_cert_into,
)
from gateway.tls.dev import cert_dev_command, write_dev_certs
from gateway.tls.facts import ClientCertFacts, client_cert_facts, facts_from_ssl_object

__all__ = [
    "ALPN_PROTOCOLS",
    "CertFileError",
    "ClientCertFacts",
    "ServerTLS",
    "build_server_context",
    "cert_dev_command",
    "check_tls_files",
    "client_cert_facts",
    "facts_from_ssl_object",
    "load_client_cert_into",
    "write_dev_certs",
]
