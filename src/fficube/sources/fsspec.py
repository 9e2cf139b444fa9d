"""fsspec filesystems of a build, and the byte source that reads through them.

:class:`Filesystems` opens at most one filesystem per protocol for a build, with the
user's ``anon`` and ``storage_options``, and closes their sessions at the end.  s3fs's
and botocore's own retries are turned off, so that every retry goes through
:func:`~fficube.sources.policy.retrying`, where it is bounded, backed off and counted.
S3 settings are resolved once (:mod:`fficube.sources.s3settings`) and handed to s3fs
and obstore alike.  :class:`FsspecSource` reads ``https://``, ``memory://``... (and
``s3://`` where obstore cannot) through a filesystem's async API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import fsspec

from .base import IOStats
from .locations import S3_PROTOCOLS
from .policy import IOPolicy, RetryPolicy, retrying
from .remote import RemoteSource
from .s3settings import S3Settings, explicit_endpoint, resolve_s3_settings

__all__ = ["Filesystems", "FsspecSource", "fs_call", "fs_request"]


async def fs_call(fs: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call filesystem method ``name``: its async twin ``_name`` when the filesystem is
    async (s3fs, HTTP), else the blocking one in a thread (memory, ...)."""
    if getattr(fs, "async_impl", False):
        return await getattr(fs, "_" + name)(*args, **kwargs)
    return await asyncio.to_thread(getattr(fs, name), *args, **kwargs)


async def fs_request(
    fs: Any, name: str, *args: Any, stats: IOStats, policy: RetryPolicy = RetryPolicy(), **kwargs: Any
) -> Any:
    """:func:`fs_call` with transient failures retried (listing, existence checks)."""

    async def once() -> Any:
        stats.requests += 1
        return await fs_call(fs, name, *args, **kwargs)

    return await retrying(once, policy=policy, stats=stats, what=f"{name} {args[0] if args else ''}")


class Filesystems:
    """The fsspec filesystems of one build, opened on first use, closed by :meth:`aclose`.

    ``concurrency`` (the build's reads in flight) and ``policy`` size S3 connection
    pools (:meth:`~fficube.sources.policy.IOPolicy.connections`); a
    ``max_pool_connections`` in the storage options' ``config_kwargs`` wins.  The
    sources opened on these filesystems follow ``policy`` too.
    """

    def __init__(self, *, anon: bool | None = None, storage_options: Mapping[str, Any] | None = None,
                 concurrency: int | None = None, policy: IOPolicy | None = None) -> None:
        self.policy = policy or IOPolicy()
        self.stats = IOStats()  #: listing and existence requests
        self.connections = self.policy.connections(concurrency)
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
        from the storage options and the AWS configuration (:mod:`fficube.sources.s3settings`)."""
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


class FsspecSource(RemoteSource):
    """Reads byte ranges through an fsspec filesystem's async API.

    Parameters
    ----------
    fs
        The filesystem; async ones (s3fs, HTTP) are awaited directly, others are
        called in threads.
    concurrency, sizes, etags, policy
        As for :class:`~fficube.sources.remote.RemoteSource`.
    """

    def __init__(self, fs: Any, concurrency: int = 32, **kwargs: Any) -> None:
        super().__init__(concurrency, **kwargs)
        self.fs = fs
        self.anonymous = bool(getattr(fs, "anon", False))

    async def _range(self, path: str, start: int, stop: int, etag: str | None) -> Any:
        client = getattr(self.fs, "s3", None) if etag else None
        if etag and client is not None:  # s3fs: its cat_file cannot send If-Match; its client can
            bucket, key, _ = self.fs.split_path(path)
            response = await client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}",
                                               IfMatch=etag, **getattr(self.fs, "req_kw", {}))
            async with response["Body"] as body:
                return await body.read()
        extra = {"headers": {"If-Match": etag}} if etag and self.fs.protocol[0] in ("http", "https") else {}
        return await fs_call(self.fs, "cat_file", path, start=start, end=stop, **extra)

    async def _size(self, path: str) -> int:
        info = await fs_call(self.fs, "info", path)
        return int(info["size"])
