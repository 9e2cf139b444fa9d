"""Read access to one finished cube, local or behind an fsspec URL, for the views.

The views (:mod:`fficube.views.refs`, :mod:`fficube.views.dataset`, :mod:`fficube.views.overview`) read a
cube's headers and table with :func:`fficube.cubeinfo.scan_cube` and a few of its rows by
byte range.  :func:`cube_source` gives them a :class:`~fficube.sources.base.ByteSource` with
the same credentials handling as a build (``anon`` and ``storage_options`` through
:class:`~fficube.sources.fsspec.Filesystems`), closed afterwards.  Their synchronous functions
run coroutines with :func:`fficube.sync.run`, notebooks included.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from ._aio import closing
from .cubeinfo import CubeDescription, CubeInfo, scan_cube
from .errors import MissingExtraError
from .sources import open_location
from .sources.base import ByteSource
from .sources.fsspec import Filesystems
from .sources.locations import S3_PROTOCOLS, is_url

__all__ = ["cube_source", "read_cube", "cube_path", "cube_location", "reading_options", "require", "CubeInfo",
           "scan_cube", "describe_cube"]

T = TypeVar("T")


def require(module: str, extra: str, feature: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``fficube[extra]``.

    Imports happen here, on first use, so that ``import fficube`` stays light.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs {module.split('.')[0]}: pip install 'fficube[{extra}]'"
        ) from exc


def cube_path(cube: str | os.PathLike[str]) -> str:
    """The cube as the user gave it (a ``file://`` URL as its path): what messages name."""
    return os.fspath(cube).removeprefix("file://")


def cube_location(cube: str | os.PathLike[str]) -> str:
    """The cube as a URL or an absolute local path (what a manifest records)."""
    text = cube_path(cube)
    return text if is_url(text) else os.path.abspath(text)


def reading_options(
    protocol: str, *, anon: bool | None, storage_options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Keyword arguments for an fsspec filesystem that reads a cube: the user's
    storage options, plus ``anon`` for S3 (as a build applies it to its inputs)."""
    options = dict(storage_options or {})
    if protocol in S3_PROTOCOLS and anon is not None:
        options["anon"] = anon
    return options


@asynccontextmanager
async def cube_source(
    cube: str,
    *,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int = 4,
) -> AsyncIterator[ByteSource]:
    """A byte source for ``cube`` (local or URL), its session closed on exit."""
    async with (
        Filesystems(anon=anon, storage_options=storage_options) as filesystems,
        closing(await open_location(cube, filesystems, concurrency)) as source,
    ):
        yield source


async def read_cube(
    cube: str, *, anon: bool | None = None, storage_options: Mapping[str, Any] | None = None
) -> tuple[CubeInfo, int]:
    """The headers and info table of ``cube`` and the number of requests they took.

    Raises
    ------
    FitsFormatError
        If the file is not a cube in fficube's (astrocut's) format.
    ReadError
        If it cannot be read.
    """
    async with cube_source(cube, anon=anon, storage_options=storage_options) as source:
        info = await scan_cube(source, cube)
        return info, source.stats.requests


async def describe_cube(
    path: str | os.PathLike[str], *, anon: bool | None = None, storage_options: Mapping[str, Any] | None = None
) -> CubeDescription:
    """Describe the cube at ``path`` (local or any ranged fsspec URL), reading only its
    headers and info table by byte range.

    Raises
    ------
    FitsFormatError
        If the file is not a cube in fficube's (astrocut's) format.
    """
    cube, _ = await read_cube(os.fspath(path), anon=anon, storage_options=storage_options)
    return CubeDescription.of(cube)
