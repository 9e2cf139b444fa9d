"""Local cube files: written through ``<output>.partial`` and made visible by an atomic rename.

:class:`LocalOutput` owns a local output's lifecycle: the checks before a build, the
partial file and journal of an interrupted build, and the :class:`LocalSink`.  After
each block the sink flushes the data (``fdatasync``) and only then records the
progress in the journal, so the journal never runs ahead of the data on disk.

Large writes go to the disk with direct I/O (``O_DIRECT``) where the filesystem allows
it: blocks arrive placed at their file offset's alignment (:mod:`fficube._buffers`), so
their whole pages are written straight from the pipeline's buffer and only the partial
pages at their ends go through the page cache.  On a virtual disk, copying a cube into
the page cache cost more kernel time than everything else the build does (measured:
``strace -c`` 33 ``pwrite64`` of 128 MB took 5.0 s of a 100-FFI build; ``perf``: 35% of
all samples in ``copy_folio_from_iter_atomic``), and a direct write of the same bytes
costs almost none.  Durability is unchanged: ``fdatasync`` still precedes every journal
record (it also commits the extents that direct writes allocated).

A sink can also own a *window* of a file that several workers share
(:class:`~fficube.sinks.base.SharedWindow`, used by :mod:`fficube.sectors.shard` for a cube on a shared
filesystem): it then writes only the bytes of its window into the pre-sized file,
keeps its own journal, never truncates, renames or removes the file, and leaves the
sealing of the cube header to whoever finishes the cube.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from .._buffers import ALIGN, address
from ..checksum import ZERO, add, seal_header
from ..durable import FILE_MODE, create_file, replace_file, sync_directory, write_synced
from ..errors import InputError, OutputError, OutputExistsError, ResumeError, os_reason
from ..journal import FinishClaim, Journal, ProgressReader, SharedPlan, journal_path
from ..plan import CubePlan
from ..sources.base import IOStats
from ..sources.fsspec import Filesystems
from ..units import format_bytes
from .base import Buffer, SharedWindow, Span, WrittenPrefix, log_kept, unwritten

__all__ = [
    "LocalOutput", "LocalSink", "FileShards", "FileProgress", "LocalJournal", "FILE_UNIT",
    "partial_path", "lock_path", "direct_run",
]

log = logging.getLogger("fficube")

#: Windows of a cube file that several workers share are whole multiples of this.
FILE_UNIT = 2**20
#: Direct writes only for runs of whole pages at least this long: below it, the page
#: cache's copy costs less than a second system call.
DIRECT_MIN = 1 << 20


def partial_path(output: str) -> str:
    """Where a local cube is written until it is complete."""
    return output + ".partial"


def lock_path(output: str) -> str:
    """The file a build of ``output`` holds locked while it runs."""
    return output + ".lock"


def direct_run(offset: int, length: int, addr: int, *, align: int = ALIGN, minimum: int | None = None
               ) -> tuple[int, int]:
    """The bytes ``first:last`` of a write of ``length`` bytes at file ``offset`` from memory
    ``addr`` that can go to disk with direct I/O: whole aligned pages of the file that
    are aligned in memory too.  ``(0, 0)`` when there are none, or fewer than ``minimum``
    bytes (default :data:`DIRECT_MIN`).
    """
    minimum = DIRECT_MIN if minimum is None else minimum
    if (addr - offset) % align:
        return 0, 0  # memory and file disagree: no byte could be written directly
    first = -offset % align
    last = first + (length - first) // align * align if length > first else first
    return (first, last) if last - first >= max(minimum, align) else (0, 0)


@dataclass(frozen=True, slots=True)
class FileProgress(WrittenPrefix):
    """How far a local build got: the bytes of its partial file flushed to disk, and their data sum."""


class LocalJournal:
    """A local journal, replaced atomically (write, flush, rename, sync the directory)."""

    def __init__(self, output: str, progress: ProgressReader, *, path: str | None = None) -> None:
        #: ``<output>.journal``, or ``path`` (a shard's journal, in the shards' directory)
        self.path = path or journal_path(output)
        self.progress = progress

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> Journal:
        """The journal on disk.

        Raises
        ------
        ValueError
            If it is not a journal of ours.
        """
        with open(self.path, "rb") as f:
            return Journal.decode(f.read(), self.path, self.progress)

    def save(self, record: Journal) -> None:
        """Replace the journal; on return it is on disk (blocking: call from a thread)."""
        replace_file(self.path, record.encode())

    def remove(self) -> None:
        for path in (self.path, self.path + ".tmp"):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                pass


class LocalOutput:
    """A cube file on a local (or shared) filesystem."""

    def __init__(self, path: str) -> None:
        self.location = path
        self.partial = partial_path(path)
        self.journal = LocalJournal(path, FileProgress.from_json)

    async def check(self, inputs: Sequence[str], *, overwrite: bool) -> None:
        output = self.location
        real = os.path.realpath(output)
        if any(os.path.realpath(path) == real for path in inputs):
            raise InputError("the output is one of the inputs; choose another output path", path=output)
        if os.path.isdir(output):
            raise OutputExistsError("is a directory; give the cube's file name", path=output)
        if os.path.exists(output) and not overwrite:
            raise OutputExistsError("already exists; use overwrite=True to replace it", path=output)
        # Fail before reading anything when the cube cannot be written there.
        parent = os.path.dirname(os.path.abspath(output))
        while not os.path.exists(parent):  # missing directories are created
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise OutputError(f"cannot write here: {parent} is not a directory", path=output)
        if not os.access(parent, os.W_OK):
            raise OutputError(f"cannot write here: no permission to write in {parent}", path=output)

    async def exists(self) -> bool:
        return os.path.isfile(self.location)

    @asynccontextmanager
    async def lock(self) -> AsyncIterator[None]:
        """An exclusive ``flock`` on ``<output>.lock``, which holds the builder's pid.

        The kernel drops the lock when its process dies, however it dies; the file is
        removed when the build ends.
        """
        path = lock_path(self.location)
        while True:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            except OSError as exc:
                # The first file a build creates beside its output: where that fails (/proc,
                # a read-only mount), the output cannot be written either; say so of it.
                reason = os_reason(exc)
                raise OutputError(f"cannot write here: {reason[0].lower()}{reason[1:]}", path=self.location) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputError(f"another fficube process (pid {holder}) is building this cube right now; "
                                  "wait for it to finish, or stop it", path=self.location) from None
            # The holder before us may have removed the file between our open and our lock:
            # then we hold a lock nobody else can see; take the file that is there now.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            os.close(fd)

    async def load_journal(self) -> Journal | None:
        if not self.journal.exists():
            return None
        return await asyncio.to_thread(self.journal.load)

    async def discard(self, journal: Journal | None) -> None:
        log.info("discarding the interrupted build of %s", self.location)
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass
        self.journal.remove()

    async def check_resumable(self, journal: Journal) -> None:
        if not os.path.isfile(self.partial) or os.path.getsize(self.partial) < FileProgress.of(journal).offset:
            raise ResumeError(f"cannot resume: {self.partial} is missing or shorter than its journal says; "
                              "use restart=True to start over", path=self.location)

    def reserve(self, cube_bytes: int, max_memory: int) -> int:
        return 0  # blocks go straight from the pipeline's buffers to the file

    def sink(self, plan: CubePlan, journal: Journal, *, overwrite: bool, stats: IOStats) -> LocalSink:
        return LocalSink(self.location, span=Span.of(plan), total_bytes=plan.total_bytes, journal=journal,
                         overwrite=overwrite)

    def shards(self) -> FileShards:
        return FileShards(self.location)

    @classmethod
    async def open(cls, location: str, filesystems: Filesystems) -> LocalOutput:
        """The file at the path ``location``."""
        return cls(location)

    @staticmethod
    def kept(location: str) -> bool | None:
        """Whether the journal of an interrupted build of ``location`` is there."""
        return os.path.exists(journal_path(location))



class LocalSink:
    """Writes a local file through ``<output>.partial`` and an atomic rename.

    With ``shared``, the sink fills one window of a file shared by several workers.
    With ``direct`` (the default, but not for a shared window, whose file may live on a
    network filesystem with its own rules), page-aligned runs of large writes use
    direct I/O when the filesystem accepts it, and the page cache otherwise.
    """

    def __init__(self, output: str, *, span: Span, total_bytes: int, journal: Journal, overwrite: bool = False,
                 shared: SharedWindow | None = None, direct: bool = True) -> None:
        self.output = self.location = output
        self.shared = shared
        self.partial = shared.partial if shared else partial_path(output)
        self.window = shared.window if shared else (0, total_bytes)  #: the bytes this sink writes
        self.span, self.total_bytes, self.overwrite = span, total_bytes, overwrite
        self.record = journal  #: identity and build time; progress is added as it is made
        self.journal = LocalJournal(output, FileProgress.from_json, path=shared.journal if shared else None)
        self.bytes_written = 0
        self.position = 0  #: the file is written up to here (from the window's start)
        self.saved = 0  #: written up to here durably, and recorded in the journal
        self._sum = ZERO
        self._fd: int | None = None
        self._direct = direct and shared is None and hasattr(os, "O_DIRECT")
        self._dfd: int | None = None  #: the same file opened for direct I/O, if that is possible
        self._pending: asyncio.Future[int] | None = None  #: the flush under way

    async def open(self, resume: Journal | None) -> list[tuple[int, int]]:
        """Create the partial file, or reopen it at the journal's offset; return what is
        left to write."""
        lo, hi = self.window
        recorded = FileProgress.of(resume)
        try:
            if self.shared is not None:  # never created, truncated or removed here
                self._fd = os.open(self.partial, os.O_WRONLY)
                self.position = self.saved = max(lo, recorded.offset)
                self._sum = recorded.datasum
                return [(self.position, hi)] if self.position < hi else []
            await asyncio.to_thread(os.makedirs, os.path.dirname(os.path.abspath(self.output)), exist_ok=True)
            if resume is None:
                self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            else:
                self._fd = os.open(self.partial, os.O_WRONLY)
                self.position = self.saved = recorded.offset
                self._sum = recorded.datasum
                await asyncio.to_thread(os.ftruncate, self._fd, self.position)  # drop what was not recorded
        except OSError as exc:
            raise OutputError(f"cannot write here: {os_reason(exc)}", path=self.output) from exc
        if self._direct:
            try:
                self._dfd = os.open(self.partial, os.O_WRONLY | os.O_DIRECT)
            except OSError as exc:  # not supported here (some FUSE and network filesystems)
                log.debug("no direct I/O for %s (%s): writing through the page cache", self.partial, exc)
        return [(self.position, self.total_bytes)]

    def _pwrite(self, fd: int, data: memoryview, offset: int) -> None:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], offset + done)

    def _write(self, data: memoryview, datasum: int | None = None) -> int:
        assert self._fd is not None
        first, last = direct_run(self.position, len(data), address(data)) if self._dfd is not None else (0, 0)
        self._pwrite(self._fd, data[:first], self.position)
        if last > first:
            try:
                self._pwrite(self._dfd, data[first:last], self.position + first)  # type: ignore[arg-type]
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # The filesystem wants another alignment (or none): the page cache then.
                log.debug("direct write to %s refused (%s): writing through the page cache", self.partial, exc)
                self._close_direct()
                self._pwrite(self._fd, data[first:last], self.position + first)
        self._pwrite(self._fd, data[last:], self.position + last)
        return self.span.sum(self.position, data) if datasum is None else datasum

    def _close_direct(self) -> None:
        if self._dfd is not None:
            fd, self._dfd = self._dfd, None
            try:
                os.close(fd)
            except OSError:
                pass

    async def write_at(self, offset: int, data: Buffer, *, datasum: int | None = None) -> None:
        view, datasum = unwritten(offset, data, self.position, self.window, datasum)
        if not len(view):
            return
        try:
            part_sum = await asyncio.to_thread(self._write, view, datasum)
        except OSError as exc:
            raise OutputError(f"writing failed: {os_reason(exc)}", path=self.partial) from exc
        self._sum = add(self._sum, part_sum)
        self.position += len(view)
        self.bytes_written += len(view)

    def _record(self, position: int, datasum: int) -> int:
        assert self._fd is not None
        os.fdatasync(self._fd)  # the data first: the journal must never run ahead of it
        self.journal.save(self.record.advanced(progress=FileProgress(position, datasum)))
        return position

    async def checkpoint(self) -> None:
        """Flush what is written and record it, so that a resumed build starts here.

        The flush runs in the background while the next block is written: waiting for
        the disk here would stall the pipeline once per block.  If the previous flush is
        still running, this one is skipped (the next records more).
        """
        if self._pending is not None:
            if not self._pending.done():
                return
            await self._settle()
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(None, self._record, self.position, self._sum)

    async def _settle(self) -> None:
        """Wait for the flush under way, if any; what it recorded is saved."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            self.saved = await pending
        except OSError as exc:
            raise OutputError(f"saving progress failed: {os_reason(exc)}", path=self.journal.path) from exc

    def datasum(self) -> int:
        return self._sum

    async def patch(self, offset: int, data: bytes) -> None:
        if self.shared is not None:
            return  # the cube header is sealed by whoever finishes the shared file
        assert self._fd is not None
        try:
            await asyncio.to_thread(os.pwrite, self._fd, data, offset)
        except OSError as exc:
            raise OutputError(f"writing failed: {os_reason(exc)}", path=self.partial) from exc

    async def commit(self) -> None:
        assert self._fd is not None
        await self._settle()
        if self.shared is not None:
            await self._window_done()
            return
        self._close_direct()
        try:
            await asyncio.to_thread(os.fsync, self._fd)
            os.close(self._fd)
            self._fd = None
            if not self.overwrite and os.path.exists(self.output):
                raise OutputExistsError("appeared during the build; not replaced (use overwrite)", path=self.output)
            os.replace(self.partial, self.output)
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"finishing the cube failed: {os_reason(exc)}", path=self.output) from exc
        self.journal.remove()

    async def _window_done(self) -> None:
        """A shared file's window is all written: flush it, record it done, keep the file."""
        assert self._fd is not None
        if self.position != self.window[1]:
            raise AssertionError(f"window {self.window} written up to {self.position}")
        try:
            await asyncio.to_thread(os.fdatasync, self._fd)
            self.record = self.record.advanced(progress=FileProgress(self.position, self._sum), done=True)
            await asyncio.to_thread(self.journal.save, self.record)
        except OSError as exc:
            raise OutputError(f"saving progress failed: {os_reason(exc)}", path=self.journal.path) from exc
        finally:
            os.close(self._fd)
            self._fd = None

    async def abort(self) -> None:
        # Shielded from cancellation by the caller: this runs while a build is being
        # cancelled, and must finish.
        try:
            await self._settle()  # a flush under way may still record more
        except OutputError:
            pass
        self._close_direct()
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self.shared is not None:
            # The file is shared: keep it, and this worker's journal, for a re-run.
            lo, hi = self.window
            if self.saved > lo:
                log.warning("%s: shard stopped with %s of its %s recorded; run it again to continue", self.output,
                            format_bytes(self.saved - lo), format_bytes(hi - lo))
            return
        if self.saved:
            log_kept(log, self.partial, self.saved, self.total_bytes)
            return
        try:
            os.unlink(self.partial)
        except OSError:  # never created (or cannot be: the error being raised says why)
            pass
        self.journal.remove()


class FileShards:
    """A sharded build's files in the directory ``<output>.shards/``, and one pre-sized partial file in it."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.directory = output + ".shards"

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def unit_for(self, cube_bytes: int) -> int:
        return FILE_UNIT

    def reserve(self, cube_bytes: int, max_memory: int) -> int:
        return 0

    async def _read(self, name: str) -> bytes | None:
        def read() -> bytes | None:
            try:
                with open(self.path(name), "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(read)

    async def plan(self) -> SharedPlan | None:
        raw = await self._read("plan.json")
        return None if raw is None else SharedPlan.decode(raw, self.path("plan.json"))

    async def journal(self, shard: int) -> Journal | None:
        raw = await self._read(f"{shard}.json")
        return None if raw is None else Journal.decode(raw, self.path(f"{shard}.json"), FileProgress.from_json)

    async def exists(self) -> bool:
        return os.path.isfile(self.output)

    def _create_target(self, size: int) -> str:
        """A new file of ``size`` bytes (zeros, sparse) in the directory; its name."""
        os.makedirs(self.directory, exist_ok=True)
        name = f"{os.urandom(8).hex()}.partial"
        write_synced(self.path(name), os.O_EXCL, size=size)
        return name

    async def start(self, proposal: SharedPlan) -> SharedPlan:
        try:
            name = await asyncio.to_thread(self._create_target, proposal.total_bytes)
            mine = replace(proposal, partial=name)
            if await asyncio.to_thread(create_file, self.path("plan.json"), mine.encode()):
                return mine
            os.unlink(self.path(name))  # another worker came first: use its file
        except OSError as exc:
            raise OutputError(f"cannot start the shared build: {os_reason(exc)}", path=self.output) from exc
        agreed = await self.plan()
        assert agreed is not None
        return agreed

    async def claim(self, number: int, claim: FinishClaim) -> bool:
        try:
            return await asyncio.to_thread(create_file, self.path(f"finishing.{number}"), claim.encode())
        except FileNotFoundError:
            return False  # the directory is gone: a finisher completed the cube and cleaned up

    async def read_claim(self, number: int) -> FinishClaim | None:
        raw = await self._read(f"finishing.{number}")
        return None if raw is None else FinishClaim.decode(raw, self.path(f"finishing.{number}"))

    def sink(self, agreed: SharedPlan, plan: CubePlan, shard: int, window: tuple[int, int],
             journal: Journal) -> LocalSink:
        assert agreed.partial is not None
        shared = SharedWindow(self.path(agreed.partial), window, self.path(f"{shard}.json"))
        return LocalSink(self.output, span=Span.of(plan), total_bytes=plan.total_bytes, journal=journal,
                         shared=shared)

    def _complete(self, agreed: SharedPlan, datasum: int) -> bool:
        assert agreed.partial is not None
        partial = self.path(agreed.partial)
        if not os.path.exists(partial):
            if os.path.isfile(self.output):
                return False  # a finisher before us completed it, and died before cleaning up
            raise OutputError(f"every shard is done but the shared file {partial} is gone", path=self.output)
        sealed = seal_header(agreed.cube_header, datasum)
        fd = os.open(partial, os.O_WRONLY)
        try:
            os.pwrite(fd, sealed, agreed.header_offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(partial, self.output)  # unlike a rename, never replaces a file that is there
        except FileExistsError:
            if not os.path.samefile(partial, self.output):
                raise OutputExistsError("appeared during the build; not replaced", path=self.output) from None
        os.unlink(partial)
        sync_directory(self.output)
        return True

    async def complete(self, agreed: SharedPlan, records: Sequence[Journal]) -> bool:
        datasum = add(*(FileProgress.of(r).datasum for r in records))
        try:
            return await asyncio.to_thread(self._complete, agreed, datasum)
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"finishing the cube failed: {os_reason(exc)}", path=self.output) from exc

    async def remove(self) -> None:
        def remove() -> None:
            try:  # the plan first, as on S3
                os.unlink(self.path("plan.json"))
            except FileNotFoundError:
                pass
            shutil.rmtree(self.directory, ignore_errors=True)

        await asyncio.to_thread(remove)
