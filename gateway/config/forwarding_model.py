"""What the upstream is told about the client: forwarding headers and certificate facts.

Kept apart from model.py to keep that module readable; re-exported there.
"""

from __future__ import annotations

from pydantic import Field

from gateway.config.fields import StrictModel, Token


class ClientCertHeaders(StrictModel):
    """Headers carrying a verified client certificate's facts upstream (mTLS)."""

    client_cert: bool = Field(
        default=True,
        description="Send RFC 9440 Client-Cert (and Client-Cert-Chain where the chain is known).",
    )
    subject: Token | None = Field(
        default="X-Client-Cert-Subject", description="Header for the RFC 4514 subject; null: none."
    )
    issuer: Token | None = Field(
        default="X-Client-Cert-Issuer", description="Header for the RFC 4514 issuer; null: none."
    )
    fingerprint: Token | None = Field(
        default="X-Client-Cert-SHA256",
        description="Header for the SHA-256 fingerprint (hex); null: none.",
    )
    not_after: Token | None = Field(
        default="X-Client-Cert-Not-After",
        description="Header for the expiry time (ISO 8601); null: none.",
    )


class Forwarding(StrictModel):
    """Forwarding headers the gateway adds (and, from untrusted clients, rebuilds)."""

    x_forwarded: bool = Field(
        default=True, description="Send X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host."
    )
    forwarded: bool = Field(default=True, description="Send the RFC 7239 Forwarded header.")
    client_cert_headers: ClientCertHeaders = Field(
        default=ClientCertHeaders(), description="Client certificate facts sent upstream."
    )
