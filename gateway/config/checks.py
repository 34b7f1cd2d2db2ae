"""Cross-field checks: rules that relate different parts of a config file.

They run on the raw parsed data (dicts and lists straight from YAML/TOML), not on the
model, so they are reported together with pydantic's errors even when validation of
some unrelated part failed; the operator sees every mistake in one pass. Each check is
therefore defensive: a value of the wrong shape is skipped here, since the model
reports it already.

Address clashes: two sockets clash when their ports are equal (and not 0, the
ephemeral port) and their hosts are equal or either is a wildcard (0.0.0.0, ::).
Host names are compared as written; 'localhost' and '127.0.0.1' are not resolved.

TLS pairings: client_auth other than 'off' needs client_ca_file and a CA file without
client_auth is an error too (the operator believes clients are verified when they are
not); redirect_to_https only on a plain listener; an explicit SNI server name in two
certificate pairs of one listener is an error (which one would be served?).

Rate limits: policy names are unique per route (they name the RateLimit header items
and the buckets), and `store: redis` needs the top-level `redis` section; so does
`bans.store: redis`.

Principals: a rate-limit policy keyed on `principal` or with `tiers` needs the route's
`auth` to name callers (api_keys or jwt); without it every request would take the
fallback, or be refused 400.

Services and regions (`rollout_checks`): a route names an upstream or a service, a
service's versions name upstreams, the two name spaces do not overlap, and the regions
an upstream's `regions` section lists are regions its endpoints have.
"""

from __future__ import annotations

from typing import Any

from gateway.config.fields import split_host_port
from gateway.config.rollout_checks import check_regions, check_services
from gateway.errors import ConfigError

_WILDCARDS = {"0.0.0.0", "::"}
_DEFAULT_ADMIN = "127.0.0.1:9901"


def cross_check(data: object) -> list[ConfigError]:
    """Every cross-field problem in `data`, the raw parsed config."""
    if not isinstance(data, dict):
        return []
    return [
        *_check_routes(data),
        *_check_listeners(data),
        *_check_listener_tls(data),
        *_check_rate_limits(data),
        *_check_bans(data),
        *_check_principals(data),
        *check_services(data),
        *check_regions(data),
    ]


def _check_routes(data: dict[str, Any]) -> list[ConfigError]:
    routes = data.get("routes")
    if not isinstance(routes, list):
        return []
    upstreams = data.get("upstreams")
    known = set(upstreams) if isinstance(upstreams, dict) else None
    services = data.get("services")
    if known is not None and isinstance(services, dict):
        known |= set(services)
    errors: list[ConfigError] = []
    first_by_name: dict[str, int] = {}
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        at = f"routes[{i}]"
        name = route.get("name")
        if isinstance(name, str):
            if name in first_by_name:
                errors.append(
                    ConfigError(
                        f"{at}.name",
                        f"duplicate route name {name!r} (first in routes[{first_by_name[name]}])",
                    )
                )
            else:
                first_by_name[name] = i
        upstream = route.get("upstream")
        if known is not None and isinstance(upstream, str) and upstream not in known:
            errors.append(ConfigError(f"{at}.upstream", f"unknown upstream {upstream!r}"))
        errors.extend(_check_rewrite(at, route))
    return errors


def _check_rewrite(at: str, route: dict[str, Any]) -> list[ConfigError]:
    rewrite = route.get("rewrite")
    if not isinstance(rewrite, dict):
        return []
    match = route.get("match")
    path = match.get("path") if isinstance(match, dict) else None
    has_prefix = isinstance(path, dict) and isinstance(path.get("prefix"), str)
    if has_prefix:
        return []
    errors = []
    if rewrite.get("strip_prefix") is True:
        errors.append(ConfigError(f"{at}.rewrite.strip_prefix", "needs match.path.prefix"))
    if rewrite.get("prefix") is not None:
        errors.append(ConfigError(f"{at}.rewrite.prefix", "needs match.path.prefix"))
    return errors


def _socket(address: object) -> tuple[str, int] | None:
    if not isinstance(address, str):
        return None
    try:
        host, port = split_host_port(address)
    except ValueError:
        return None  # the model reports it
    return host.lower(), port


def _clash(a: tuple[str, int], b: tuple[str, int]) -> bool:
    if a[1] != b[1] or a[1] == 0:
        return False
    return a[0] == b[0] or a[0] in _WILDCARDS or b[0] in _WILDCARDS


def _check_listeners(data: dict[str, Any]) -> list[ConfigError]:
    listeners = data.get("listeners")
    if not isinstance(listeners, list):
        return []
    errors: list[ConfigError] = []
    sockets: list[tuple[int, tuple[str, int]]] = []
    first_by_name: dict[str, int] = {}
    for i, listener in enumerate(listeners):
        if not isinstance(listener, dict):
            continue
        name = listener.get("name")
        name = f"listener-{i}" if name is None else name
        if isinstance(name, str):
            if name in first_by_name:
                errors.append(
                    ConfigError(
                        f"listeners[{i}].name",
                        f"duplicate listener name {name!r} (first in "
                        f"listeners[{first_by_name[name]}])",
                    )
                )
            else:
                first_by_name[name] = i
        sock = _socket(listener.get("address"))
        if sock is None:
            continue
        for j, other in sockets:
            if _clash(sock, other):
                errors.append(
                    ConfigError(
                        f"listeners[{i}].address",
                        f"address {listener['address']!r} clashes with listeners[{j}]",
                    )
                )
                break
        sockets.append((i, sock))

    admin = data.get("admin", {})
    if isinstance(admin, dict) and admin.get("enabled", True) is True:
        address = admin.get("address", _DEFAULT_ADMIN)
        sock = _socket(address)
        for j, other in sockets:
            if sock is not None and _clash(sock, other):
                default = "" if "address" in admin else " (the default admin address)"
                errors.append(
                    ConfigError(
                        "admin.address", f"address {address!r}{default} clashes with listeners[{j}]"
                    )
                )
                break
    return errors


def _check_listener_tls(data: dict[str, Any]) -> list[ConfigError]:
    listeners = data.get("listeners")
    if not isinstance(listeners, list):
        return []
    errors: list[ConfigError] = []
    for i, listener in enumerate(listeners):
        if not isinstance(listener, dict):
            continue
        at = f"listeners[{i}]"
        tls = listener.get("tls")
        if listener.get("redirect_to_https") is not None and tls is not None:
            errors.append(ConfigError(f"{at}.redirect_to_https", "only on a listener without tls"))
        if not isinstance(tls, dict):
            continue
        auth = tls.get("client_auth", "off")
        has_ca = tls.get("client_ca_file") is not None
        if auth in ("optional", "required") and not has_ca:
            errors.append(
                ConfigError(f"{at}.tls.client_ca_file", f"required when client_auth is {auth!r}")
            )
        elif auth == "off" and has_ca:
            errors.append(
                ConfigError(
                    f"{at}.tls.client_ca_file",
                    "unused while client_auth is 'off' (set 'optional' or 'required')",
                )
            )
        errors.extend(_check_server_names(f"{at}.tls", tls))
    return errors


def _check_server_names(at: str, tls: dict[str, Any]) -> list[ConfigError]:
    pairs = tls.get("certificates")
    if not isinstance(pairs, list):
        return []
    errors: list[ConfigError] = []
    first: dict[str, int] = {}
    for i, pair in enumerate(pairs):
        names = pair.get("server_names") if isinstance(pair, dict) else None
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list):
            continue
        for j, name in enumerate(names):
            if not isinstance(name, str):
                continue
            key = name.lower()
            if key in first and first[key] != i:
                errors.append(
                    ConfigError(
                        f"{at}.certificates[{i}].server_names[{j}]",
                        f"server name {name!r} is already served by certificates[{first[key]}]",
                    )
                )
            first.setdefault(key, i)
    return errors


def _check_rate_limits(data: dict[str, Any]) -> list[ConfigError]:
    routes = data.get("routes")
    if not isinstance(routes, list):
        return []
    has_redis = data.get("redis") is not None
    errors: list[ConfigError] = []
    for i, route in enumerate(routes):
        policies = route.get("rate_limits") if isinstance(route, dict) else None
        if not isinstance(policies, list):
            continue
        first: dict[str, int] = {}
        for j, policy in enumerate(policies):
            if not isinstance(policy, dict):
                continue
            at = f"routes[{i}].rate_limits[{j}]"
            name = policy.get("name")
            if isinstance(name, str):
                if name in first:
                    errors.append(
                        ConfigError(
                            f"{at}.name",
                            f"duplicate policy name {name!r} (first in rate_limits[{first[name]}])",
                        )
                    )
                first.setdefault(name, j)
            if policy.get("store") == "redis" and not has_redis:
                errors.append(
                    ConfigError(f"{at}.store", "'redis' needs the top-level redis section")
                )
    return errors


def _check_principals(data: dict[str, Any]) -> list[ConfigError]:
    routes = data.get("routes")
    if not isinstance(routes, list):
        return []
    errors: list[ConfigError] = []
    for i, route in enumerate(routes):
        if not isinstance(route, dict) or not isinstance(route.get("rate_limits"), list):
            continue
        auth = route.get("auth")
        names = isinstance(auth, dict) and (auth.get("api_keys") or auth.get("jwt"))
        if names:
            continue
        for j, policy in enumerate(route["rate_limits"]):
            if not isinstance(policy, dict):
                continue
            at = f"routes[{i}].rate_limits[{j}]"
            key = policy.get("key")
            if isinstance(key, list) and "principal" in key:
                errors.append(
                    ConfigError(
                        f"{at}.key", "'principal' needs the route's auth.api_keys or auth.jwt"
                    )
                )
            if policy.get("tiers"):
                errors.append(
                    ConfigError(f"{at}.tiers", "tiers need the route's auth.api_keys or auth.jwt")
                )
    return errors


def _check_bans(data: dict[str, Any]) -> list[ConfigError]:
    bans = data.get("bans")
    if isinstance(bans, dict) and bans.get("store") == "redis" and data.get("redis") is None:
        return [ConfigError("bans.store", "'redis' needs the top-level redis section")]
    return []
