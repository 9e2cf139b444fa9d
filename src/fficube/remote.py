"""Where bytes live: local paths or fsspec URLs, one session per build, and byte sources.

:class:`Filesystems` opens at most one filesystem per protocol for a build, with the
user's ``anon`` and ``storage_options``, and closes their sessions at the end.  s3fs's
and botocore's own retries are turned off, so that every retry goes through
:func:`fficube.storage.retrying`, where it is bounded, backed off and counted.
:func:`open_source` gives the :class:`~fficube.storage.ByteSource` for a location.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import fsspec

from .s3read import ObstoreSource
from .s3settings import S3Settings, explicit_endpoint, resolve_s3_settings
from .storage import ByteSource, FsspecSource, HedgePolicy, IOStats, LocalSource

__all__ = [
    "is_url", "protocol_of", "protocol_or_local", "Filesystems", "open_source", "S3_PROTOCOLS",
    "DEFAULT_LOCAL_CONCURRENCY", "DEFAULT_REMOTE_CONCURRENCY", "connections_for",
]

S3_PROTOCOLS = ("s3", "s3a")
#: Reads in flight for local files: a few keep a disk busy; more only add seeks.
DEFAULT_LOCAL_CONCURRENCY = 4
#: Requests in flight for remote files: enough to hide tens of ms of latency.
DEFAULT_REMOTE_CONCURRENCY = 32
#: Connections beyond the reads': an upload's parts in flight (8, see
#: :data:`fficube.sinks.s3.PARTS_IN_FLIGHT`), its journal and listings.
OTHER_CONNECTIONS = 16


def connections_for(concurrency: int | None) -> int:
    """Connections an S3 filesystem may open for a build reading with ``concurrency``.

    botocore keeps 10 by default whatever the requests asked of it, and requests
    beyond the pool wait for a connection (measured: 10 on the wire for 32 asked):
    the pool must hold every read, its hedges and the upload's parts.
    """
    reads = concurrency or DEFAULT_REMOTE_CONCURRENCY
    return reads + HedgePolicy().hedges_for(reads) + OTHER_CONNECTIONS


def is_url(path: str) -> bool:
    """True for ``proto://...`` locations other than local files."""
    return "://" in path and not path.startswith("file://")


def protocol_of(url: str) -> str:
    """The protocol of a URL, lower case (``"s3"`` for ``s3://bucket/key``)."""
    return url.split("://", 1)[0].lower()


def protocol_or_local(path: str) -> str | None:
    """The protocol of ``path``, or None for a local path."""
    return protocol_of(path) if is_url(path) else None


class Filesystems:
    """The fsspec filesystems of one build, opened on first use, closed by :meth:`aclose`.

    ``concurrency`` (the build's reads in flight) sizes S3 connection pools
    (:func:`connections_for`); a ``max_pool_connections`` in the storage options'
    ``config_kwargs`` wins.
    """

    def __init__(self, *, anon: bool | None = None, storage_options: Mapping[str, Any] | None = None,
                 concurrency: int | None = None) -> None:
        self.stats = IOStats()  #: listing and existence requests
        self.connections = connections_for(concurrency)
        self.anon = anon
        self.storage_options = dict(storage_options or {})
        self._open: dict[str, Any] = {}
        self._sessions: list[Any] = []
        self._settings: dict[bool, S3Settings] = {}

    def options_for(self, protocol: str, *, output: bool = False) -> dict[str, Any]:
        """The keyword arguments the filesystem of ``protocol`` is created with.

        ``anon`` applies to inputs only: a cube read from a public bucket is written
        to the user's own bucket with the user's credentials.
        """
        cls = fsspec.get_filesystem_class(protocol)
        options = dict(self.storage_options)
        if protocol in S3_PROTOCOLS:
            if self.anon is not None and not output:
                options["anon"] = self.anon
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("retries", {"mode": "standard", "total_max_attempts": 1})
            config.setdefault("max_pool_connections", self.connections)
            options["config_kwargs"] = config
        if getattr(cls, "async_impl", False):
            options["asynchronous"] = True
        options["skip_instance_cache"] = True  # a session of our own, closed by us
        return options

    async def s3_settings(self, *, output: bool = False) -> S3Settings:
        """The S3 settings of the inputs (or of the output: without ``anon``), resolved once
        from the storage options and the AWS configuration (:mod:`fficube.s3settings`)."""
        if output not in self._settings:
            options = self.options_for("s3", output=output)
            self._settings[output] = await asyncio.to_thread(resolve_s3_settings, options)
        return self._settings[output]

    async def get(self, protocol: str, *, output: bool = False) -> Any:
        """The filesystem for ``protocol`` (for the output: without ``anon``), session open."""
        options = self.options_for(protocol, output=output)
        if protocol in S3_PROTOCOLS:
            # s3fs is handed the endpoint resolved for obstore too: one resolution, not two.
            settings = await self.s3_settings(output=output)
            if settings.endpoint_url and not explicit_endpoint(options):
                options["endpoint_url"] = settings.endpoint_url
        key = repr(sorted(options.items()))
        if key not in self._open:  # one session per distinct filesystem
            cls = fsspec.get_filesystem_class(protocol)
            fs = cls(**options)
            if protocol in S3_PROTOCOLS:
                fs.retries = 1  # one attempt per call: fficube retries, visibly and bounded
            if getattr(cls, "async_impl", False) and hasattr(fs, "set_session"):
                self._sessions.append(await fs.set_session())
            self._open[key] = fs
        return self._open[key]

    async def __aenter__(self) -> Filesystems:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.shield(self.aclose())

    async def aclose(self) -> None:
        """Close the sessions opened so far."""
        sessions, self._sessions, self._open = self._sessions, [], {}
        for session in sessions:
            close = getattr(session, "close", None)
            if close is not None:
                await close()


async def open_source(
    protocol: str | None,
    filesystems: Filesystems,
    concurrency: int | None = None,
    *,
    sizes: Mapping[str, int] | None = None,
    etags: Mapping[str, str] | None = None,
    output: bool = False,
) -> ByteSource:
    """The byte source that reads files of ``protocol`` (None: local files).

    Parameters
    ----------
    protocol
        ``"s3"``, ``"https"``... (see :func:`protocol_or_local`), or None for local files.
    filesystems
        The build's filesystems (the source uses their session; closing the source
        does not close it).
    concurrency
        Requests in flight at most (default: 4 for local files, 32 for remote ones).
    sizes
        File sizes already known (from a listing), so that they cost no request.
    etags
        ETags from the listing: every read is pinned to that version.
    output
        Read with the output's credentials (never ``anon``): for the cube an update
        replaces, which lives where the user writes.
    """
    if protocol is None:
        return LocalSource(concurrency or DEFAULT_LOCAL_CONCURRENCY)
    fs = await filesystems.get(protocol, output=output)
    known = {"sizes": dict(sizes or {}), "etags": dict(etags or {})}
    if protocol in S3_PROTOCOLS:  # obstore when it can stand in for s3fs (see s3read.py)
        fast = await ObstoreSource.open(fs, filesystems.options_for(protocol, output=output),
                                        await filesystems.s3_settings(output=output),
                                        concurrency or DEFAULT_REMOTE_CONCURRENCY, **known)
        if fast is not None:
            return fast
    return FsspecSource(fs, concurrency or DEFAULT_REMOTE_CONCURRENCY, **known)
