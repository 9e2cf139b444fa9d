"""Block buffers mapped ahead of the pipeline: pages become resident, bytes never change."""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import without_build_stamps

import fficube
from fficube import _buffers, pipeline
from fficube._buffers import ALIGN, prefault
from fficube.synthetic import SectorSpec, make_sector


def _kernel_has_populate_write() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    # Releases read like "6.18.44-fc-v857" or "6.0-rc1": the leading numbers only.
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return found is not None and (int(found[1]), int(found[2])) >= (5, 14)


needs_populate = pytest.mark.skipif(not _kernel_has_populate_write(), reason="MADV_POPULATE_WRITE: Linux 5.14+")


def fresh_buffer(nbytes: int) -> np.ndarray:
    """Never-touched memory: an anonymous mapping of its own (malloc may reuse pages)."""
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.uint8)


def resident_pages(buffer: np.ndarray) -> np.ndarray:
    """Whether each whole page of ``buffer`` is mapped, from ``mincore(2)``."""
    start = -(-buffer.ctypes.data // ALIGN) * ALIGN
    end = (buffer.ctypes.data + buffer.nbytes) // ALIGN * ALIGN
    vec = (ctypes.c_ubyte * ((end - start) // ALIGN))()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert libc.mincore(start, end - start, vec) == 0, os.strerror(ctypes.get_errno())
    return np.frombuffer(vec, dtype=np.uint8) & 1 == 1


@needs_populate
def test_prefault_maps_every_page_and_keeps_the_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_buffers, "PREFAULT_CHUNK", 64 * ALIGN)  # several chunks per buffer
    buffers = [fresh_buffer(8 * 2**20) for _ in range(2)]
    assert not resident_pages(buffers[1]).any()
    pattern = np.arange(3 * ALIGN, dtype=np.uint8)
    for buffer in buffers:
        buffer[ALIGN : 4 * ALIGN] = pattern  # pages already written by the assembler, say
    done = prefault(buffers)
    assert done == 2 * 8 * 2**20
    for buffer in buffers:
        assert resident_pages(buffer).all()
        assert np.array_equal(buffer[ALIGN : 4 * ALIGN], pattern)


@needs_populate
def test_prefault_stops_when_asked() -> None:
    buffer = fresh_buffer(4 * 2**20)
    stop = threading.Event()
    stop.set()
    assert prefault([buffer], stop) == 0
    assert not resident_pages(buffer).any()


def test_cancelling_the_prefault_task_stops_its_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    started, stopped = threading.Event(), threading.Event()

    def waits_for_stop(buffers: list[np.ndarray], stop: threading.Event) -> int:
        started.set()
        if stop.wait(30):
            stopped.set()
        return 0

    monkeypatch.setattr(pipeline, "prefault", waits_for_stop)

    async def main() -> None:
        task = asyncio.create_task(pipeline.prefault_buffers([]))
        assert await asyncio.to_thread(started.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(stopped.wait, 30)

    asyncio.run(main())


def test_a_cube_is_the_same_whether_its_buffers_were_prefaulted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    paths = make_sector(tmp_path / "ffis", SectorSpec(n_ffis=6, shape=(40, 300)))
    # One page per call: the mapping runs alongside the assembly for as long as it can.
    monkeypatch.setattr(_buffers, "PREFAULT_CHUNK", ALIGN)
    fficube.make_cube(paths, tmp_path / "with.fits", max_memory="200kB")
    monkeypatch.setattr(pipeline, "prefault", lambda buffers, stop=None: 0)
    fficube.make_cube(paths, tmp_path / "without.fits", max_memory="200kB")
    with_, without = ((tmp_path / name).read_bytes() for name in ("with.fits", "without.fits"))
    assert len(with_) > 6 * 40 * 300 * 2 * 4 and without_build_stamps(with_) == without_build_stamps(without)
