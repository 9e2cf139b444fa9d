"""Files held in this process's memory under ``mem://`` names: the store, and its byte source.

The store is what :mod:`fficube.sinks.memory` writes cubes into and what
:class:`MemorySource` reads them back from: a kind of storage without a disk or a
server, for tests and for pipelines that use a cube in the process that built it.
(``memory://`` is fsspec's in-memory filesystem, read like any other fsspec URL.)
"""

from __future__ import annotations

import asyncio
import threading

from ..errors import ReadError
from .base import IOStats, truncated

__all__ = ["PROTOCOL", "MemoryStore", "STORE", "MemorySource"]

#: The protocol of locations in the store.
PROTOCOL = "mem"


class MemoryStore:
    """Objects by their location (``mem://name``): bytes that writers change in place.

    The lock makes :meth:`create` atomic (create only if absent) for writers in
    several threads, as a conditional put is on S3.
    """

    def __init__(self) -> None:
        self._objects: dict[str, bytearray] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> bytearray | None:
        """The object ``name`` itself (not a copy), or None."""
        return self._objects.get(name)

    def put(self, name: str, data: bytes | bytearray) -> None:
        """Make ``data`` (copied) the object ``name``."""
        with self._lock:
            self._objects[name] = bytearray(data)

    def create(self, name: str, data: bytes | bytearray) -> bool:
        """Make ``data`` the object ``name`` only if there is none; False if there was."""
        with self._lock:
            if name in self._objects:
                return False
            self._objects[name] = bytearray(data)
            return True

    def rename(self, old: str, new: str) -> None:
        """Move object ``old`` to ``new`` (replacing it), at once."""
        with self._lock:
            self._objects[new] = self._objects.pop(old)

    def delete(self, name: str) -> None:
        """Remove object ``name`` (nothing if there is none)."""
        with self._lock:
            self._objects.pop(name, None)

    def names(self, prefix: str = "") -> list[str]:
        """The objects whose names start with ``prefix``, sorted."""
        with self._lock:
            return sorted(n for n in self._objects if n.startswith(prefix))


#: The process's store.
STORE = MemoryStore()


class MemorySource:
    """Reads objects of :data:`STORE` (or of another ``store``)."""

    local = False  #: no disk: the planner's limits for local reads do not apply

    def __init__(self, concurrency: int = 4, store: MemoryStore | None = None) -> None:
        self.stats = IOStats()
        self.concurrency = concurrency
        self.store = STORE if store is None else store
        self._limit = asyncio.Semaphore(concurrency)

    def _object(self, path: str, byte_range: tuple[int, int] | None = None) -> bytearray:
        data = self.store.get(path)
        if data is None:
            raise ReadError("no such object in memory", path=path, byte_range=byte_range)
        return data

    async def size(self, path: str) -> int:
        return len(self._object(path))

    async def read(self, path: str, start: int, stop: int) -> bytes:
        async with self._limit:
            self.stats.requests += 1
            data = bytes(self._object(path, (start, stop))[start:stop])
        self.stats.bytes_read += len(data)
        return data

    async def readinto(self, path: str, start: int, buf: memoryview) -> None:
        stop = start + len(buf)
        async with self._limit:
            self.stats.requests += 1
            data = self._object(path, (start, stop))
            n = max(0, min(stop, len(data)) - start)
            buf[:n] = data[start : start + n]
        self.stats.bytes_read += n
        if n < len(buf):
            raise truncated(path, start, stop, n)

    async def aclose(self) -> None:
        """Nothing to release."""
