"""A 10 MB body compressed through a `python -m gateway run` subprocess: the gateway's
RSS stays bounded (the body is never held whole) and the client decodes the original."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import aiohttp
import brotli
import zstandard

from tests.compression.support import chunks
from tests.integration.test_lifecycle import RssSampler, running_gateway
from tests.support import free_port, gateway_config

MB = 1024 * 1024
SIZE = 10 * MB


class Decoder:
    """Incremental decoding of one coding, hashing as it goes."""

    def __init__(self, coding: str) -> None:
        self.sha = hashlib.sha256()
        self.n = 0
        if coding == "gzip":
            z = zlib.decompressobj(31)
            self._feed, self._end = z.decompress, z.flush
        elif coding == "br":
            b = brotli.Decompressor()
            self._feed, self._end = b.process, lambda: b""
        else:
            d = zstandard.ZstdDecompressor().decompressobj()
            self._feed, self._end = d.decompress, lambda: b""

    def feed(self, raw: bytes) -> None:
        out = self._feed(raw)
        self.sha.update(out)
        self.n += len(out)

    def end(self) -> str:
        out = self._end()
        self.sha.update(out)
        self.n += len(out)
        return self.sha.hexdigest()


async def test_10mb_streamed_compression_keeps_rss_bounded(
    tmp_path: Path, data_upstream: int
) -> None:
    port, admin = free_port(), free_port()
    config = gateway_config(
        port=port,
        admin_port=admin,
        upstreams={"up": [f"http://127.0.0.1:{data_upstream}"]},
        routes=[{"name": "api", "upstream": "up", "compression": {}}],
    )
    expected = hashlib.sha256()
    for piece in chunks(SIZE):
        expected.update(piece)
    url = f"http://127.0.0.1:{port}/data?n={SIZE}"
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        running_gateway(tmp_path, config) as gw,
        aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as s,
    ):
        for coding in ("gzip", "br", "zstd"):  # warm up: imports, first allocations
            async with s.get(url.replace(str(SIZE), "100000"), headers={"Accept-Encoding": coding}):
                pass
        with RssSampler(gw.proc.pid) as rss:
            await rss_sample(rss)
            baseline = rss.max_rss
            for coding in ("gzip", "br", "zstd"):
                decoder = Decoder(coding)
                wire = 0
                async with s.get(url, headers={"Accept-Encoding": coding}) as r:
                    assert r.headers["Content-Encoding"] == coding
                    assert r.headers["Transfer-Encoding"] == "chunked"
                    async for raw in r.content.iter_any():
                        wire += len(raw)
                        decoder.feed(raw)
                assert decoder.end() == expected.hexdigest(), coding
                assert decoder.n == SIZE
                assert wire < SIZE / 3
            await rss_sample(rss)
        peak = rss.max_rss
    print(f"gateway RSS: baseline {baseline / MB:.1f} MiB, peak {peak / MB:.1f} MiB")
    assert peak < 150 * MB
    assert peak - baseline < 40 * MB  # three 10 MiB bodies were never held whole


async def rss_sample(rss: RssSampler) -> None:
    rss.max_rss = max(rss.max_rss, max(p.memory_info().rss for p in rss.procs))
