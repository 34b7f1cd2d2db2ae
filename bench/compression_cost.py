"""Compression cost per encoding: CPU time, throughput and ratio, in-process.

    .venv/bin/python bench/compression_cost.py [--seconds 0.5] [--json]

Runs the compression filter's own codecs (gateway/filters/compression.py) on a JSON API
body (a list of user records, as orjson writes it) of 4 KiB and of 1 MiB, at the
default levels and at a few others:
- 4 KiB takes the whole-body path (one compress call, as for bodies <= 64 KiB);
- 1 MiB takes the streaming path: a CompressedStream fed 64 KiB upstream chunks, read to
  the end as server.py does, so the per-chunk overhead and the final flush are counted.
Each cell is repeated for at least --seconds of CPU time (time.process_time); it reports
microseconds of CPU per body, input MiB/s on one core, the ratio (output / input) and,
for the stream, the longest single compress call (CPU held on the event loop at once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, cast

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.filters.compression import (  # noqa: E402
    CompressedStream,
    Compressor,
    EncodingCounts,
    _Codec,
)

LEVELS = {"gzip": (1, 5, 9), "br": (1, 4, 6), "zstd": (1, 3, 9)}
DEFAULTS = {"gzip": 5, "br": 4, "zstd": 3}
CHUNK = 64 * 1024


def json_body(size: int) -> bytes:
    """A JSON array of user records, cut back to whole records at `size` bytes or less."""
    r = random.Random(4)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    records: list[dict[str, Any]] = []
    out = b"[]"
    while True:
        i = len(records)
        records.append(
            {
                "id": i,
                "login": f"user{r.randrange(10**7)}",
                "email": f"u{r.randrange(10**7)}@example.com",
                "score": round(r.random() * 1000, 3),
                "active": r.random() < 0.8,
                "tags": r.sample(words, 3),
                "created_at": f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T12:00:00Z",
            }
        )
        nxt = orjson.dumps(records)
        if len(nxt) > size:
            return out
        out = nxt


class Chunks:
    """The upstream edge: `data` in CHUNK pieces, then b""."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.status, self.reason, self.content_length = 200, "OK", len(data)

    async def read(self) -> bytes:
        piece = self.data[self.pos : self.pos + CHUNK]
        self.pos += len(piece)
        return piece

    def release(self) -> None:
        pass

    def abort(self) -> None:
        pass


def measure_whole(codec: _Codec, data: bytes, seconds: float) -> dict[str, float]:
    n, out = 0, b""
    start = time.process_time()
    while (elapsed := time.process_time() - start) < seconds or n < 3:
        out = codec.whole(data)
        n += 1
    return {"us": elapsed / n * 1e6, "ratio": len(out) / len(data), "max_call_ms": 0.0}


class Timed:
    """A compressor whose longest single call is recorded."""

    def __init__(self, comp: Compressor) -> None:
        self.comp = comp
        self.longest = 0.0

    def compress(self, data: bytes) -> bytes:
        t = time.perf_counter()
        out = self.comp.compress(data)
        self.longest = max(self.longest, time.perf_counter() - t)
        return out

    def flush(self) -> bytes:
        t = time.perf_counter()
        out = self.comp.flush()
        self.longest = max(self.longest, time.perf_counter() - t)
        return out


async def measure_stream(codec: _Codec, data: bytes, seconds: float) -> dict[str, float]:
    n, size, longest = 0, 0, 0.0
    start = time.process_time()
    while (elapsed := time.process_time() - start) < seconds or n < 3:
        comp = Timed(codec.stream(len(data)))
        stream = CompressedStream(cast(Any, Chunks(data)), codec.name, comp, EncodingCounts())
        size = 0
        while out := await stream.read():
            size += len(out)
        longest = max(longest, comp.longest)
        n += 1
    return {"us": elapsed / n * 1e6, "ratio": size / len(data), "max_call_ms": longest * 1e3}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.5, help="CPU seconds per cell at least")
    ap.add_argument("--json", action="store_true", help="machine-readable rows on stdout")
    args = ap.parse_args()
    bodies = {"4 KiB": json_body(4096), "1 MiB": json_body(1 << 20)}
    rows = []
    for name, levels in LEVELS.items():
        for level in levels:
            codec = _Codec(name, level)
            for label, data in bodies.items():
                if label == "4 KiB":
                    m = measure_whole(codec, data, args.seconds)
                else:
                    m = await measure_stream(codec, data, args.seconds)
                mibs = len(data) / (m["us"] / 1e6) / (1 << 20)
                rows.append(
                    {
                        "encoding": name,
                        "level": level,
                        "default": level == DEFAULTS[name],
                        "body": label,
                        "bytes": len(data),
                        "cpu_us": round(m["us"], 1),
                        "mib_per_s": round(mibs, 1),
                        "ratio": round(m["ratio"], 4),
                        "max_read_ms": round(m["max_call_ms"], 2),
                    }
                )
                print(f"{name}:{level} {label} done", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| encoding:level | body | CPU per body | MiB/s (1 core) | ratio | longest call |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mark = " (default)" if r["default"] else ""
        cpu = f"{r['cpu_us']:,.0f} us" if r["cpu_us"] < 10_000 else f"{r['cpu_us'] / 1e3:,.1f} ms"
        longest = f"{r['max_read_ms']} ms" if r["body"] == "1 MiB" else "-"
        print(
            f"| {r['encoding']}:{r['level']}{mark} | {r['body']} ({r['bytes']:,} B) | {cpu} "
            f"| {r['mib_per_s']:,.1f} | {r['ratio']:.3f} | {longest} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
