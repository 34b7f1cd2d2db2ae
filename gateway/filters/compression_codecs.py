"""Compression codecs: one coding at one level, whole or streamed, and the stream.

`_Codec` compresses a whole body in one call or makes a streaming compressor (zlib
with the gzip wrapper, brotli.Compressor with a 512 KiB window, a zstd compressobj).
`CompressedStream` wraps an upstream body: each upstream chunk goes through the
compressor in slices of at most SLICE_BYTES (one compress call's CPU time on the event
loop stays bounded) and comes out as chunked output, the final flush at the end;
memory per stream is the compressor's state plus one upstream chunk. Measured costs
and memory are in bench/RESULTS.md (bench/compression_cost.py).

The filter and the rules that decide when to compress are in compression.py and
compression_rules.py.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Protocol, cast

import brotli
import zstandard

if TYPE_CHECKING:
    from gateway.upstream import UpstreamResponse

__all__ = ["SLICE_BYTES", "CompressedStream", "Compressor", "EncodingCounts"]

# At most this much input per compress call on the event loop.
SLICE_BYTES = 64 * 1024


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Brotli:
    """brotli.Compressor under the compress/flush names."""

    __slots__ = ("_c",)

    def __init__(self, quality: int) -> None:
        # lgwin 19 (a 512 KiB window, ngx_brotli's default) rather than brotli's 22:
        # at 22 a stream holds ~11 MiB and emits nothing until ~8 MiB of input; at 19
        # it holds ~4.5 MiB and emits every ~1 MiB, for a ratio within 1-2% on JSON.
        self._c = brotli.Compressor(quality=quality, lgwin=19)

    def compress(self, data: bytes) -> bytes:
        return cast(bytes, self._c.process(data))

    def flush(self) -> bytes:
        return cast(bytes, self._c.finish())


class _Codec:
    """One coding at one level: a streaming compressor per response, or one call."""

    __slots__ = ("_zstd", "level", "name")

    def __init__(self, name: str, level: int) -> None:
        self.name = name
        self.level = level
        # Whole-body zstd calls run without an await in between, so one compressor
        # (its context) can serve them all; each stream gets its own.
        self._zstd = zstandard.ZstdCompressor(level=level) if name == "zstd" else None

    def stream(self, size: int | None) -> Compressor:
        if self.name == "gzip":
            return zlib.compressobj(self.level, zlib.DEFLATED, 31)  # 16+15: gzip wrapper
        if self.name == "br":
            return _Brotli(self.level)
        # size (when known) goes in the frame header and lets zstd size its window.
        cobj = zstandard.ZstdCompressor(level=self.level).compressobj(
            size=size if size is not None else -1
        )
        return cast(Compressor, cobj)

    def whole(self, data: bytes) -> bytes:
        if self._zstd is not None:
            return self._zstd.compress(data)
        if self.name == "br":
            return cast(bytes, brotli.compress(data, quality=self.level))
        c = zlib.compressobj(self.level, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()

    def __repr__(self) -> str:
        return f"{self.name}:{self.level}"


class EncodingCounts:
    """Responses compressed with one coding and their bytes before and after."""

    __slots__ = ("bytes_in", "bytes_out", "responses")

    def __init__(self) -> None:
        self.responses = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def __repr__(self) -> str:
        return f"<EncodingCounts {self.responses} responses {self.bytes_in}->{self.bytes_out} B>"


class CompressedStream:
    """An upstream body compressed on the fly; `read()` gives compressed chunks, b"" at
    the end. Length unknown (server.py sends it chunked)."""

    __slots__ = (
        "_comp",
        "_counts",
        "_pending",
        "_up",
        "coding",
        "content_length",
        "reason",
        "status",
    )

    def __init__(
        self, up: UpstreamResponse, coding: str, comp: Compressor, counts: EncodingCounts
    ) -> None:
        self.status = up.status
        self.reason = up.reason
        self.content_length: int | None = None
        self.coding = coding
        self._up = up
        self._comp: Compressor | None = comp
        self._counts = counts
        self._pending = b""  # input beyond the current slice of a large upstream chunk

    async def read(self) -> bytes:
        while (comp := self._comp) is not None:
            if self._pending:
                piece, self._pending = self._pending[:SLICE_BYTES], self._pending[SLICE_BYTES:]
            else:
                chunk = await self._up.read()
                if not chunk:
                    self._comp = None
                    out = comp.flush()
                    self._counts.bytes_out += len(out)
                    return out
                self._counts.bytes_in += len(chunk)
                if len(chunk) > SLICE_BYTES:
                    piece, self._pending = chunk[:SLICE_BYTES], chunk[SLICE_BYTES:]
                else:
                    piece = chunk
            out = comp.compress(piece)
            if out:
                self._counts.bytes_out += len(out)
                return out
            # Compressors buffer: b"" is not the end, read on; but let the loop run
            # first, so one read() is one slice of CPU however much the upstream queued.
            await asyncio.sleep(0)
        return b""

    async def read_all(self) -> bytes:
        chunks = []
        while chunk := await self.read():
            chunks.append(chunk)
        return b"".join(chunks)

    def release(self) -> None:
        self._comp, self._pending = None, b""
        self._up.release()

    def abort(self) -> None:
        self._comp, self._pending = None, b""
        self._up.abort()

    def __repr__(self) -> str:
        state = "open" if self._comp is not None else "closed"
        return f"<CompressedStream {self.coding} {self.status} {state} up={self._up!r}>"
