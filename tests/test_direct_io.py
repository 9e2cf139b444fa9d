"""Direct I/O of local cubes: which bytes go directly, and the cube is the same either way."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import numpy as np
import pytest
from cube_compare import assert_verifies
from helpers import budget_for_rows, cancel_after_blocks, without_build_stamps

import fficube
from fficube._buffers import ALIGN, address, aligned_buffer, placed
from fficube.sinks import local
from fficube.sinks.local import LocalSink, direct_run

SHAPE = (40, 300)  #: a row of 6 FFIs is 300 x 6 x 2 x 4 = 14,400 bytes: several pages, not a whole number


def test_direct_run_is_the_whole_pages_inside_the_write() -> None:
    # File offset 5000 from an address with the same alignment: pages from 8192 on.
    assert direct_run(5000, 20000, 1000 * ALIGN + 5000 % ALIGN, minimum=0) == (8192 - 5000, 24576 - 5000)
    # Already aligned, whole pages: all of it.
    assert direct_run(8192, 3 * ALIGN, 7 * ALIGN, minimum=0) == (0, 3 * ALIGN)


def test_no_direct_run_when_memory_and_file_disagree_or_it_is_small() -> None:
    assert direct_run(5000, 1 << 22, 1000 * ALIGN, minimum=0) == (0, 0)  # memory not aligned as the file
    assert direct_run(5000, 6000, 1000 * ALIGN + 5000 % ALIGN, minimum=0) == (0, 0)  # no whole page inside
    assert direct_run(0, 1 << 20, 0) == (0, 1 << 20)  # DIRECT_MIN (1 MiB) is enough
    assert direct_run(0, (1 << 20) - ALIGN, 0) == (0, 0)  # ... less is not
    assert direct_run(100, 0, 100, minimum=0) == (0, 0)


@pytest.mark.parametrize("offset", [0, 2880, 5760 + 14400 * 3, 4095])
def test_a_placed_block_is_aligned_as_its_file_offset(offset: int) -> None:
    buffer = aligned_buffer(10 * ALIGN)
    assert address(memoryview(buffer)) % ALIGN == 0 and len(buffer) == 11 * ALIGN
    block = placed(buffer, offset, 10 * ALIGN)
    assert len(block) == 10 * ALIGN
    assert (address(memoryview(block)) - offset) % ALIGN == 0


@pytest.fixture
def paths(sector):
    return sector(n_ffis=6, shape=SHAPE)


@pytest.fixture
def direct_writes(monkeypatch) -> list[int]:
    """Direct writes for any run of whole pages; returns the list of their sizes."""
    monkeypatch.setattr(local, "DIRECT_MIN", ALIGN)
    sizes: list[int] = []
    pwrite = LocalSink._pwrite

    def spy(self: LocalSink, fd: int, data: memoryview, offset: int) -> None:
        if fd == self._dfd and len(data):
            assert offset % ALIGN == 0 and len(data) % ALIGN == 0 and address(data) % ALIGN == 0
            sizes.append(len(data))
        pwrite(self, fd, data, offset)

    monkeypatch.setattr(LocalSink, "_pwrite", spy)
    return sizes


async def test_direct_writes_give_the_same_cube(paths, tmp_path: Path, direct_writes: list[int]) -> None:
    budget = await asyncio.to_thread(budget_for_rows, paths, 7)
    direct = tmp_path / "direct.fits"
    await fficube.build_cube(paths, direct, max_memory=budget)
    if not direct_writes:
        pytest.skip("this filesystem refuses O_DIRECT")
    data_bytes = SHAPE[0] * SHAPE[1] * 6 * 2 * 4
    # Each block but its partial pages at both ends goes directly.
    assert data_bytes - 2 * 6 * ALIGN <= sum(direct_writes) < data_bytes
    local.DIRECT_MIN = 1 << 60  # (monkeypatch restores it) no direct writes at all now
    buffered = tmp_path / "buffered.fits"
    count = len(direct_writes)
    await fficube.build_cube(paths, buffered, max_memory=budget)
    assert len(direct_writes) == count
    assert direct.read_bytes() and without_build_stamps(direct.read_bytes()) == without_build_stamps(buffered.read_bytes())
    assert_verifies(direct)


async def test_a_direct_build_resumes_to_the_same_cube(paths, tmp_path: Path, direct_writes: list[int]) -> None:
    reference = tmp_path / "ref.fits"
    await fficube.build_cube(paths, reference)
    out = tmp_path / "c.fits"
    budget = await asyncio.to_thread(budget_for_rows, paths, 4)
    await cancel_after_blocks(3, lambda progress: fficube.build_cube(paths, out, progress=progress, max_memory=budget))
    assert Path(f"{out}.partial").exists()
    await fficube.build_cube(paths, out, resume=True, max_memory=await asyncio.to_thread(budget_for_rows, paths, 6))
    assert without_build_stamps(out.read_bytes()) == without_build_stamps(reference.read_bytes())
    assert_verifies(out)


async def test_a_refused_direct_write_goes_through_the_page_cache(paths, tmp_path: Path, monkeypatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(local, "DIRECT_MIN", ALIGN)
    pwrite = os.pwrite
    refused: list[int] = []

    def picky(fd: int, data, offset: int) -> int:
        if fcntl_flags(fd) & getattr(os, "O_DIRECT", 0):
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return pwrite(fd, data, offset)

    monkeypatch.setattr(local.os, "pwrite", picky)
    reference = tmp_path / "ref.fits"
    out = tmp_path / "c.fits"
    with caplog.at_level("DEBUG", logger="fficube"):
        await fficube.build_cube(paths, out, max_memory=await asyncio.to_thread(budget_for_rows, paths, 7))
    monkeypatch.setattr(local.os, "pwrite", pwrite)
    await fficube.build_cube(paths, reference)
    assert without_build_stamps(out.read_bytes()) == without_build_stamps(reference.read_bytes())
    if hasattr(os, "O_DIRECT") and refused:
        assert len(refused) == 1  # refused once, then the sink stops trying
        assert "direct write" in caplog.text


def fcntl_flags(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL)


def test_aligned_buffer_is_writable_and_sized() -> None:
    buffer = aligned_buffer(12345)
    buffer[:] = 7
    assert buffer.dtype == np.uint8 and buffer.size == 12345 + ALIGN
