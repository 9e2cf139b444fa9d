"""What an interrupted build leaves behind so that it can be resumed: the one home of its schema.

A build writes a small JSON *journal* beside its output: ``<output>.journal`` (a
local file next to ``<output>.partial``, or an S3 object next to the output).  A
:class:`Journal` records the plan's :class:`Identity`, the build time (so that a
resumed build writes the same headers, time stamps included) and how far the output
is durably written.  That progress record belongs to the output kind that writes it
(a :class:`Progress`, defined and read back in the kind's module in
:mod:`fficube.sinks`: the bytes of ``<output>.partial`` flushed to disk and their data
checksum for a local file; the multipart upload's id and each part's ETag and data
checksum for S3); the journal holds it without looking inside, and its fields sit at
the top level of the journal's JSON, beside the common ones.

A cube built by several workers (:mod:`fficube.sectors.shard`) has one journal per worker
and one :class:`SharedPlan` that all of them follow; the one worker that finishes it
holds a :class:`FinishClaim`.  A staged build (:mod:`fficube.stage`) records each
fetched input's version in a :class:`StagedFile` beside it.

The identity is what decides the output's bytes: the inputs (path, size, mtime or
ETag), the encoded headers and table, the cube's shape.  Memory budget and
concurrency may change between runs; they do not change the bytes.

Every record is a frozen dataclass with ``to_json``/``from_json``; nothing else in
fficube reads or writes the JSON's keys.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .redact import redact
from .versions import Version

if TYPE_CHECKING:
    from .plan import CubePlan

__all__ = [
    "FORMAT", "SHARED_FORMAT", "CLAIM_FORMAT", "STAGE_FORMAT", "journal_path", "Identity", "Progress",
    "ProgressReader", "progress_of", "Journal", "SharedPlan", "FinishClaim", "StagedFile",
]

FORMAT = "fficube-journal/1"
SHARED_FORMAT = "fficube-shards/1"
CLAIM_FORMAT = "fficube-finish/1"
STAGE_FORMAT = "fficube-stage/1"

T = TypeVar("T")
FileEntry = tuple[str, int, str]  #: (path, size, mtime or ETag tag)


def journal_path(output: str) -> str:
    """Where the journal of a build of ``output`` lives (a path or a URL)."""
    return output + ".journal"


def _entry(path: str, version: Version) -> FileEntry:
    # Paths are redacted: a presigned URL's signature must not be written down.
    return (redact(path), version.size, version.tag)


def _entries_changed(old: Sequence[FileEntry], new: Sequence[FileEntry]) -> list[str]:
    before = {f[0]: f[1:] for f in old}
    after = {f[0]: f[1:] for f in new}
    notes = []
    gone = [p for p in before if p not in after]
    added = [p for p in after if p not in before]
    changed = [p for p in after if p in before and before[p] != after[p]]
    for label, paths in (("no longer given", gone), ("new", added), ("changed since the first run", changed)):
        if paths:
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            notes.append(f"{len(paths)} input(s) {label}: {shown}")
    return notes


@dataclass(frozen=True, slots=True)
class Identity:
    """The plan's identity: two plans with equal identities write the same bytes."""

    product: str
    shape: tuple[int, int, int, int]
    files: tuple[FileEntry, ...]  #: the FFIs read, in time order
    base: FileEntry | None  #: the cube an update copies from
    headers: str  #: SHA-256 of the encoded primary header, cube header and info table

    @classmethod
    def of(cls, plan: CubePlan, versions: Mapping[str, Version], origins: Mapping[str, str] | None = None) -> Identity:
        """The identity of ``plan``, whose files have the given versions.

        ``origins`` maps local copies of remote files (a staged build's inputs) to the
        URLs they were fetched from: the URL is recorded, so a build is the same build
        whether it read its inputs directly or from a stage, on this machine or another.
        """
        pieces = hashlib.sha256(plan.primary_header + plan.cube_header + plan.info_table).hexdigest()
        origins = origins or {}
        return cls(
            product=plan.product.name,
            shape=plan.shape,
            files=tuple(_entry(origins.get(f.path, f.path), versions[f.path]) for f in plan.files),
            base=_entry(plan.base.path, versions[plan.base.path]) if plan.base else None,
            headers=pieces,
        )

    def changes(self, new: Identity) -> list[str]:
        """Why ``new`` differs from this identity, for people (empty when they are equal)."""
        notes: list[str] = []
        if self.product != new.product:
            notes.append(f"product {self.product} -> {new.product}")
        if self.shape != new.shape:
            notes.append(f"cube shape {list(self.shape)} -> {list(new.shape)}")
        notes += _entries_changed(self.files, new.files)
        if self.base != new.base:
            notes.append("the cube being updated changed")
        if not notes and self.headers != new.headers:
            notes.append("the cube's headers would differ (another --sector, or input headers changed)")
        return notes

    def to_json(self) -> dict[str, Any]:
        return {
            "product": self.product, "shape": list(self.shape), "files": [list(f) for f in self.files],
            "base": list(self.base) if self.base else None, "headers": self.headers,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Identity:
        rows, cols, n, layers = (int(x) for x in data["shape"])
        base = data.get("base")
        return cls(
            product=str(data["product"]),
            shape=(rows, cols, n, layers),
            files=tuple((str(p), int(s), str(t)) for p, s, t in data["files"]),
            base=(str(base[0]), int(base[1]), str(base[2])) if base else None,
            headers=str(data["headers"]),
        )


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@functools.lru_cache(maxsize=4)
def _identity_text(identity: Identity) -> str:
    """``identity`` as JSON (one build's journals all carry the same one)."""
    return json.dumps(identity.to_json(), indent=1)


class Progress(Protocol):
    """How far an output kind's sink got: its part of a journal, written as JSON fields."""

    def to_json(self) -> dict[str, Any]:
        """The record's fields, set beside the journal's own (so none may be named like them)."""
        ...


#: Reads a kind's :class:`Progress` from a journal's JSON (all of it: it picks its fields).
ProgressReader = Callable[[Mapping[str, Any]], Progress]
P = TypeVar("P", bound=Progress)


def progress_of(journal: Journal | None, kind: type[P]) -> P:
    """The progress that ``journal`` records, a ``kind``; ``kind()`` (none yet) without one.

    Raises
    ------
    TypeError
        If the journal holds another kind's progress (a sink given another output's journal).
    """
    progress = journal.progress if journal is not None else None
    if progress is None:
        return kind()
    if not isinstance(progress, kind):
        raise TypeError(f"a journal of {type(progress).__name__}, not {kind.__name__}")
    return progress


@dataclass(frozen=True, slots=True)
class Journal:
    """The durable progress of one build (or of one worker of a sharded build)."""

    identity: Identity
    now: dt.datetime  #: the build time written into the headers
    progress: Progress | None = None  #: the output kind's record; None until the sink records some
    shard: int | None = None  #: the worker of a sharded build that keeps this journal
    done: bool = False  #: a shard's window is all written

    def advanced(self, **changes: Any) -> Journal:
        """This journal with more progress recorded."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "identity": self.identity.to_json(), **self._progress()}

    def _progress(self) -> dict[str, Any]:
        """Everything but the format and the identity."""
        data: dict[str, Any] = {"now": self.now.isoformat()}
        if self.progress is not None:
            data.update(self.progress.to_json())
        if self.shard is not None:
            data.update(shard=self.shard, done=self.done)
        return data

    def encode(self) -> bytes:
        """The journal as JSON (what :meth:`to_json` gives).

        The identity is encoded once per build (:func:`_identity_text`): a journal is
        saved after every block, and at 12,000 FFIs encoding their entries each time
        took 5% of a build's busy thread time (py-spy).
        """
        progress = json.dumps(self._progress(), indent=1)  # '{\n "now": ...}'
        head = '{\n "format": ' + json.dumps(FORMAT) + ',\n "identity": ' + _identity_text(self.identity) + ","
        return (head + progress[1:]).encode()

    @classmethod
    def decode(cls, raw: bytes, where: str, progress: ProgressReader) -> Journal:
        """The journal in ``raw``, its progress read by ``progress`` (the output kind's
        reader); ValueError naming ``where`` if it is not one of ours."""
        return _decode(raw, where, FORMAT, lambda data: cls.from_json(data, progress))

    @classmethod
    def from_json(cls, data: Mapping[str, Any], progress: ProgressReader) -> Journal:
        return cls(
            identity=Identity.from_json(data["identity"]),
            now=_time(str(data["now"])),
            progress=progress(data),
            shard=int(data["shard"]) if data.get("shard") is not None else None,
            done=bool(data.get("done", False)),
        )


@dataclass(frozen=True, slots=True)
class SharedPlan:
    """What the workers of one sharded build agree on (``<output>.shards/plan.json``).

    The cube's bytes go into one shared target: an S3 multipart upload
    (``upload_id``), or one pre-sized file on a shared filesystem (``partial``, its
    name in the shards' directory).
    """

    now: dt.datetime
    shards: int
    part_size: int  #: windows are whole multiples of this (S3: the part size)
    total_bytes: int
    header_offset: int  #: where the cube header starts (after the primary header)
    cube_header: bytes  #: unsealed: sealed with the sum of all windows at the end
    span: tuple[int, int]  #: the cube data's bytes, whose sum is DATASUM
    identity: Identity
    upload_id: str | None = None  #: S3: the shared multipart upload
    partial: str | None = None  #: a file: the shared partial file's name

    def to_json(self) -> dict[str, Any]:
        data = {
            "format": SHARED_FORMAT, "now": self.now.isoformat(),
            "shards": self.shards, "part_size": self.part_size, "total_bytes": self.total_bytes,
            "header_offset": self.header_offset, "cube_header": self.cube_header.decode("ascii"),
            "span": list(self.span), "identity": self.identity.to_json(),
        }
        data.update({k: v for k, v in (("upload_id", self.upload_id), ("partial", self.partial)) if v is not None})
        return data

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    @classmethod
    def decode(cls, raw: bytes, where: str) -> SharedPlan:
        """The shared plan in ``raw``; ValueError naming ``where`` if it is not one of ours."""
        return _decode(raw, where, SHARED_FORMAT, cls.from_json)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SharedPlan:
        start, stop = (int(x) for x in data["span"])
        return cls(
            now=_time(str(data["now"])), shards=int(data["shards"]),
            part_size=int(data["part_size"]), total_bytes=int(data["total_bytes"]),
            header_offset=int(data["header_offset"]), cube_header=str(data["cube_header"]).encode("ascii"),
            span=(start, stop), identity=Identity.from_json(data["identity"]),
            upload_id=str(data["upload_id"]) if data.get("upload_id") else None,
            partial=str(data["partial"]) if data.get("partial") else None,
        )


@dataclass(frozen=True, slots=True)
class FinishClaim:
    """The one worker finishing a sharded cube (``<output>.shards/finishing.N``).

    Whoever creates claim ``N`` first (a create that fails if it exists) finishes; the
    others wait for the cube.  A claim older than the lease is taken to be from a
    finisher that died: the next worker takes over by creating claim ``N + 1``.
    """

    by: str  #: "shard K" or "finish"
    host: str
    pid: int
    at: dt.datetime  #: when the claim was made (the claimant's clock, UTC)

    def age(self, now: dt.datetime | None = None) -> float:
        """Seconds since the claim was made."""
        return ((now or dt.datetime.now(dt.UTC)) - self.at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {"format": CLAIM_FORMAT, "by": self.by, "host": self.host, "pid": self.pid, "at": self.at.isoformat()}

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    @classmethod
    def decode(cls, raw: bytes, where: str) -> FinishClaim:
        return _decode(raw, where, CLAIM_FORMAT, cls.from_json)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FinishClaim:
        return cls(by=str(data["by"]), host=str(data["host"]), pid=int(data["pid"]), at=_time(str(data["at"])))


@dataclass(frozen=True, slots=True)
class StagedFile:
    """A remote input fetched whole into a stage directory, recorded once it is all there."""

    url: str  #: where it came from (masked)
    size: int
    tag: str  #: the version's tag (``etag:...``) the bytes were fetched at

    @classmethod
    def of(cls, url: str, version: Version) -> StagedFile:
        return cls(redact(url), version.size, version.tag)

    def matches(self, url: str, version: Version) -> bool:
        """Whether this record is of ``url`` at ``version``."""
        return self == StagedFile.of(url, version)

    def to_json(self) -> dict[str, Any]:
        return {"format": STAGE_FORMAT, "url": self.url, "size": self.size, "tag": self.tag}

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    @classmethod
    def decode(cls, raw: bytes, where: str) -> StagedFile:
        return _decode(raw, where, STAGE_FORMAT, cls.from_json)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StagedFile:
        return cls(url=str(data["url"]), size=int(data["size"]), tag=str(data["tag"]))


def _decode(raw: bytes, where: str, fmt: str, build: Callable[[dict[str, Any]], T]) -> T:
    """``build`` of the JSON in ``raw``, or ValueError naming ``where``."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: not an fficube journal ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{where}: not an fficube journal of format {fmt}")
    try:
        return build(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: a damaged fficube journal ({type(exc).__name__}: {exc})") from exc
