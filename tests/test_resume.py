"""Interrupted builds: what they keep, and resumed builds that equal uninterrupted ones."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from astropy.io import fits
from cube_compare import assert_verifies
from helpers import budget_for_rows, cancel_after_blocks, without_build_stamps

import fficube
from fficube.journal import Identity, Journal
from fficube.sinks.local import FileProgress
from fficube.sinks.s3 import Part, UploadProgress

SHAPE = (40, 48)


@pytest.fixture
def paths(sector):
    return sector(n_ffis=6, shape=SHAPE)


async def interrupted(paths: list[str], out: Path, after_blocks: int, **options) -> None:
    """Run a build and cancel it once ``after_blocks`` blocks are written."""
    await cancel_after_blocks(after_blocks, lambda progress: fficube.build_cube(paths, out, progress=progress, **options))


def journal_of(out: Path) -> dict:
    return json.loads(Path(f"{out}.journal").read_text())


async def test_cancelled_build_keeps_its_work_and_resumes_to_the_same_cube(paths, tmp_path: Path) -> None:
    reference = tmp_path / "ref.fits"
    await fficube.build_cube(paths, reference)
    out = tmp_path / "c.fits"
    budget = await asyncio.to_thread(budget_for_rows, paths, 4)
    await interrupted(paths, out, 3, max_memory=budget)
    assert not out.exists()
    state = journal_of(out)
    block_bytes = 4 * SHAPE[1] * 6 * 2 * 4
    with fits.open(reference) as ref:
        data_at = ref.fileinfo(1)["datLoc"]
    # Blocks are flushed and recorded in the background: up to the three written.
    saved_blocks = (state["offset"] - data_at) / block_bytes
    assert saved_blocks in (1, 2, 3), saved_blocks
    assert os.path.getsize(f"{out}.partial") >= state["offset"]

    # Not resumed by accident, nor silently thrown away.
    with pytest.raises(fficube.ResumeError, match="resume=True"):
        await fficube.build_cube(paths, out)
    assert journal_of(out) == state

    # Another budget changes the blocks, not the bytes.
    result = await fficube.build_cube(paths, out, resume=True, max_memory=await asyncio.to_thread(budget_for_rows, paths, 7))
    rows = 4 * int(saved_blocks)
    assert result.resumed_rows == rows and f"resumed with {rows} of 40 rows" in result.summary()
    full = await fficube.build_cube(paths, tmp_path / "again.fits")
    assert full.bytes_read - result.bytes_read == rows * SHAPE[1] * 4 * 2 * 6  # the saved rows are not read again
    assert without_build_stamps(out.read_bytes()) == without_build_stamps(reference.read_bytes())
    assert not Path(f"{out}.journal").exists() and not Path(f"{out}.partial").exists()
    with fits.open(out) as cube:  # the first run's time, not the second's
        first = dt.datetime.fromisoformat(state["now"])
        assert cube[1].header.comments["CHECKSUM"].endswith(first.strftime("%Y-%m-%dT%H:%M:%S"))
    assert_verifies(out)


async def test_bytes_written_after_the_last_record_are_dropped(paths, tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    budget = await asyncio.to_thread(budget_for_rows, paths, 5)
    await interrupted(paths, out, 2, max_memory=budget)
    await fficube.build_cube(paths, tmp_path / "ref.fits")
    reference = (tmp_path / "ref.fits").read_bytes()
    # Blocks written, the journal not updated: more bytes than the whole cube, so that
    # they are not merely overwritten by the resumed build.
    with open(f"{out}.partial", "ab") as partial:
        partial.write(os.urandom(len(reference)))
    await fficube.build_cube(paths, out, resume=True)
    assert out.stat().st_size == len(reference)
    assert without_build_stamps(out.read_bytes()) == without_build_stamps(reference)


async def test_a_changed_input_is_refused_unless_restart(paths, tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    budget = await asyncio.to_thread(budget_for_rows, paths, 4)
    await interrupted(paths, out, 2, max_memory=budget)
    with pytest.raises(fficube.ResumeError, match="headers would differ"):
        await fficube.build_cube(paths, out, resume=True, sector=1)
    with pytest.raises(fficube.ResumeError, match="no longer given"):
        await fficube.build_cube(paths[1:], out, resume=True)
    changed = sorted(paths)[2]
    os.utime(changed, ns=(1, 1))  # same bytes, another mtime: fficube cannot know it is the same
    with pytest.raises(fficube.ResumeError, match=r"1 input\(s\) changed.*" + os.path.basename(changed)):
        await fficube.build_cube(paths, out, resume=True)
    assert Path(f"{out}.partial").exists()  # a refused resume keeps the work
    result = await fficube.build_cube(paths, out, restart=True, sector=1)
    assert result.resumed_rows == 0
    with fits.open(out) as cube:
        assert cube[0].header["SECTOR"] == 1
    assert_verifies(out)


async def test_resume_without_an_interrupted_build_just_builds(paths, tmp_path: Path) -> None:
    result = await fficube.build_cube(paths, tmp_path / "c.fits", resume=True)
    assert result.resumed_rows == 0 and (tmp_path / "c.fits").exists()


async def test_failure_before_any_block_leaves_nothing(paths, tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    await interrupted(paths, out, 0, max_memory=await asyncio.to_thread(budget_for_rows, paths, 4))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c.fits")) == []


async def test_missing_partial_is_refused(paths, tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    await interrupted(paths, out, 2, max_memory=await asyncio.to_thread(budget_for_rows, paths, 4))
    os.unlink(f"{out}.partial")
    with pytest.raises(fficube.ResumeError, match="missing or shorter"):
        await fficube.build_cube(paths, out, resume=True)
    await fficube.build_cube(paths, out, restart=True)
    assert_verifies(out)


async def test_interrupted_update_resumes(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=8, shape=SHAPE)
    old, new = sorted(paths)[::2], sorted(paths)[1::2]
    cube = tmp_path / "cube.fits"
    await fficube.build_cube(old, cube)
    before = cube.read_bytes()
    budget = await asyncio.to_thread(budget_for_rows, paths, 3)
    await cancel_after_blocks(2, lambda progress: fficube.update_cube(cube, new, max_memory=budget, progress=progress))
    assert cube.read_bytes() == before  # untouched until the update completes
    result = await fficube.update_cube(cube, new, resume=True)
    assert 0 < result.resumed_rows < SHAPE[0]
    await fficube.build_cube(paths, tmp_path / "all.fits")
    with fits.open(cube) as a, fits.open(tmp_path / "all.fits") as b:
        assert a[1].data.tobytes() == b[1].data.tobytes()
    assert_verifies(cube)


async def test_partial_file_and_journal_are_never_world_writable(paths, tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    old = os.umask(0)  # the most permissive umask a user can have
    try:
        await interrupted(paths, out, 2, max_memory=await asyncio.to_thread(budget_for_rows, paths, 4))
    finally:
        os.umask(old)
    for path in (f"{out}.partial", f"{out}.journal"):
        mode = os.stat(path).st_mode & 0o777
        assert mode == 0o664, (path, oct(mode))


IDENTITY = Identity(product="spoc", shape=(4, 5, 2, 2), files=(("/a/x.fits", 10, "mtime:1"),), base=None,
                    headers="f" * 64)


@pytest.mark.parametrize(("fields", "reader"), [
    ({"progress": FileProgress(5760, 12345)}, FileProgress.from_json),  # a local build
    ({"progress": UploadProgress("u-1", 5 * 2**20, {2: Part(etag='"e2"', size=5 * 2**20, datasum=7)})},
     UploadProgress.from_json),  # S3
    ({"progress": FileProgress(10), "shard": 3, "done": True}, FileProgress.from_json),  # a worker of a sharded build
])
def test_a_journal_reads_back_as_it_was_written(fields: dict, reader) -> None:
    """Journals are encoded with their identity cached once per build: the text is still
    the JSON of ``to_json`` and decodes to the same journal."""
    journal = Journal(IDENTITY, dt.datetime(2026, 12, 2, 6, 0), **fields)
    raw = journal.encode()
    assert json.loads(raw) == journal.to_json()
    assert Journal.decode(raw, "journal", reader) == journal
    # More progress, the same identity (its cached text).
    progress = journal.progress
    if isinstance(progress, UploadProgress):
        more = replace(progress, parts={**progress.parts, 3: Part(etag='"e3"', size=1, datasum=1)})
    else:
        assert isinstance(progress, FileProgress)
        more = replace(progress, offset=progress.offset + 2880)
    again = journal.advanced(progress=more)
    assert Journal.decode(again.encode(), "journal", reader) == again


IDENTITY_JSON = (' "identity": {\n "product": "spoc",\n "shape": [\n  4,\n  5,\n  2,\n  2\n ],\n "files": [\n  [\n'
                 '   "/a/x.fits",\n   10,\n   "mtime:1"\n  ]\n ],\n "base": null,\n "headers": "' + "f" * 64 + '"\n},\n')


@pytest.mark.parametrize(("text", "reader", "expected"), [
    (' "now": "2026-12-02T06:00:00",\n "offset": 5760,\n "datasum": 12345\n}', FileProgress.from_json,
     Journal(IDENTITY, dt.datetime(2026, 12, 2, 6), FileProgress(5760, 12345))),
    (' "now": "2026-12-02T06:00:00",\n "upload_id": "u-1",\n "part_size": 5242880,\n "parts": {\n  "2": {\n'
     '   "ETag": "\\"e2\\"",\n   "datasum": 7,\n   "size": 5242880\n  }\n }\n}', UploadProgress.from_json,
     Journal(IDENTITY, dt.datetime(2026, 12, 2, 6), UploadProgress("u-1", 5 * 2**20, {2: Part('"e2"', 7, 5 * 2**20)}))),
    # An upload's journal written before the upload started: it recorded a local build's fields.
    (' "now": "2026-12-02T06:00:00",\n "offset": 0,\n "datasum": 0\n}', UploadProgress.from_json,
     Journal(IDENTITY, dt.datetime(2026, 12, 2, 6), UploadProgress())),
    (' "now": "2026-12-02T06:00:00",\n "offset": 10,\n "datasum": 0,\n "shard": 3,\n "done": true\n}',
     FileProgress.from_json, Journal(IDENTITY, dt.datetime(2026, 12, 2, 6), FileProgress(10), shard=3, done=True)),
])
def test_journals_written_before_kinds_owned_their_progress_still_resume(text: str, reader, expected) -> None:
    """The journal text of an interrupted build, as the version before this one wrote it."""
    raw = ('{\n "format": "fficube-journal/1",\n' + IDENTITY_JSON + text).encode()
    assert Journal.decode(raw, "journal", reader) == expected
    if expected.progress != UploadProgress():  # and such a journal is written now as it was then
        assert expected.encode() == raw
