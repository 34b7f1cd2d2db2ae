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
