"""The compression filter: zstd, br or gzip, negotiated per request, streamed.

How it works. At load the route's `compression` section becomes one immutable filter:
the media ranges compiled into sets, one codec per offered coding (its level fixed),
the skip rules as header names. Per request, after `next` returns:

1. Response-side eligibility, the same for every client: a status with content (not
   1xx, 204, 304), no Content-Encoding already (the upstream encoded it), a listed
   media type, no `Cache-Control: no-transform` (RFC 9111 5.2.2.6), no Content-Digest
   or Repr-Digest (RFC 9530; compressing would make them lie). An eligible response
   gets `Vary: Accept-Encoding` merged in (RFC 9110 12.5.5) whether or not this
   client's copy is compressed: a shared cache must not hand the identity copy's
   neighbour, the gzip copy, to a client that cannot decode it.
2. Request-side rules: HEAD, Range requests and 206 / Content-Range (RFC 9110 14: a
   range of the compressed bytes is not a range of the representation), a request
   `Cache-Control: no-transform` (RFC 9111 5.2.1.6), a known length under min_size.
3. Negotiation (`negotiate`, RFC 9110 12.5.3): each offered coding gets its own q, or
   the q of `*`, or 0; the highest q > 0 wins, ties going to the server's order; q=0
   excludes. `identity` only competes when listed explicitly with a q above the best
   coding's. No acceptable coding, or no Accept-Encoding header at all, means identity
   (RFC 9110 12.5.3 allows it; clients that send none rarely decode anything). Results
   are memoised per header value in a small bounded dict: browsers send a handful.

Compressing: Content-Encoding set, a strong ETag weakened (W/, RFC 9110 8.8.3: the
bytes differ from the identity copy's), Accept-Ranges dropped. A body whose length is
known and at most WHOLE_BODY_BYTES is read whole, compressed in one call and given a
Content-Length (server.py writes it in one buffer). Anything larger, or of unknown
length, becomes a `CompressedStream`: upstream chunks go through an incremental
compressor (zlib gzip wbits, brotli.Compressor, a zstd compressobj) and come out as
chunked output, with the compressor's final flush at the end. Memory per stream is the
compressor's state (measured: gzip:5 0.4 MiB, zstd:3 3.2 MiB, br:4 4.5 MiB with the
512 KiB window chosen in _Brotli) plus one upstream chunk, whatever the body size.
Each compress call gets at most SLICE_BYTES of input, so one call's CPU time on the
event loop is bounded (longest measured at the default levels: zstd 0.4 ms, gzip
1.2 ms, br 3.5 ms when it emits a meta-block; bench/compression_cost.py),
and the stream yields to the loop after every call that produced no output.

Modules: this one is the filter; compression_rules.py negotiation, media ranges, Vary
and no-transform; compression_codecs.py the codecs and CompressedStream.

Shape. Reply.stream is typed as UpstreamResponse; the two body classes used offer the
surface respond.py's `send_stream` uses (status, reason, content_length, read,
read_all, release, abort) and are cast to it, so server.py needs no branch for them.

Known gaps: compressors buffer, so a slowly trickling body (long polling) is held back
until enough input arrives; text/event-stream is therefore never compressed. The
per-encoding counters are plain ints on the filter, for the metrics issue to export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from multidict import istr

from gateway.body import MemoryResponse
from gateway.config.compression_model import Compression
from gateway.exchange import Exchange, Reply
from gateway.filters.compression_codecs import (
    SLICE_BYTES,
    CompressedStream,
    Compressor,
    EncodingCounts,
    _Codec,
)
from gateway.filters.compression_rules import _MediaTypes, has_no_transform, merge_vary, negotiate
from gateway.pipeline import Next

if TYPE_CHECKING:
    from gateway.upstream import UpstreamResponse

__all__ = [
    "SLICE_BYTES",
    "WHOLE_BODY_BYTES",
    "CompressedStream",
    "CompressionFilter",
    "Compressor",
    "EncodingCounts",
    "_Codec",
    "merge_vary",
    "negotiate",
]

# Bodies of a known length up to this are compressed in one call (as server.py reads
# bodies up to its SMALL_BODY_BYTES whole); larger ones stream.
WHOLE_BODY_BYTES = 64 * 1024
_MEMO_ENTRIES = 256

CONTENT_ENCODING = istr("Content-Encoding")
CONTENT_TYPE = istr("Content-Type")
ETAG = istr("ETag")
ACCEPT_ENCODING = istr("Accept-Encoding")
ACCEPT_RANGES = istr("Accept-Ranges")
CONTENT_RANGE = istr("Content-Range")
RANGE = istr("Range")
_DIGESTS = (istr("Content-Digest"), istr("Repr-Digest"))

SKIP_REASONS = (
    "no_content",  # 1xx, 204, 304
    "encoded",  # Content-Encoding already set
    "content_type",  # missing or not listed
    "no_transform",  # Cache-Control: no-transform, response or request
    "digest",  # Content-Digest / Repr-Digest
    "head",
    "range",  # Range request, 206, Content-Range
    "small",  # known length under min_size (or empty)
    "not_accepted",  # no offered coding acceptable to the client
)


class CompressionFilter:
    """A route's compression settings, compiled at load; counters are its only state."""

    __slots__ = (
        "_codecs",
        "_memo",
        "_min_size",
        "_offered",
        "_types",
        "counts",
        "route",
        "skipped",
    )

    def __init__(self, cfg: Compression, *, route: str) -> None:
        self.route = route
        self._offered: tuple[str, ...] = tuple(cfg.encodings)
        levels = cfg.levels
        level = {"gzip": levels.gzip, "br": levels.br, "zstd": levels.zstd}
        self._codecs = {name: _Codec(name, level[name]) for name in self._offered}
        self._min_size = max(cfg.min_size, 1)  # an empty body is never worth a frame
        self._types = _MediaTypes(cfg.content_types)
        self._memo: dict[str, str | None] = {}
        self.counts = {name: EncodingCounts() for name in self._offered}
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)

    def choose(self, accept: str | None) -> str | None:
        """negotiate() for this route's codings, memoised per Accept-Encoding value."""
        if accept is None:
            return None
        try:
            return self._memo[accept]
        except KeyError:
            pass
        coding = negotiate(accept, self._offered)
        if len(self._memo) >= _MEMO_ENTRIES:
            self._memo.clear()  # bounded: a client cycling values cannot grow it
        self._memo[accept] = coding
        return coding

    async def __call__(self, ex: Exchange, next: Next) -> Reply:
        reply = await next(ex)
        reason = self._skip(ex, reply)
        if reason is not None:
            self.skipped[reason] += 1
            return reply
        coding = self.choose(ex.headers.get(ACCEPT_ENCODING))
        if coding is None:
            self.skipped["not_accepted"] += 1
            return reply
        codec = self._codecs[coding]
        counts = self.counts[coding]
        up = reply.stream
        if up is None:
            data = reply.body
            reply.body = codec.whole(data)
            counts.bytes_in += len(data)
            counts.bytes_out += len(reply.body)
        elif up.content_length is not None and up.content_length <= WHOLE_BODY_BYTES:
            try:
                data = await up.read_all()
            except BaseException:
                up.abort()
                raise
            up.release()
            out = codec.whole(data)
            counts.bytes_in += len(data)
            counts.bytes_out += len(out)
            reply.stream = cast("UpstreamResponse", MemoryResponse(up.status, up.reason, out))
        else:
            comp = codec.stream(up.content_length)
            reply.stream = cast("UpstreamResponse", CompressedStream(up, coding, comp, counts))
        counts.responses += 1
        h = reply.headers
        h[CONTENT_ENCODING] = coding
        etag = h.get(ETAG)
        if etag is not None and not etag.startswith("W/"):
            h[ETAG] = "W/" + etag
        h.popall(ACCEPT_RANGES, None)
        return reply

    def _skip(self, ex: Exchange, reply: Reply) -> str | None:
        """Why this reply goes out as it is, or None; adds Vary when it depends on it."""
        status = reply.status
        if status < 200 or status in (204, 304):
            return "no_content"
        h = reply.headers
        if CONTENT_ENCODING in h:
            return "encoded"
        if not self._types(h.get(CONTENT_TYPE)):
            return "content_type"
        if has_no_transform(h):
            return "no_transform"
        if _DIGESTS[0] in h or _DIGESTS[1] in h:
            return "digest"
        merge_vary(h)  # from here on the client's Accept-Encoding decides
        if ex.method == "HEAD":
            return "head"
        if status == 206 or RANGE in ex.headers or CONTENT_RANGE in h:
            return "range"
        if has_no_transform(ex.headers):
            return "no_transform"
        length = reply.stream.content_length if reply.stream is not None else len(reply.body)
        if length is not None and length < self._min_size:
            return "small"
        return None

    def __repr__(self) -> str:
        codecs = ",".join(repr(c) for c in self._codecs.values())
        done = {n: c.responses for n, c in self.counts.items()}
        return (
            f"<CompressionFilter route={self.route} {codecs} min_size={self._min_size} "
            f"compressed={done}>"
        )
