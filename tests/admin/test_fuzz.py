"""schemathesis against the admin API of a running two-worker gateway: requests made
from the served OpenAPI description (valid ones and invalid ones) never get a 500,
and valid ones get documented statuses, content types and bodies.

Kept short (a few examples per operation, no shrinking database): it is a smoke run
in the suite; run with more examples by hand when changing the API."""

from __future__ import annotations

import asyncio

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.admin.conftest import StartGateway

EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 6}
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def examine(op: schemathesis.APIOperation, mode: GenerationMode, base: str, out: list[str]) -> int:
    """Run `op`'s generated cases in `mode`; failures appended to `out`; cases run."""
    calls = 0

    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        nonlocal calls
        calls += 1
        resp = case.call(base_url=base, timeout=15)
        if resp.status_code == 500:
            out.append(f"{case.method} {case.formatted_path}: 500 {resp.text}")
        elif mode is GenerationMode.POSITIVE:
            try:
                case.validate_response(resp, checks=CHECKS)
            except AssertionError as exc:
                out.append(f"{op.label} ({case.formatted_path}): {exc}")

    try:
        run()
    except Unsatisfiable:  # negative mode: an operation without inputs has none to break
        assert mode is GenerationMode.NEGATIVE, op.label
    return calls


def fuzz(base: str) -> tuple[int, list[str]]:
    schema = schemathesis.openapi.from_url(base + "/api/openapi.json")
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        for mode in EXAMPLES:
            calls += examine(result.ok(), mode, base, failures)
    return calls, failures


async def test_schemathesis_finds_no_500(start_gateway: StartGateway) -> None:
    gw = await start_gateway(2)
    calls, failures = await asyncio.to_thread(fuzz, gw.admin.base)
    assert failures == []
    assert calls > 100
