"""Outputs: where a cube goes, one module per kind, each owning its whole lifecycle.

* :mod:`~fficube.sinks.base`: the :class:`OutputKind`, :class:`Output`,
  :class:`CubeSink` and :class:`Shards` protocols, and the :class:`Span` of the cube's
  data whose sum seals the cube header;
* :mod:`~fficube.sinks.local`: a local file, through ``<output>.partial`` and a rename
  (or one window of a file that several workers share);
* :mod:`~fficube.sinks.s3`: an S3 object, as one multipart upload (or one window of an
  upload shared by several workers);
* :mod:`~fficube.sinks.memory`: a cube held in this process's memory (``mem://name``),
  read back by :mod:`fficube.sources.memory`.

:data:`KINDS` is the one place that tells the kinds apart: a new kind of output is a
module here and its line there.  Everything else asks this package: :func:`open_output`
(for a build or an update), :func:`open_shards` (for a sharded build), :func:`interrupted_build`,
:func:`kept_after_interruption` and :func:`complete_cube`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._aio import closing
from ..cubeinfo import CubeInfo
from ..errors import InputError, OutputError, ResumeError
from ..journal import Journal
from ..sources import open_location
from ..sources.base import IOStats
from ..sources.fsspec import Filesystems
from ..sources.locations import S3_PROTOCOLS, protocol_or_local
from ..verify import check_cube
from .base import CubeSink, Output, OutputKind, Shards, Span, kept_message
from .local import LocalOutput
from .memory import MemoryOutput
from .s3 import S3Output

__all__ = [
    "CubeSink", "Output", "OutputKind", "Shards", "Span", "KINDS", "CubeThere", "kept_message", "open_output",
    "open_shards", "interrupted_build", "kept_after_interruption", "complete_cube",
]

#: The output kinds by their locations' protocol (None: a local path).
KINDS: dict[str | None, OutputKind] = {
    None: LocalOutput,
    **dict.fromkeys(S3_PROTOCOLS, S3Output),
    "mem": MemoryOutput,
}


def _kind(location: str) -> OutputKind | None:
    return KINDS.get(protocol_or_local(location))


async def open_output(location: str, filesystems: Filesystems) -> Output:
    """The output at ``location``: a local path or a URL of a kind in :data:`KINDS`.

    Raises
    ------
    OutputError
        For a URL of a protocol cubes cannot be written to.
    """
    kind = _kind(location)
    if kind is None:
        raise OutputError(f"cannot write cubes to {protocol_or_local(location)}://; give a local path or an s3:// "
                          "URL", path=location)
    return await kind.open(location, filesystems)


async def open_shards(location: str, filesystems: Filesystems) -> Shards:
    """The coordination of a build of the cube at ``location`` by several workers.

    Raises
    ------
    InputError
        If cubes cannot be built there by several workers.
    """
    if _kind(location) is None:
        raise InputError("a cube built by several workers goes to a local (shared) filesystem or to s3://",
                         path=location)
    return (await open_output(location, filesystems)).shards()


def kept_after_interruption(location: str) -> bool | None:
    """Whether an interrupted build of ``location`` kept its work for a resumed one.

    Asks nothing of the store (it is said on the way out of an interrupted command):
    None when only the store could tell, or ``location`` is of no output kind.
    """
    kind = _kind(location)
    return kind.kept(location) if kind is not None else None


async def interrupted_build(output: Output, *, resume: bool, restart: bool) -> Journal | None:
    """The journal of an interrupted build of ``output`` to continue, if any and asked for.

    With ``restart`` the interrupted build is discarded; without ``resume`` or
    ``restart`` its presence is an error (hours of work are not thrown away silently).

    Raises
    ------
    ResumeError
        If there is an interrupted build and neither flag was given, or its journal
        cannot be read and ``restart`` was not given.
    """
    try:
        journal = await output.load_journal()
    except ValueError as exc:
        if not restart:
            raise ResumeError(f"{exc}; use restart=True to start over", path=output.location) from exc
        await output.discard(None)
        return None
    if journal is None:
        return None
    if restart:
        await output.discard(journal)
        return None
    if not resume:
        raise ResumeError(
            "an interrupted build of this cube is saved here: run the same build with resume=True "
            "to continue it, or restart=True to start over", path=output.location,
        )
    return journal


@dataclass(frozen=True, slots=True)
class CubeThere:
    """What :func:`complete_cube` found at an output."""

    cube: CubeInfo | None  #: the cube, if it is complete
    problem: str  #: why it is not ("" when it is): the failed checks
    stats: IOStats  #: the reads the checks took


async def complete_cube(location: str, filesystems: Filesystems) -> CubeThere:
    """Whether the file at ``location`` (which exists) is a complete cube.

    Cheap: headers and table by range, the sealed checksum; no data read
    (:func:`~fficube.verify.check_cube` without ``read_data``).
    """
    source = await open_location(location, filesystems, 4, output=True)
    async with closing(source):
        checks, cube = await check_cube(source, location, read_data=False)
    failed = [f"{c.name}: {c.detail}" for c in checks if c.failed]
    return CubeThere(None if failed else cube, "; ".join(failed), source.stats)
