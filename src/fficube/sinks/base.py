"""What every output kind provides: an :class:`OutputKind`, its :class:`Output` and :class:`CubeSink`.

An output kind (a local file, an S3 object) owns everything about where a cube goes:
checking that it can be written there, finding, resuming or discarding an
interrupted build (its journal and the journal's progress record), what it keeps
after an interruption, the memory its sink holds, the sink that the writer streams
into, and the coordination of a cube that several workers build together
(:class:`Shards`).  The build and the sharded build only talk to these protocols, so
a new kind of output is one new module (registered in :mod:`fficube.sinks`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self

from ..checksum import ZERO, data_sum
from ..journal import FinishClaim, Journal, SharedPlan, progress_of
from ..units import format_bytes

if TYPE_CHECKING:
    from ..plan import CubePlan
    from ..sources.base import IOStats
    from ..sources.fsspec import Filesystems

__all__ = ["Span", "SharedWindow", "unwritten", "WrittenPrefix", "CubeSink", "Output", "OutputKind", "Shards",
           "kept_message", "log_kept", "Buffer"]

#: What sinks accept as bytes.
Buffer = bytes | bytearray | memoryview



@dataclass(frozen=True, slots=True)
class SharedWindow:
    """A window of one pre-sized partial cube that several workers fill (see
    :mod:`fficube.sectors.shard`), in any output kind."""

    partial: str  #: the shared partial cube (file or object), already of the cube's full size
    window: tuple[int, int]  #: bytes ``lo:hi`` of the cube this worker writes
    journal: str  #: this worker's journal (file or object)


@dataclass(frozen=True, slots=True)
class WrittenPrefix:
    """A build's progress as the prefix of its partial cube written, and that prefix's data sum.

    Kinds that write in order record it, each under a class of its own (a journal of one
    kind is refused by another's sink: see :func:`fficube.journal.progress_of`).
    """

    offset: int = 0  #: bytes of the partial cube (a shared one: of the cube) written
    datasum: int = ZERO  #: data sum of those bytes (a shared cube: of this worker's window)

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "datasum": self.datasum}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(int(data.get("offset", 0)), int(data.get("datasum", ZERO)))

    @classmethod
    def of(cls, journal: Journal | None) -> Self:
        """What ``journal`` records (nothing written yet, without one)."""
        return progress_of(journal, cls)


def unwritten(
    offset: int, data: Buffer, position: int, window: tuple[int, int], datasum: int | None
) -> tuple[memoryview, int | None]:
    """The part of ``data`` (at cube byte ``offset``) that a sink written up to
    ``position`` writes next, and the data sum to use for it.

    Bytes before ``position`` are already written (a resumed build sends its first block
    again, or the block began before this worker's ``window``); bytes past the window
    are another worker's.  ``datasum``, the sum of all of ``data``, stays only if all of
    it is written (``None``: the sink sums the part itself).  The part is empty, or it
    starts at ``position``: blocks come in order.
    """
    view = memoryview(data).cast("B")
    whole = len(view)
    if offset < position:
        view = view[min(len(view), position - offset):]
        offset = position
    view = view[: max(0, window[1] - offset)]
    if len(view) and offset != position:
        raise AssertionError(f"write at {offset}, expected {position}")
    return view, datasum if len(view) == whole else None


class Span:
    """The cube's data unit in the output file: the bytes whose sum is ``DATASUM``."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    @classmethod
    def of(cls, plan: CubePlan) -> Span:
        """The data unit of the cube ``plan`` writes."""
        return cls(plan.data_offset, plan.data_offset + plan.data_bytes)

    def sum(self, offset: int, data: Buffer) -> int:
        """The data sum of the part of ``data`` (at file ``offset``) inside the span.

        Every cut falls on a row, an S3 part (whole MiB) or the span's own ends, all
        multiples of 4 from the span's start, so words never straddle two pieces.
        """
        first = max(offset, self.start)
        last = min(offset + len(data), self.stop)
        if last <= first:
            return ZERO
        return data_sum(memoryview(data)[first - offset : last - offset])


class CubeSink(Protocol):
    """Where the cube's bytes go, in file order, with the progress recorded as it goes."""

    bytes_written: int  #: bytes written by this run
    location: str  #: the finished cube's path or URL

    async def open(self, resume: Journal | None) -> list[tuple[int, int]]:
        """Start (or continue, from ``resume``) and return the byte ranges of the file
        still to be written (the writer may write more: they are dropped)."""
        ...

    async def write_at(self, offset: int, data: Buffer, *, datasum: int | None = None) -> None:
        """Write ``data`` at file ``offset`` (offsets only grow, but for headers patched later).

        ``datasum``, if given, is the data sum of ``data`` (all inside the data unit),
        computed on the way by assembly: a sink that writes ``data`` whole may take it
        instead of summing the bytes again.
        """
        ...

    async def checkpoint(self) -> None:
        """Record what is written so far, so that a resumed build starts there."""
        ...

    def datasum(self) -> int:
        """The data sum of the cube's data written so far (resumed parts included)."""
        ...

    async def patch(self, offset: int, data: bytes) -> None:
        """Replace bytes already written (the sealed cube header)."""
        ...

    async def commit(self) -> None:
        """Make the cube visible at its location, complete."""
        ...

    async def abort(self) -> None:
        """Stop: keep what was recorded for a resumed build, remove the rest."""
        ...


class Output(Protocol):
    """One place a cube goes, and everything about writing it there."""

    location: str  #: the path or URL, as given

    async def check(self, inputs: Sequence[str], *, overwrite: bool) -> None:
        """Refuse, before anything is read, an output that cannot be written as asked
        (one of the inputs, a directory, existing without ``overwrite``, no permission)."""
        ...

    async def exists(self) -> bool:
        """Whether a (complete) cube is at the location."""
        ...

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Hold the output for one build: another process building it too is refused at once.

        The lock dies with its process (a killed build never blocks a resumed one).
        """
        ...

    async def load_journal(self) -> Journal | None:
        """The journal of an interrupted build of this output, if there is one.

        Raises ValueError (naming the journal) if there is one that is not readable.
        """
        ...

    async def discard(self, journal: Journal | None) -> None:
        """Remove an interrupted build: what it wrote, and its journal."""
        ...

    async def check_resumable(self, journal: Journal) -> None:
        """Raise ResumeError if what ``journal`` records is no longer there to continue."""
        ...

    def reserve(self, cube_bytes: int, max_memory: int) -> int:
        """Bytes of ``max_memory`` the sink holds while writing a cube of about ``cube_bytes``."""
        ...

    def sink(self, plan: CubePlan, journal: Journal, *, overwrite: bool, stats: IOStats) -> CubeSink:
        """The sink that writes ``plan``'s cube, recording progress on top of ``journal``."""
        ...

    def shards(self) -> Shards:
        """The coordination of a build of this output by several workers (:mod:`fficube.sectors.shard`).

        Raises InputError if cubes of this kind cannot be built by several workers.
        """
        ...


class OutputKind(Protocol):
    """One kind of output: what :func:`~fficube.sinks.open_output` finds by a location's protocol.

    The kind's :class:`Output` class is its kind, through two class methods.
    """

    async def open(self, location: str, filesystems: Filesystems) -> Output:
        """The output at ``location``."""
        ...

    def kept(self, location: str) -> bool | None:
        """Whether an interrupted build of ``location`` kept its work for a resumed one.

        Answered without a request (after an interruption, on the way out): None when
        only the store could tell (the build's log says what it kept).
        """
        ...


class Shards(Protocol):
    """The shared target of a sharded build and its coordination objects (``<output>.shards/``).

    Coordination goes through atomic creation only: :meth:`start` and :meth:`claim`
    create an object only if it does not exist, so that exactly one worker wins.
    """

    output: str  #: the cube's location

    def unit_for(self, cube_bytes: int) -> int:
        """Windows are whole multiples of this (for a cube of about ``cube_bytes``)."""
        ...

    def reserve(self, cube_bytes: int, max_memory: int) -> int:
        """Memory a worker's sink holds."""
        ...

    async def plan(self) -> SharedPlan | None:
        """The plan the workers share, if one was proposed."""
        ...

    async def journal(self, shard: int) -> Journal | None:
        """Worker ``shard``'s journal, if it wrote one."""
        ...

    async def exists(self) -> bool:
        """Whether the finished cube is at the output."""
        ...

    async def start(self, proposal: SharedPlan) -> SharedPlan:
        """Create a target for ``proposal`` and propose it; return the plan all follow
        (this one, or the one of a worker that came first, whose target is then joined)."""
        ...

    async def claim(self, number: int, claim: FinishClaim) -> bool:
        """Create claim ``number``; False if it exists."""
        ...

    async def read_claim(self, number: int) -> FinishClaim | None:
        """Claim ``number``, if it was made."""
        ...

    def sink(self, agreed: SharedPlan, plan: CubePlan, shard: int, window: tuple[int, int],
             journal: Journal) -> CubeSink:
        """The sink that writes worker ``shard``'s window into the shared target."""
        ...

    async def complete(self, agreed: SharedPlan, records: Sequence[Journal]) -> bool:
        """Seal the cube header and make the cube visible; False if it already was."""
        ...

    async def remove(self) -> None:
        """Remove the coordination objects (the cube is complete): the plan first."""
        ...


def kept_message(kept: str, saved: int, total: int) -> str:
    """What an interrupted build says it kept, and how to continue."""
    return (
        f"kept {kept} ({format_bytes(saved)} of {format_bytes(total)} written): "
        "run the same build again with resume=True to continue, or restart=True to start over"
    )


def log_kept(log: logging.Logger, kept: str, saved: int, total: int) -> None:
    """Warn what an interrupted build kept (:func:`kept_message`); the record's ``options``
    names the options the advice speaks of, for the command line to show as flags."""
    log.warning("%s", kept_message(kept, saved, total), extra={"options": ("resume", "restart")})
