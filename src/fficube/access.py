"""Read access to one finished cube, local or behind an fsspec URL, for the views.

The views (:mod:`fficube.refs`, :mod:`fficube.dataset`, :mod:`fficube.overview`) read a
cube's headers and table with :func:`fficube.scan.scan_cube` and a few of its rows by
byte range.  :func:`cube_source` gives them a :class:`~fficube.storage.ByteSource` with
the same credentials handling as a build (``anon`` and ``storage_options`` through
:class:`~fficube.remote.Filesystems`), closed afterwards; :func:`run_sync` runs their
coroutines from synchronous code, notebooks included.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from .errors import MissingExtraError
from .remote import S3_PROTOCOLS, Filesystems, is_url, protocol_of
# The one place the views import the cube scanner from (it may move between modules).
from .scan import CubeInfo, scan_cube
from .storage import ByteSource, FsspecSource, LocalSource

__all__ = ["cube_source", "read_cube", "run_sync", "cube_location", "reading_options", "require", "CubeInfo", "scan_cube"]

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


def cube_location(cube: str | os.PathLike[str]) -> str:
    """The cube as a URL or an absolute local path (what a manifest records)."""
    text = os.fspath(cube)
    if text.startswith("file://"):
        text = text[len("file://"):]
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
    filesystems = Filesystems(anon=anon, storage_options=storage_options)
    try:
        source: ByteSource
        if is_url(cube):
            source = FsspecSource(await filesystems.get(protocol_of(cube)), concurrency)
        else:
            source = LocalSource(concurrency)
        try:
            yield source
        finally:
            await source.aclose()
    finally:
        await filesystems.aclose()


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


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code.

    In a thread that already runs an event loop (a Jupyter cell, an async
    application) ``asyncio.run`` is not allowed; the views are meant for notebooks, so
    there the coroutine runs on a fresh loop in a helper thread instead, and this
    call waits for it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as exc:  # handed to the caller's thread below
            error.append(exc)

    thread = threading.Thread(target=target, name="fficube-view")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
