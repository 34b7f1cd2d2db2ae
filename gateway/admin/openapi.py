"""The admin API's OpenAPI 3 description, written by hand, served at /api/openapi.json.

Kept in step with app.py by tests/admin/test_openapi.py (every aiohttp route is
described here and every path here is routed) and exercised by a schemathesis run.
Helpers build the repeated parts (JSON answers, the error shape, path parameters);
the older `/rollouts...` and `/bans...` aliases share their /api twins' operations.
"""

from __future__ import annotations

from typing import Any

import gateway

JSON = "application/json"
Obj = dict[str, Any]

ERROR: Obj = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "additionalProperties": True,
}
ANY_OBJECT: Obj = {"type": "object", "additionalProperties": True}


def _answer(description: str, schema: Obj | None = None) -> Obj:
    return {"description": description, "content": {JSON: {"schema": schema or ANY_OBJECT}}}


def _errors(*codes: int) -> Obj:
    text = {
        400: "Bad input (not an address, a body that is not the documented JSON).",
        401: "No or wrong bearer token.",
        404: "No such name (rollout, action, upstream, endpoint) or nothing to act on.",
        409: "A rollout move its state does not allow.",
        422: "The config file failed validation; the running config is kept.",
        501: "Not reachable from this listener (e.g. the cache store cannot purge).",
        503: "A store or every worker process did not answer.",
    }
    return {str(c): _answer(text[c], {"$ref": "#/components/schemas/Error"}) for c in codes}


def _op(summary: str, ok: str, *codes: int, ok_schema: Obj | None = None, **more: Any) -> Obj:
    return {
        "summary": summary,
        "responses": {"200": _answer(ok, ok_schema), **_errors(401, 503, *codes)},
        **more,
    }


def _param(name: str, description: str, schema: Obj | None = None) -> Obj:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _file(summary: str, content_type: str) -> Obj:
    return {
        "get": {
            "summary": summary,
            "security": [],
            "responses": {
                "200": {"description": summary, "content": {content_type: {"schema": {}}}}
            },
        }
    }


def _list(key: str) -> Obj:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "array", "items": ANY_OBJECT}},
    }


ROLLOUT_NAME = _param("name", "The service whose rollout it is.")
ROLLOUT_ACTION = _param(
    "action",
    "The operator action.",
    {"type": "string", "enum": ["pause", "resume", "promote", "abort"]},
)


def _rollouts_and_bans() -> Obj:
    return {
        "/rollouts": {
            "get": _op(
                "Every rollout, merged over the workers.",
                "Rollouts.",
                501,
                ok_schema=_list("rollouts"),
            )
        },
        "/rollouts/{name}": {
            "parameters": [ROLLOUT_NAME],
            "get": _op("One rollout: state, step, weight, gate values.", "The rollout.", 404, 501),
        },
        "/rollouts/{name}/{action}": {
            "parameters": [ROLLOUT_NAME, ROLLOUT_ACTION],
            "post": _op(
                "Pause, resume, promote or abort a rollout, in every worker.",
                "The rollout after the action.",
                404,
                409,
                501,
            ),
        },
        "/bans": {
            "get": _op(
                "Active bans, merged by address.", "Bans.", 404, 501, ok_schema=_list("bans")
            )
        },
        "/bans/{ip}": {
            "parameters": [_param("ip", "The banned client address (IPv4 or IPv6).")],
            "delete": _op("Lift a ban in every worker (and in Redis).", "Lifted.", 400, 404, 501),
        },
    }


def build() -> Obj:
    legacy = _rollouts_and_bans()
    paths: Obj = {
        "/healthz": {
            "get": {
                "summary": "Liveness: the process runs its event loop.",
                "security": [],
                "responses": {"200": _answer("Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: a config is loaded and every worker listens.",
                "security": [],
                "responses": {"200": _answer("Ready."), "503": _answer("Not ready.")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus exposition, every worker merged.",
                "responses": {
                    "200": {"description": "Metrics.", "content": {"text/plain": {"schema": {}}}},
                    **_errors(401),
                },
            }
        },
        "/api/openapi.json": {"get": _op("This description.", "OpenAPI 3 document.")},
        "/api/status": {
            "get": _op(
                "Version, config file, loaded hash and time, the last reload's result and "
                "errors (with paths), per worker.",
                "Status.",
                501,
            )
        },
        "/api/routes": {
            "get": _op(
                "Routes: name, match, upstream, configured filters.",
                "Routes.",
                501,
                ok_schema=_list("routes"),
            )
        },
        "/api/stats": {
            "get": _op(
                "Cumulative per-route counters from the merged scrape (requests, by status "
                "class, 5xx errors, blocks) and the time read; rates are differences.",
                "Counters.",
            )
        },
        "/api/upstreams": {
            "get": _op(
                "Upstreams and endpoints: health, breaker state, in-flight, pool stats.",
                "Upstreams.",
                501,
                ok_schema=_list("upstreams"),
            )
        },
        "/api/upstreams/{name}/reset-breakers": {
            "parameters": [_param("name", "The upstream.")],
            "post": _op(
                "Close the circuit breakers of an upstream (or one endpoint) in every worker.",
                "The endpoints reset.",
                400,
                404,
                501,
                requestBody={
                    "required": False,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "endpoint": {
                                        "type": "string",
                                        "description": "An endpoint URL; all without it.",
                                    }
                                },
                                "additionalProperties": False,
                            }
                        }
                    },
                },
            ),
        },
        "/api/services": {
            "get": _op("Services and their version splits (weights).", "Services.", 501)
        },
        "/api/blocks": {"get": _op("Clients blocked recently, merged by address.", "Blocks.")},
        "/api/reload": {
            "post": _op(
                "Reload the config file in every worker.", "Reloaded: the new hash.", 422, 501
            )
        },
        "/api/cache/purge": {
            "post": _op(
                "Drop cached responses by exact key, key prefix or tag, in every worker.",
                "How many entries were dropped.",
                400,
                501,
                requestBody={
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "oneOf": [
                                    _one_string("key"),
                                    _one_string("prefix"),
                                    _one_string("tag"),
                                ]
                            }
                        }
                    },
                },
            )
        },
        "/": _file("The operator dashboard.", "text/html"),
        "/dashboard": _file("The operator dashboard.", "text/html"),
        "/dashboard/app.js": _file("The dashboard's script.", "text/javascript"),
        "/dashboard/style.css": _file("The dashboard's style sheet.", "text/css"),
        **{f"/api{path}": item for path, item in legacy.items()},
        **legacy,
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Gateway admin API",
            "version": gateway.__version__,
            "description": "Operate the gateway: status, routes, upstreams, bans, rollouts, "
            "reload, breaker reset, cache purge. /rollouts and /bans are aliases of their "
            "/api twins.",
        },
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # A token is needed when one is configured (always off loopback).
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }


def _one_string(name: str) -> Obj:
    return {
        "type": "object",
        "required": [name],
        "properties": {name: {"type": "string", "minLength": 1}},
        "additionalProperties": False,
    }


OPENAPI = build()
