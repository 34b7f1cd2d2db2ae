"""Streaming bodies, the one shape both sides of the proxy agree on.

A body is read chunk by chunk with `await body.read()`; `b""` means the end. The
reader applies backpressure by simply not being called: the client side stops
reading its socket while the upstream side has not asked for more, so a 1 GB
upload or download never sits in memory.
"""

from __future__ import annotations

from typing import Protocol


class BodySource(Protocol):
    async def read(self) -> bytes:
        """The next chunk of the body; b"" once it is complete."""
        ...


class BytesBody:
    """A body already in memory, served as one chunk."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self) -> bytes:
        data, self._data = self._data, b""
        return data

    def __repr__(self) -> str:
        return f"<BytesBody {len(self._data)} bytes left>"


class MemoryResponse:
    """A complete body already in memory, with the surface of an upstream response
    that server.py streams (status, reason, content_length, read, read_all, release,
    abort): a cache hit, or a body compressed in one call. `chunk` > 0 hands it out in
    slices of that size, so a large cached body is written with backpressure too."""

    __slots__ = ("_chunk", "_data", "content_length", "reason", "status")

    def __init__(self, status: int, reason: str, data: bytes, chunk: int = 0) -> None:
        self.status = status
        self.reason = reason
        self.content_length: int | None = len(data)
        self._data = data
        self._chunk = chunk

    async def read(self) -> bytes:
        data = self._data
        if self._chunk and len(data) > self._chunk:
            self._data = data[self._chunk :]
            return data[: self._chunk]
        self._data = b""
        return data

    async def read_all(self) -> bytes:
        data, self._data = self._data, b""
        return data

    def release(self) -> None:
        self._data = b""

    def abort(self) -> None:
        self._data = b""

    def __repr__(self) -> str:
        return f"<MemoryResponse {self.status} {self.content_length} bytes>"
