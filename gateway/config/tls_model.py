"""The TLS parts of the config model: listener certificates, client certificates, upstream TLS.

A listener's `tls` lists certificate pairs; the TLS layer (`gateway.tls`) serves the
pair whose names match the client's SNI name (exact, then '*.example.com'), else the
first pair. Names come from `server_names` or, when that is absent, from the
certificate's subjectAltName DNS entries, which only the TLS layer can read.

The model names files (certificates, keys, CA bundles) but never opens them, so a
config validates on a machine without them; `gateway.tls.check_tls_files` reads them
(missing, unreadable, key/certificate mismatch, expiry) for `gateway check` and loads.
Rules relating fields across objects (client_auth needs client_ca_file, a redirecting
listener has no tls) are in `checks.py`, so they carry the path of the field to fix.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from gateway.config.fields import FilePath, Host, StrictModel, choice, one_or_many

__all__ = ["CertificatePair", "ClientAuth", "ListenerTLS", "TLSVersion", "UpstreamTLS"]

TLSVersion = Annotated[
    Literal["1.2", "1.3"], BeforeValidator(choice("TLS version", ("1.2", "1.3")))
]
ClientAuth = Annotated[
    Literal["off", "optional", "required"],
    BeforeValidator(choice("client_auth", ("off", "optional", "required"))),
]


class CertificatePair(StrictModel):
    """A server certificate and its key, served to clients asking for its names (SNI)."""

    cert_file: FilePath = Field(
        description="PEM certificate chain: the leaf first, then its intermediates."
    )
    key_file: FilePath = Field(description="PEM private key of the leaf, unencrypted.")
    server_names: (
        Annotated[
            list[Host],
            BeforeValidator(one_or_many, json_schema_input_type=str | list[str]),
            Field(min_length=1),
        ]
        | None
    ) = Field(
        default=None,
        description="SNI names served with this pair, exact or '*.example.com'; "
        "default the certificate's DNS names (subjectAltName).",
    )


class ListenerTLS(StrictModel):
    """TLS termination on a listener: certificates by SNI name, client certificates."""

    certificates: list[CertificatePair] = Field(
        min_length=1,
        description="Certificates chosen by SNI name; the first is the default, served "
        "when no name matches or the client sends none.",
    )
    min_version: TLSVersion = Field(
        default="1.2", description="Oldest TLS version accepted: '1.2' or '1.3'."
    )
    client_auth: ClientAuth = Field(
        default="off",
        description="Client certificates (mTLS): 'off', 'optional' (verified when sent) "
        "or 'required'.",
    )
    client_ca_file: FilePath | None = Field(
        default=None,
        description="PEM CA bundle that client certificates are verified against; "
        "required unless client_auth is 'off'.",
    )


class UpstreamTLS(StrictModel):
    """TLS towards https endpoints."""

    verify: bool = Field(
        default=True, description="Verify the endpoint's certificate and hostname."
    )
    ca_file: str | None = Field(
        default=None, description="PEM CA bundle; default the system store."
    )
    server_name: str | None = Field(
        default=None, description="SNI and the hostname checked; default the endpoint host."
    )
    cert_file: FilePath | None = Field(
        default=None, description="PEM client certificate chain presented to endpoints (mTLS)."
    )
    key_file: FilePath | None = Field(
        default=None, description="PEM private key of cert_file, unencrypted."
    )

    @model_validator(mode="after")
    def _pair(self) -> UpstreamTLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self
