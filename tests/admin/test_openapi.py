"""The OpenAPI description and the admin app's routes describe the same API."""

from __future__ import annotations

import re

import schemathesis

from gateway.admin.app import make_admin_app
from gateway.admin.openapi import OPENAPI

METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def routed() -> set[tuple[str, str]]:
    app = make_admin_app(lambda: {"ready": True})
    return {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.resource}


def described() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in OPENAPI["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_is_described_and_every_description_routed() -> None:
    assert routed() - described() == set(), "routes missing from openapi.py"
    assert described() - routed() == set(), "openapi.py describes paths the app lacks"


def test_path_parameters_are_declared() -> None:
    for path, item in OPENAPI["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert names == declared, path


def test_schemathesis_reads_every_operation() -> None:
    schema = schemathesis.openapi.from_dict(OPENAPI)
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert len(labels) == len(described())
