"""Where the bytes come from: one byte source per kind of storage, and one resolver.

The :class:`~fficube.sources.base.ByteSource` protocol and its capabilities are in
:mod:`~fficube.sources.base`; each kind is a module (:mod:`~fficube.sources.local`,
:mod:`~fficube.sources.fsspec`, :mod:`~fficube.sources.obstore`, the last two on
:mod:`~fficube.sources.remote`; :mod:`~fficube.sources.memory`); how storage is used and
what its failures mean is :mod:`~fficube.sources.policy`; S3's settings
:mod:`~fficube.sources.s3settings`.  :func:`open_source` turns any location into its
source: the kinds that need no fsspec filesystem are in :data:`KINDS`, every other
protocol is fsspec's (S3 through obstore where it can).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .base import ByteSource
from .fsspec import Filesystems, FsspecSource
from .local import LocalSource
from .locations import S3_PROTOCOLS, is_url, protocol_of, protocol_or_local
from .memory import PROTOCOL as MEMORY
from .memory import MemorySource
from .obstore import ObstoreSource
from .policy import IOPolicy

__all__ = ["open_source", "open_location", "Filesystems", "IOPolicy", "is_url", "protocol_of", "protocol_or_local",
           "S3_PROTOCOLS", "KINDS"]

#: The sources of kinds that need no fsspec filesystem, by protocol (None: local files),
#: made of the filesystems' policy and the requests in flight asked for.
KINDS: dict[str | None, Callable[[Filesystems, int | None], ByteSource]] = {
    None: lambda filesystems, given: LocalSource(filesystems.policy.concurrency(local=True, given=given)),
    MEMORY: lambda filesystems, given: MemorySource(filesystems.policy.concurrency(local=True, given=given)),
}


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
        Requests in flight at most (default: the filesystems' policy's, 4 for local
        files, 32 for remote ones).
    sizes
        File sizes already known (from a listing), so that they cost no request.
    etags
        ETags from the listing: every read is pinned to that version.
    output
        Read with the output's credentials (never ``anon``): for the cube an update
        replaces, which lives where the user writes.
    """
    policy = filesystems.policy
    if protocol is None or protocol in KINDS:
        return KINDS[protocol](filesystems, concurrency)
    fs = await filesystems.get(protocol, output=output)
    requests = policy.concurrency(local=False, given=concurrency)
    known = {"sizes": dict(sizes or {}), "etags": dict(etags or {}), "policy": policy}
    if protocol in S3_PROTOCOLS:  # obstore when it can stand in for s3fs (see sources/obstore.py)
        fast = await ObstoreSource.open(fs, filesystems.options_for(protocol, output=output),
                                        await filesystems.s3_settings(output=output), requests, **known)
        if fast is not None:
            return fast
    return FsspecSource(fs, requests, **known)


async def open_location(location: str, filesystems: Filesystems, concurrency: int | None = None, *,
                        output: bool = False) -> ByteSource:
    """The byte source that reads ``location`` (a local path or a URL): :func:`open_source`
    of its protocol."""
    return await open_source(protocol_or_local(location), filesystems, concurrency, output=output)
