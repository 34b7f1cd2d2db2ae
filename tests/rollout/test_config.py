"""Service, rollout and region config: the exact message at the exact path."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import validate_data
from gateway.errors import ConfigErrors
from tests.rollout.conftest import service_config

EP = ["http://127.0.0.1:9"]


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        validate_data(data, "test.yaml")
    return [str(e) for e in info.value.errors]


def with_service(**svc: Any) -> dict[str, Any]:
    return service_config(EP, ["http://127.0.0.1:10"], svc)


def test_a_valid_service_config() -> None:
    cfg = validate_data(with_service(override={"header": "X-Canary"}))
    assert cfg.services["users"].rollout is not None
    assert cfg.services["users"].rollout.steps[0].hold == 600


STATIC = {"stable": {"upstream": "users-v1", "weight": 95}, "canary": {"upstream": "users-v2"}}


@pytest.mark.parametrize(
    ("svc", "message"),
    [
        ({"versions": {"stable": {"upstream": "users-v1", "weight": 95},
                       "canary": {"upstream": "users-v2"}}},
         "services.users: versions.stable.weight: set by rollout.steps; remove it "
         "(or remove rollout to set weights by hand)"),
        ({"versions": STATIC, "rollout": None},
         "services.users: versions.canary.weight: required without a rollout"),
        ({"versions": {"stable": {"upstream": "users-v1", "weight": 95},
                       "canary": {"upstream": "users-v2", "weight": 10}}, "rollout": None},
         "services.users: versions: weights must add up to 100 (they add up to 105)"),
        ({"versions": {"stable": {"upstream": "users-v1", "weight": 99.995},
                       "canary": {"upstream": "users-v2", "weight": 0.01}}, "rollout": None},
         "services.users.versions.stable: weight: at most two decimals (10,000 buckets)"),
        ({"baseline": "main"}, "services.users: baseline: no version 'main'"),
        ({"rollout": {"version": "beta", "steps": [{"weight": 100}]}},
         "services.users: rollout.version: no version 'beta'"),
        ({"rollout": {"steps": [{"weight": 50}, {"weight": 100}]}},
         "services.users.rollout: steps[0].hold: required on every step but the last"),
        ({"rollout": {"steps": [{"weight": 50, "hold": "1m"}, {"weight": 40, "hold": "1m"}]}},
         "services.users.rollout: steps[1].weight: must be above the previous step's"),
        ({"rollout": {"steps": [{"weight": 50, "hold": "1m"}, {"weight": 90}]}},
         "services.users.rollout: steps[1].weight: the last step must be 100"),
        ({"rollout": {"steps": [{"weight": 100}], "gates": {"max_5xx_ratio": 2}}},
         "services.users.rollout.gates.max_5xx_ratio: must be <= 1"),
        ({"sticky": {"key": "session"}},
         "services.users.sticky.key: invalid key 'session': expected 'cookie', 'header', "
         "'client_ip' or 'api_key'"),
        ({"sticky": {"key": "header"}}, "services.users.sticky: key 'header' needs a name"),
        ({"sticky": {"key": "client_ip", "set_cookie": True}},
         "services.users.sticky: set_cookie is only for key 'cookie'"),
        ({"override": {}}, "services.users.override: give header, cookie or both"),
        ({"versions": {"stable": {"upstream": "users-v1"}, "canary": {"upstream": "nope"}}},
         "services.users.versions.canary.upstream: unknown upstream 'nope'"),
        ({"versions": {"stable": {"upstream": "users-v1"}, "canary": {"upstream": "users-v1"}}},
         "services.users.versions.canary.upstream: upstream 'users-v1' is also version "
         "'stable''s"),
    ],
    ids=["weight-with-rollout", "weight-missing", "weights-sum", "weight-precision",
         "baseline", "rollout-version", "hold-missing", "steps-order", "last-not-100",
         "ratio-range", "sticky-kind", "header-name", "set-cookie-kind", "override-empty",
         "unknown-upstream", "shared-upstream"],
)  # fmt: skip
def test_service_errors(svc: dict[str, Any], message: str) -> None:
    assert errors_of(with_service(**svc)) == [message]


def test_a_service_may_not_share_an_upstreams_name() -> None:
    data = with_service()
    data["services"]["users-v1"] = data["services"]["users"]
    assert errors_of(data) == ["services.users-v1: name 'users-v1' is also an upstream's"]


def test_a_route_may_name_a_service_but_not_nothing() -> None:
    data = with_service()
    data["routes"].append({"name": "x", "upstream": "nowhere"})
    assert errors_of(data) == ["routes[1].upstream: unknown upstream 'nowhere'"]


@pytest.mark.parametrize(
    ("regions", "endpoints", "message"),
    [
        ({"failover": ["eu", "mars"]}, [{"url": EP[0], "region": "eu"}],
         "upstreams.users-v1.regions.failover[1]: no endpoint in 'mars'"),
        ({"weights": {"mars": 1}}, [{"url": EP[0], "region": "eu"}],
         "upstreams.users-v1.regions.weights.mars: no endpoint in 'mars'"),
        ({}, EP, "upstreams.users-v1.regions: no endpoint names a region"),
    ],
    ids=["failover-unknown", "weights-unknown", "no-regions"],
)  # fmt: skip
def test_region_errors(regions: dict[str, Any], endpoints: list[Any], message: str) -> None:
    data = with_service()
    data["upstreams"]["users-v1"] = {"endpoints": endpoints, "regions": regions}
    assert errors_of(data) == [message]
