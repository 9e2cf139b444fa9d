"""Staged builds: fetch each remote FFI whole into a local directory, then build from it.

A cube's block holds a range of rows of *every* FFI, so a direct build from S3 reads
each FFI in as many GETs as the cube has blocks: with 12,000 FFIs (a 200-second
sector) and a budget of 12 GB that is 1.9 million GETs of about 250 kB.  S3 serves
large GETs much better (AWS recommends 8-16 MB ranges).  A staged build
(``stage=DIR``, ``--stage DIR``) first copies every FFI into ``DIR`` in a few large
GETs (ranges of 8-16 MiB: one GET for an FFI under 16 MiB, three for a 35 MB SPOC FFI),
many in flight, onto the instance's local disk (NVMe), then builds the cube from the
copies through the local path.

* Free space is checked before anything is fetched: the FFIs still to fetch, and the
  cube too if it is written to the same filesystem.  Too little is an error with the
  numbers, raised before the first GET.
* Every range is read pinned to the version the listing gave (``If-Match`` on its
  ETag, as every remote read of a build is), so a copy never mixes two versions (a
  changed object fails the build); the size is checked when the file is complete.
* A copy is written to ``<copy>.partial``, flushed, renamed into place, and only
  then recorded in ``<copy>.stage.json`` (a :class:`~fficube.journal.StagedFile`:
  URL, size, ETag).  A copy whose record matches the listing is reused by a later run
  (a resumed build after a reclaim, or a ``keep_stage`` run); ``restart`` fetches
  everything again.
* After a successful build the copies are removed unless ``keep_stage``.

The build records the remote URLs and ETags as its inputs (not the copies' paths),
so a staged cube is the same build as a direct one: byte-identical, and resumable
from either.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._aio import closing, run_tasks
from .durable import FILE_MODE, replace_file
from .errors import InputError, OutputError, ReadError, os_reason
from .inputs import Inputs, Version
from .journal import StagedFile
from .sources.base import IOStats
from .sources.fsspec import Filesystems
from .units import format_bytes

__all__ = ["Staged", "stage_inputs", "remove_staged", "stage_path", "ranges_of", "RANGE", "RECORD_SUFFIX"]

MIB = 2**20
#: The largest GET; a file is cut into equal ranges no larger (so of at least 8 MiB when cut).
RANGE = 16 * MIB
#: Beside each copy, the record that it is complete: ``<copy>.stage.json``.
RECORD_SUFFIX = ".stage.json"


@dataclass(frozen=True, slots=True)
class Staged:
    """The local copies of a build's remote inputs."""

    directory: str
    paths: list[str]  #: the copies, in the order of the inputs
    versions: dict[str, Version]  #: copy -> the remote version it holds (size, ETag)
    origins: dict[str, str]  #: copy -> the URL it was fetched from
    fetched: int = 0  #: files fetched by this run
    reused: int = 0  #: files already staged (checked against the listing) and reused
    stats: IOStats = field(default_factory=IOStats)  #: the GETs of this run


def stage_path(directory: str, url: str) -> str:
    """Where ``url`` is staged: ``DIR/<bucket or host>/<key>`` (no query string).

    Raises
    ------
    InputError
        For a URL whose key would lead out of ``DIR`` (``..`` parts).
    """
    parts = urllib.parse.urlsplit(url)
    pieces = [parts.netloc, *parts.path.split("/")]
    if any(p in (".", "..") for p in pieces) or not parts.netloc:
        raise InputError("cannot stage this URL: its path has '.' or '..' parts", path=url)
    return os.path.join(directory, *(p for p in pieces if p))


def ranges_of(size: int, largest: int = RANGE) -> list[tuple[int, int]]:
    """``(start, stop)`` of the GETs of a file of ``size`` bytes: equal ranges of at most ``largest``."""
    count = -(-size // largest)
    step = -(-size // count) if count else 1
    return [(start, min(size, start + step)) for start in range(0, size, step)]


def _record_path(copy: str) -> str:
    return copy + RECORD_SUFFIX


def _staged_already(copy: str, url: str, version: Version) -> bool:
    """Whether ``copy`` is complete and of ``url`` at ``version`` (its record says so, and its size)."""
    try:
        with open(_record_path(copy), "rb") as f:
            record = StagedFile.decode(f.read(), _record_path(copy))
        return record.matches(url, version) and os.path.getsize(copy) == version.size
    except (OSError, ValueError):
        return False


def _free_space(directory: str) -> int:
    """Free bytes on the filesystem that holds (or will hold) ``directory``."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return shutil.disk_usage(existing).free


def _device(path: str) -> int:
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return os.stat(existing).st_dev


class _Copy:
    """One file being staged: its ranges are written into ``<copy>.partial`` as they arrive."""

    def __init__(self, url: str, version: Version, copy: str) -> None:
        self.url, self.version, self.copy = url, version, copy
        self.partial = copy + ".partial"
        self.ranges = ranges_of(version.size)
        self.left = len(self.ranges)

    def write(self, start: int, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.copy), exist_ok=True)
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT, FILE_MODE)
        try:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], start + done)
        finally:
            os.close(fd)

    def finish(self) -> None:
        """All ranges are written: flush, check the size, move into place, record it."""
        os.makedirs(os.path.dirname(self.copy), exist_ok=True)
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT, FILE_MODE)
        try:
            os.ftruncate(fd, self.version.size)  # a left-over longer partial file is cut; all else is ours
            os.fdatasync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size != self.version.size:
            raise ReadError(f"staged {size} bytes, but the listing says {self.version.size}", path=self.url)
        os.replace(self.partial, self.copy)
        replace_file(_record_path(self.copy), StagedFile.of(self.url, self.version).encode())

    def discard(self) -> None:
        for path in (self.partial, _record_path(self.copy)):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):  # never made
                pass


async def stage_inputs(
    found: Inputs,
    directory: str,
    filesystems: Filesystems,
    *,
    concurrency: int,
    max_memory: int,
    also_on_disk: Sequence[tuple[str, int]] = (),
    restart: bool = False,
    on_file: Callable[[int, int, IOStats], None] | None = None,
) -> Staged:
    """Copy the remote inputs ``found`` into ``directory`` (reusing valid copies unless ``restart``).

    Parameters
    ----------
    concurrency
        GETs in flight at most.
    max_memory
        What the ranges in flight may hold together (at least one range is in flight).
    also_on_disk
        Other files to be written (path, bytes), such as the cube: their bytes count
        against the free space of ``directory``'s filesystem if they go to the same one.
    on_file
        Called with (files done, files in all, the GETs' stats) as each file is done.

    Raises
    ------
    OutputError
        If there is not enough free space (before any GET), or a copy cannot be written.
    ReadError
        If a file cannot be fetched, or changed since it was listed.
    """
    assert found.protocol is not None
    copies = [_Copy(url, found.versions[url], stage_path(directory, url)) for url in found.paths]
    done = [] if restart else await asyncio.to_thread(
        lambda: [c for c in copies if _staged_already(c.copy, c.url, c.version)])
    reused = {c.copy for c in done}
    todo = [c for c in copies if c.copy not in reused]
    need = sum(c.version.size for c in todo)
    device = _device(directory)
    others = [(path, size) for path, size in also_on_disk if _device(path) == device]
    free = _free_space(directory)
    if need + sum(size for _, size in others) > free:
        extra = "".join(f" and {format_bytes(size)} for {path}" for path, size in others)
        raise OutputError(
            f"not enough free space to stage the inputs: {len(todo)} FFI(s) need {format_bytes(need)}{extra}, "
            f"but there are {format_bytes(free)} free" + (f" ({len(reused)} FFI(s) already staged)" if reused else "")
            + "; free some space or stage elsewhere", path=directory)
    largest = max((stop - start for c in todo for start, stop in c.ranges), default=1)
    in_flight = max(1, min(concurrency, max_memory // max(1, largest)))
    # Reads pinned to the listed version (If-Match on its ETag): a copy never mixes two.
    source = await found.source(filesystems, in_flight)
    stats = source.stats
    items = [(c, start, stop) for c in todo for start, stop in c.ranges]
    for empty in (c for c in todo if not c.ranges):  # nothing to fetch (scanning will say what is wrong)
        await asyncio.to_thread(empty.finish)
    finished = len(reused) + sum(not c.ranges for c in todo)
    if on_file is not None:
        on_file(finished, len(copies), stats)

    items.reverse()  # taken from the end: in order, without shifting the list

    async def worker() -> None:
        nonlocal finished
        while items:
            copy, start, stop = items.pop()
            data = await source.read(copy.url, start, stop)
            if len(data) != stop - start:
                raise ReadError(f"got {len(data)} bytes, not {stop - start}: the object was cut short",
                                path=copy.url, byte_range=(start, stop))
            try:
                await asyncio.to_thread(copy.write, start, data)
                del data
                copy.left -= 1
                if copy.left == 0:
                    await asyncio.to_thread(copy.finish)
            except OSError as exc:
                if isinstance(exc, ReadError):
                    raise
                raise OutputError(f"staging failed: {os_reason(exc)}", path=copy.partial) from exc
            if copy.left == 0:
                finished += 1
                if on_file is not None:
                    on_file(finished, len(copies), stats)

    try:
        async with closing(source):
            await run_tasks([worker() for _ in range(min(in_flight, len(items)))])
    except BaseException:
        for copy in todo:
            if copy.left:  # begun or not: a partial copy is not kept
                await asyncio.shield(asyncio.to_thread(copy.discard))
        raise
    versions = {c.copy: c.version for c in copies}
    return Staged(directory, [c.copy for c in copies], versions, {c.copy: c.url for c in copies},
                  fetched=len(todo), reused=len(reused), stats=stats)


def remove_staged(staged: Staged) -> None:
    """Remove the copies, their records, and the directories they emptied (not ``staged.directory``)."""
    top = os.path.abspath(staged.directory)
    for copy in staged.paths:
        for path in (copy, _record_path(copy)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        parent = os.path.dirname(os.path.abspath(copy))
        while parent != top and parent.startswith(top + os.sep):
            try:
                os.rmdir(parent)
            except OSError:  # not empty (another cube's copies), or gone
                break
            parent = os.path.dirname(parent)
