"""Cubes held in this process's memory (``mem://name``): the whole lifecycle of a kind, in one module.

A cube is written into the process's :data:`~fficube.sources.memory.STORE` as
``<output>.partial`` and renamed to the output once complete; the journal
(``<output>.journal``, beside it in the store) records the bytes written and their
data sum after every block, so that an interrupted build is resumed like a local
one.  A sharded build keeps its plan, journals and claims under
``<output>.shards/`` in the store, and one pre-sized shared object.  The cube is read
back through :class:`~fficube.sources.memory.MemorySource`.

The store lives as long as the process: this kind serves tests and programs that use a
cube where they built it, and shows what an output kind is made of.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from ..checksum import ZERO, add, seal_header
from ..errors import InputError, OutputError, OutputExistsError, ResumeError
from ..journal import FinishClaim, Journal, SharedPlan, journal_path
from ..plan import CubePlan
from ..sources.base import IOStats
from ..sources.fsspec import Filesystems
from ..sources.memory import STORE
from .base import Buffer, SharedWindow, Span, WrittenPrefix, kept_message, unwritten

__all__ = ["MemoryOutput", "MemorySink", "MemoryShards", "MemoryProgress", "UNIT"]

log = logging.getLogger("fficube")

#: Windows of a sharded cube are whole multiples of this.
UNIT = 2**20
#: The outputs being built in this process (the lock of :meth:`MemoryOutput.lock`).
_BUILDING: set[str] = set()


@dataclass(frozen=True, slots=True)
class MemoryProgress(WrittenPrefix):
    """How far a build got: the bytes of its partial object written, and their data sum."""


def _load(name: str) -> Journal | None:
    raw = STORE.get(name)
    return None if raw is None else Journal.decode(bytes(raw), name, MemoryProgress.from_json)


class MemoryOutput:
    """A cube object in the process's memory store."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.partial = location + ".partial"
        self.journal = journal_path(location)

    @classmethod
    async def open(cls, location: str, filesystems: Filesystems) -> MemoryOutput:
        """The object ``location`` of the store."""
        return cls(location)

    @staticmethod
    def kept(location: str) -> bool | None:
        """Whether the journal of an interrupted build of ``location`` is in the store."""
        return STORE.get(journal_path(location)) is not None

    async def check(self, inputs: Sequence[str], *, overwrite: bool) -> None:
        if self.location in inputs:
            raise InputError("the output is one of the inputs; choose another output path", path=self.location)
        if not overwrite and await self.exists():
            raise OutputExistsError("already exists; use overwrite=True to replace it", path=self.location)

    async def exists(self) -> bool:
        return STORE.get(self.location) is not None

    @asynccontextmanager
    async def lock(self) -> AsyncIterator[None]:
        """Refuse a second build of this output in the process (the only one that sees it)."""
        if self.location in _BUILDING:
            raise OutputError("another build of this cube is running right now; wait for it to finish",
                              path=self.location)
        _BUILDING.add(self.location)
        try:
            yield
        finally:
            _BUILDING.discard(self.location)

    async def load_journal(self) -> Journal | None:
        return _load(self.journal)

    async def discard(self, journal: Journal | None) -> None:
        log.info("discarding the interrupted build of %s", self.location)
        STORE.delete(self.partial)
        STORE.delete(self.journal)

    async def check_resumable(self, journal: Journal) -> None:
        partial = STORE.get(self.partial)
        if partial is None or len(partial) < MemoryProgress.of(journal).offset:
            raise ResumeError(f"cannot resume: {self.partial} is missing or shorter than its journal says; "
                              "use restart=True to start over", path=self.location)

    def reserve(self, cube_bytes: int, max_memory: int) -> int:
        return 0  # the cube is the output, not a buffer of the build

    def sink(self, plan: CubePlan, journal: Journal, *, overwrite: bool, stats: IOStats) -> MemorySink:
        return MemorySink(self.location, span=Span.of(plan), total_bytes=plan.total_bytes, journal=journal,
                          overwrite=overwrite)

    def shards(self) -> MemoryShards:
        return MemoryShards(self.location)



class MemorySink:
    """Writes ``<output>.partial`` in the store, renamed to the output when complete.

    With ``shared``, the sink fills one window of an object shared by several workers,
    and leaves the sealing of the cube header to whoever finishes the cube.
    """

    def __init__(self, output: str, *, span: Span, total_bytes: int, journal: Journal, overwrite: bool = False,
                 shared: SharedWindow | None = None) -> None:
        self.location = output
        self.shared = shared
        self.partial = shared.partial if shared else output + ".partial"
        self.journal = shared.journal if shared else journal_path(output)
        self.window = shared.window if shared else (0, total_bytes)
        self.span, self.total_bytes, self.overwrite = span, total_bytes, overwrite
        self.record = journal
        self.bytes_written = 0
        self.position = 0  #: written up to here (from the window's start)
        self.saved = 0  #: recorded up to here in the journal
        self._sum = ZERO
        self._data = bytearray()

    async def open(self, resume: Journal | None) -> list[tuple[int, int]]:
        lo, hi = self.window
        recorded = MemoryProgress.of(resume)
        data = STORE.get(self.partial)
        if self.shared is not None:  # never created, truncated or removed here
            if data is None:
                raise OutputError("the shared partial object is gone", path=self.partial)
            self._data = data
            self.position = self.saved = max(lo, recorded.offset)
            self._sum = recorded.datasum
            return [(self.position, hi)] if self.position < hi else []
        if resume is None or data is None:
            STORE.put(self.partial, b"")
            data = STORE.get(self.partial)
            assert data is not None
        else:
            self.position = self.saved = recorded.offset
            self._sum = recorded.datasum
            del data[self.position:]  # drop what was not recorded
        self._data = data
        return [(self.position, self.total_bytes)]

    async def write_at(self, offset: int, data: Buffer, *, datasum: int | None = None) -> None:
        view, datasum = unwritten(offset, data, self.position, self.window, datasum)
        if not len(view):
            return
        self._data[offset : offset + len(view)] = view
        self._sum = add(self._sum, self.span.sum(offset, view) if datasum is None else datasum)
        self.position += len(view)
        self.bytes_written += len(view)

    async def checkpoint(self) -> None:
        self._save()

    def _save(self, *, done: bool = False) -> None:
        self.record = self.record.advanced(progress=MemoryProgress(self.position, self._sum), done=done)
        STORE.put(self.journal, self.record.encode())
        self.saved = self.position

    def datasum(self) -> int:
        return self._sum

    async def patch(self, offset: int, data: bytes) -> None:
        if self.shared is not None:
            return  # the cube header is sealed by whoever finishes the shared object
        self._data[offset : offset + len(data)] = data

    async def commit(self) -> None:
        if self.shared is not None:
            if self.position != self.window[1]:
                raise AssertionError(f"window {self.window} written up to {self.position}")
            self._save(done=True)
            return
        if not self.overwrite and STORE.get(self.location) is not None:
            raise OutputExistsError("appeared during the build; not replaced (use overwrite)", path=self.location)
        STORE.rename(self.partial, self.location)
        STORE.delete(self.journal)

    async def abort(self) -> None:
        if self.shared is not None:
            return  # the object is shared: keep it, and this worker's journal, for a re-run
        if self.saved:
            log.warning("%s", kept_message(self.partial, self.saved, self.total_bytes))
            return
        STORE.delete(self.partial)
        STORE.delete(self.journal)


class MemoryShards:
    """A sharded build's objects under ``<output>.shards/`` in the store, and one shared object."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.prefix = output + ".shards/"

    def unit_for(self, cube_bytes: int) -> int:
        return UNIT

    def reserve(self, cube_bytes: int, max_memory: int) -> int:
        return 0

    async def plan(self) -> SharedPlan | None:
        raw = STORE.get(self.prefix + "plan.json")
        return None if raw is None else SharedPlan.decode(bytes(raw), self.prefix + "plan.json")

    async def journal(self, shard: int) -> Journal | None:
        return _load(f"{self.prefix}{shard}.json")

    async def exists(self) -> bool:
        return STORE.get(self.output) is not None

    async def start(self, proposal: SharedPlan) -> SharedPlan:
        name = f"{os.urandom(8).hex()}.partial"
        STORE.put(self.prefix + name, bytes(proposal.total_bytes))
        mine = replace(proposal, partial=name)
        if STORE.create(self.prefix + "plan.json", mine.encode()):
            return mine
        STORE.delete(self.prefix + name)  # another worker came first: use its object
        agreed = await self.plan()
        assert agreed is not None
        return agreed

    async def claim(self, number: int, claim: FinishClaim) -> bool:
        if STORE.get(self.prefix + "plan.json") is None:
            return False  # a finisher completed the cube and cleaned up
        return STORE.create(f"{self.prefix}finishing.{number}", claim.encode())

    async def read_claim(self, number: int) -> FinishClaim | None:
        name = f"{self.prefix}finishing.{number}"
        raw = STORE.get(name)
        return None if raw is None else FinishClaim.decode(bytes(raw), name)

    def sink(self, agreed: SharedPlan, plan: CubePlan, shard: int, window: tuple[int, int],
             journal: Journal) -> MemorySink:
        assert agreed.partial is not None
        shared = SharedWindow(self.prefix + agreed.partial, window, f"{self.prefix}{shard}.json")
        return MemorySink(self.output, span=Span.of(plan), total_bytes=plan.total_bytes, journal=journal,
                          shared=shared)

    async def complete(self, agreed: SharedPlan, records: Sequence[Journal]) -> bool:
        assert agreed.partial is not None
        name = self.prefix + agreed.partial
        partial = STORE.get(name)
        if partial is None:
            if await self.exists():
                return False  # a finisher before us completed it, and died before cleaning up
            raise OutputError(f"every shard is done but the shared object {name} is gone", path=self.output)
        sealed = seal_header(agreed.cube_header, add(*(MemoryProgress.of(r).datasum for r in records)))
        partial[agreed.header_offset : agreed.header_offset + len(sealed)] = sealed
        if await self.exists():
            raise OutputExistsError("appeared during the build; not replaced", path=self.output)
        STORE.rename(name, self.output)
        return True

    async def remove(self) -> None:
        STORE.delete(self.prefix + "plan.json")  # the plan first, as for files
        for name in STORE.names(self.prefix):
            STORE.delete(name)
