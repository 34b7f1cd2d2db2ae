"""Detection harness: the attack and benign corpora through a real ScreeningFilter.

    .venv/bin/python bench/screening_harness.py [--verbose] [--no-timing] [--no-prefilter]

Builds the filter from a validated config (default screening settings, plus every
header inspected) as a route would, runs each corpus request (bench/corpus/*.jsonl,
written by bench/corpus/make_corpus.py) through it as a real Exchange, and prints per
category the detection rate (attacks answered 403) and the false-positive rate (benign
requests answered 403), then the in-process CPU cost of screening a request with a
~4 KB JSON body, benign and with an attack. --no-prefilter runs every rule's regex on
every value instead (the reference the prefilter must agree with, ~100x slower).
Targets (issue 5): detection >= 95%, false positives <= 0.5%. --verbose lists every
miss and false positive with the rules that scored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from multidict import CIMultiDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.body import BytesBody  # noqa: E402
from gateway.config.load import validate_data  # noqa: E402
from gateway.exchange import Exchange, Reply  # noqa: E402
from gateway.filters.screening import Matcher, ScreeningFilter  # noqa: E402
from gateway.routing import Route  # noqa: E402

CORPUS = ROOT / "bench" / "corpus"
SCREENING: dict[str, Any] = {"headers": ["*"]}


def build(screening: dict[str, Any]) -> tuple[ScreeningFilter, Route]:
    cfg = validate_data(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "upstreams": {"up": {"endpoints": ["http://127.0.0.1:1"]}},
            "routes": [{"name": "api", "upstream": "up", "screening": screening}],
        }
    )
    rcfg = cfg.routes[0]
    assert rcfg.screening is not None
    return ScreeningFilter(rcfg.screening, route=rcfg.name), Route(rcfg)


def exchange(row: dict[str, Any], route: Route) -> Exchange:
    body = row["body"].encode() if row["body"] is not None else None
    return Exchange(
        method=row["method"],
        path=row["path"],
        query=row["query"],
        headers=CIMultiDict((k, v) for k, v in row["headers"]),
        host="api.example.com",
        scheme="https",
        client_ip="198.51.100.9",
        client_port=40000,
        request_id=row["id"],
        route=route,
        body=BytesBody(body) if body is not None else None,
        content_length=len(body) if body is not None else None,
    )


async def _ok(ex: Exchange) -> Reply:
    if ex.body is not None:
        while await ex.body.read():
            pass
    return Reply(200)


async def run(rows: list[dict[str, Any]], f: ScreeningFilter, route: Route) -> list[Any]:
    out = []
    for row in rows:
        ex = exchange(row, route)
        reply = await f(ex, _ok)
        out.append((row, reply.status == 403, ex.state.get("screening")))
    return out


def load(name: str) -> list[dict[str, Any]]:
    with (CORPUS / name).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def report(title: str, results: list[Any], want_blocked: bool, verbose: bool) -> float:
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for row, blocked, _ in results:
        by_cat[row["category"]].append(blocked)
    label = "detected" if want_blocked else "false positives"
    print(f"\n{title}: {len(results)} requests")
    total = 0
    for cat in sorted(by_cat):
        n = len(by_cat[cat])
        k = sum(by_cat[cat])
        total += k
        print(f"  {cat:<10} {k:>4}/{n:<4} {label} {100 * k / n:6.1f}%")
    rate = 100 * total / len(results)
    print(f"  {'all':<10} {total:>4}/{len(results):<4} {label} {rate:6.1f}%")
    if verbose:
        for row, blocked, verdict in results:
            if blocked != want_blocked:
                what = verdict.describe() if verdict is not None else "-"
                score = verdict.score if verdict is not None else 0
                print(f"    {row['id']}: score {score} [{what}]")
    return rate


def timing_body(attack: str | None = None) -> bytes:
    """The ~4 KB JSON body of realistic values timed below (bench/run.py's `screening`
    scenario POSTs the same document); `attack` replaces the comment."""
    doc = {
        "user": {"id": 12345, "name": "Zoë O'Brien", "email": "zoe@example.com"},
        "items": [
            {
                "sku": f"SKU-{i:05d}",
                "title": "Hand-made ceramic mug, 350 ml",
                "note": "Please don't ship before Friday; it's a gift for my sister's birthday.",
                "qty": i % 3 + 1,
                "price": 12.5,
                "url": f"https://shop.example.com/p/{i}?ref=cart&utm_source=app",
            }
            for i in range(16)
        ],
        "comment": attack or "Select the union option if you're a member (it's cheaper).",
    }
    return json.dumps(doc).encode()


def timing(f: ScreeningFilter, route: Route) -> None:
    """CPU per request of screening (head and a ~4 KB JSON body) vs. no filter, for a
    benign body and one carrying an attack. CPU time (time.process_time), so that other
    processes on the machine do not count; best of 5 runs."""
    bodies = {
        "benign": timing_body(),
        "attack": timing_body("1' UNION SELECT password FROM users--"),
    }

    def row(body: bytes) -> dict[str, Any]:
        return {
            "id": "timing",
            "method": "POST",
            "path": "/api/v1/orders",
            "query": "draft=false&source=web",
            "headers": [
                ["Host", "api.example.com"],
                ["Content-Type", "application/json"],
                [
                    "User-Agent",
                    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121",
                ],
                ["Cookie", "session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark"],
            ],
            "body": body.decode(),
        }

    async def bench(r: dict[str, Any], with_filter: bool, n: int) -> float:
        t0 = time.process_time()
        for _ in range(n):
            ex = exchange(r, route)
            if with_filter:
                await f(ex, _ok)
            else:
                await _ok(ex)
        return (time.process_time() - t0) / n

    n = 300 if not f.matcher.prefilter else 3000
    print(f"\nscreening CPU per request, {n} requests x 5, best run ({f.matcher!r}):")
    for name, body in bodies.items():
        r = row(body)
        asyncio.run(bench(r, True, n // 10))  # warm up
        base = min(asyncio.run(bench(r, False, n)) for _ in range(5))
        screened = min(asyncio.run(bench(r, True, n)) for _ in range(5))
        cost = screened - base
        print(
            f"  {name:<7} {len(body):,}-byte JSON body (+ path, query, 4 headers, cookies): "
            f"{cost * 1e6:7.1f} us ({1 / cost:,.0f} screens/s per core)"
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument(
        "--no-prefilter",
        action="store_true",
        help="every rule's regex on every value (the reference; verdicts must not change)",
    )
    args = ap.parse_args()
    f, route = build(SCREENING)
    if args.no_prefilter:
        f.matcher = Matcher(f.matcher.categories, prefilter=False)
    print(f"filter: {f!r}")
    attacks = asyncio.run(run(load("attacks.jsonl"), f, route))
    benign = asyncio.run(run(load("benign.jsonl"), f, route))
    detection = report("attacks", attacks, True, args.verbose)
    fp = report("benign", benign, False, args.verbose)
    ok = detection >= 95.0 and fp <= 0.5
    print(
        f"\ntargets: detection >= 95% ({detection:.1f}%), false positives <= 0.5% ({fp:.2f}%)"
        f": {'met' if ok else 'NOT met'}"
    )
    if not args.no_timing:
        timing(f, route)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
