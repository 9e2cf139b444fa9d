"""What an interrupted build leaves behind so that it can be resumed.

A build writes a small JSON *journal* beside its output: ``<output>.journal`` (a
local file next to ``<output>.partial``, or an S3 object next to the output).  It
records the plan's identity, the build time (so that a resumed build writes the
same headers, time stamps included) and how far the output is durably written:

* locally, the number of bytes of ``<output>.partial`` that were written and
  flushed to disk before the journal was updated, with their data checksum;
* on S3, the multipart upload's id and, for each uploaded part, its ETag and data
  checksum.  On resume the parts are listed from S3; only parts that S3 has, with
  the recorded ETag, are trusted.

The identity is what decides the output's bytes: the inputs (path, size, mtime or
ETag), the encoded headers and table, the cube's shape.  Memory budget and
concurrency may change between runs; they do not change the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .redact import redact

if TYPE_CHECKING:
    from .plan import CubePlan

__all__ = [
    "journal_path", "Version", "local_version", "remote_version", "plan_identity", "identity_changes",
    "LocalJournal", "FORMAT",
]

FORMAT = "fficube-journal/1"
#: Mode of the partial file and the journal before the umask: the user's default
#: permissions, but never writable by others, whatever the umask.
FILE_MODE = 0o664


def journal_path(output: str) -> str:
    """Where the journal of a build of ``output`` lives (a path or a URL)."""
    return output + ".journal"


@dataclass(frozen=True, slots=True)
class Version:
    """What identifies one version of a file: size, and mtime (local) or ETag (S3)."""

    size: int
    tag: str

    def as_list(self) -> list[Any]:
        return [self.size, self.tag]


def local_version(path: str) -> Version:
    stat = os.stat(path)
    return Version(stat.st_size, f"mtime:{stat.st_mtime_ns}")


def remote_version(info: Mapping[str, Any]) -> Version:
    """A version from an fsspec ``info``/listing entry (ETag for S3, else a date)."""
    tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("last_modified") or ""
    return Version(int(info.get("size", 0)), f"etag:{str(tag).strip(chr(34))}" if tag else "")


def plan_identity(plan: CubePlan, versions: Mapping[str, Version]) -> dict[str, Any]:
    """The plan's identity: two plans with equal identities write the same bytes."""
    pieces = hashlib.sha256(plan.primary_header + plan.cube_header + plan.info_table).hexdigest()
    # Paths are redacted: a presigned URL's signature must not be written down.
    files = [[redact(f.path), *versions[f.path].as_list()] for f in plan.files]
    base = [redact(plan.base.path), *versions[plan.base.path].as_list()] if plan.base else None
    return {"product": plan.product.name, "shape": list(plan.shape), "files": files, "base": base, "headers": pieces}


def _files_changed(old: Sequence[Sequence[Any]], new: Sequence[Sequence[Any]]) -> list[str]:
    before = {f[0]: f[1:] for f in old}
    after = {f[0]: f[1:] for f in new}
    notes = []
    gone = [p for p in before if p not in after]
    added = [p for p in after if p not in before]
    changed = [p for p in after if p in before and list(before[p]) != list(after[p])]
    for label, paths in (("no longer given", gone), ("new", added), ("changed since", changed)):
        if paths:
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            notes.append(f"{len(paths)} input(s) {label}{' the first run' if label == 'changed since' else ''}: {shown}")
    return notes


def identity_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Why two identities differ, for people (empty when they are equal)."""
    notes: list[str] = []
    if old.get("product") != new.get("product"):
        notes.append(f"product {old.get('product')} -> {new.get('product')}")
    if old.get("shape") != new.get("shape"):
        notes.append(f"cube shape {old.get('shape')} -> {new.get('shape')}")
    notes += _files_changed(old.get("files", []), new.get("files", []))
    if old.get("base") != new.get("base"):
        notes.append("the cube being updated changed")
    if not notes and old.get("headers") != new.get("headers"):
        notes.append("the cube's headers would differ (another --sector, or input headers changed)")
    if not notes and dict(old) != dict(new):
        notes.append("the build's options differ")
    return notes


def encode(state: Mapping[str, Any]) -> bytes:
    return json.dumps({"format": FORMAT, **state}, indent=1).encode()


def decode(raw: bytes, where: str) -> dict[str, Any]:
    """A journal's state, or ValueError naming ``where`` when it is not one of ours."""
    try:
        state = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: not an fficube journal ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{where}: not an fficube journal of format {FORMAT}")
    return state


class LocalJournal:
    """A local journal, replaced atomically (write, flush, rename, sync the directory)."""

    def __init__(self, output: str) -> None:
        self.path = journal_path(output)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> dict[str, Any]:
        with open(self.path, "rb") as f:
            return decode(f.read(), self.path)

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the journal; on return it is on disk (blocking: call from a thread)."""
        temp = self.path + ".tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.write(fd, encode(state))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path)
        directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def remove(self) -> None:
        for path in (self.path, self.path + ".tmp"):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                pass
