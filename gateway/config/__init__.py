"""Gateway configuration: typed, strict, every error reported at once with its path.

units.py   Duration ('250ms', '5m' -> float seconds) and Size ('10KiB' -> int bytes)
fields.py  field types and checks (names, addresses, hosts, CIDRs), the StrictModel base
model.py   pydantic models (Config, Listener, Upstream, Route, ...); per-field rules
tls_model.py  ListenerTLS, CertificatePair, UpstreamTLS (files named, never opened here)
headers_model.py  HeaderRules: a route's header edits, templates, security headers
checks.py  cross-field rules on the raw data (route -> upstream, duplicate names,
           clashing addresses, rewrite needs a prefix match, TLS field pairings)
load.py    load_config / parse_config / validate_data, config_hash, check_command
schema.py  JSON Schema from the model; `python -m gateway.config.schema` writes
           config/gateway.schema.json
"""

from gateway.config.load import check_command, config_hash, load_config, parse_config, validate_data
from gateway.config.model import (
    Admin,
    CertificatePair,
    Config,
    Endpoint,
    HeaderEdits,
    HeaderMatch,
    HeaderRules,
    Listener,
    ListenerTLS,
    Match,
    PathMatch,
    PoolSettings,
    Rewrite,
    Route,
    SecurityHeaders,
    ServerLimits,
    Timeouts,
    Upstream,
    UpstreamTLS,
)
from gateway.config.units import Duration, Size, parse_duration, parse_size

__all__ = [
    "Admin",
    "CertificatePair",
    "Config",
    "Duration",
    "Endpoint",
    "HeaderEdits",
    "HeaderMatch",
    "HeaderRules",
    "Listener",
    "ListenerTLS",
    "Match",
    "PathMatch",
    "PoolSettings",
    "Rewrite",
    "Route",
    "SecurityHeaders",
    "ServerLimits",
    "Size",
    "Timeouts",
    "Upstream",
    "UpstreamTLS",
    "check_command",
    "config_hash",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "validate_data",
]
