"""What identifies one version of a file (size, and mtime or ETag), for journals and staging.

A resumed build, a staged copy and a shard's shared plan each compare the
:class:`Version` of a file now with the one recorded before.  The record lives here,
below :mod:`fficube.inputs` (which learns versions from storage) and
:mod:`fficube.journal` (which records them), so that neither imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Version", "local_version", "remote_version"]


@dataclass(frozen=True, slots=True)
class Version:
    """What identifies one version of a file: size, and mtime (local) or ETag (S3)."""

    size: int
    tag: str

    def as_list(self) -> list[Any]:
        """``[size, tag]``, as journals record it."""
        return [self.size, self.tag]


def local_version(path: str) -> Version:
    """A local file's size and modification time (ns)."""
    stat = os.stat(path)
    return Version(stat.st_size, f"mtime:{stat.st_mtime_ns}")


def remote_version(info: Mapping[str, Any]) -> Version:
    """A version from an fsspec ``info``/listing entry (ETag for S3, else a date)."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return Version(int(info.get("size", 0)), f"etag:{str(etag).strip(chr(34))}")
    modified = info.get("LastModified") or info.get("last_modified")
    return Version(int(info.get("size", 0)), f"modified:{modified}" if modified else "")
