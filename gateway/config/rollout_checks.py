"""Cross-field checks of services and regions, on the raw data (see checks.py).

- `services.<s>.versions.<v>.upstream` names an upstream;
- a service and an upstream never share a name (a route's `upstream` names either);
- two versions of one service do not name the same upstream (their stats would mix);
- `upstreams.<u>.regions` lists only regions its endpoints carry, and needs some.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import ConfigError

__all__ = ["check_regions", "check_services"]


def check_services(data: dict[str, Any]) -> list[ConfigError]:
    services = data.get("services")
    if not isinstance(services, dict):
        return []
    upstreams = data.get("upstreams")
    known = set(upstreams) if isinstance(upstreams, dict) else None
    errors: list[ConfigError] = []
    for name, svc in services.items():
        at = f"services.{name}"
        if known is not None and name in known:
            errors.append(ConfigError(at, f"name {name!r} is also an upstream's"))
        versions = svc.get("versions") if isinstance(svc, dict) else None
        if not isinstance(versions, dict):
            continue
        seen: dict[str, str] = {}
        for vname, version in versions.items():
            up = version.get("upstream") if isinstance(version, dict) else None
            if not isinstance(up, str):
                continue
            vat = f"{at}.versions.{vname}.upstream"
            if known is not None and up not in known:
                errors.append(ConfigError(vat, f"unknown upstream {up!r}"))
            elif up in seen:
                errors.append(ConfigError(vat, f"upstream {up!r} is also version {seen[up]!r}'s"))
            seen.setdefault(up, vname)
    return errors


def check_regions(data: dict[str, Any]) -> list[ConfigError]:
    upstreams = data.get("upstreams")
    if not isinstance(upstreams, dict):
        return []
    errors: list[ConfigError] = []
    for name, up in upstreams.items():
        if not isinstance(up, dict) or not isinstance(up.get("regions"), dict):
            continue
        at = f"upstreams.{name}.regions"
        endpoints = up.get("endpoints")
        have = {
            ep.get("region")
            for ep in (endpoints if isinstance(endpoints, list) else [])
            if isinstance(ep, dict)
        } - {None}
        if not have:
            errors.append(ConfigError(at, "no endpoint names a region"))
            continue
        regions = up["regions"]
        failover = regions.get("failover")
        for i, region in enumerate(failover if isinstance(failover, list) else []):
            if isinstance(region, str) and region not in have:
                errors.append(ConfigError(f"{at}.failover[{i}]", f"no endpoint in {region!r}"))
        weights = regions.get("weights")
        for region in weights if isinstance(weights, dict) else {}:
            if isinstance(region, str) and region not in have:
                errors.append(ConfigError(f"{at}.weights.{region}", f"no endpoint in {region!r}"))
    return errors
