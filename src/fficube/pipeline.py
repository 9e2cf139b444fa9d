"""The pipeline: fetch -> assemble -> write, three tasks of one ``asyncio.TaskGroup``.

:func:`execute` runs any plan into any sink.  The stages are connected by queues:

* ``free_slabs`` / ``ready``: the slab pool (bounded by the plan), fetch -> assemble;
* ``free_blocks`` / ``full_blocks``: one or two block buffers, assemble -> write
  (raw, page-aligned; each block is placed in one at its file offset's alignment).

Buffers circulate instead of being allocated per block, so what the pipeline holds is
fixed by the plan: ``plan.memory.total`` bytes at most.  A fourth task maps the block
buffers' pages in a worker thread (:func:`fficube._buffers.prefault`) while the first
block is read and assembled, so that their first touch is not paid in the pipeline.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ._aio import run_tasks
from ._buffers import ALIGN, aligned_buffer, prefault
from .assemble import Block, BlockObserver, assemble_blocks
from .fetch import Slab, fetch_slabs, new_base_pool, new_slab_pool
from .journal import Journal
from .pixelstats import STATS_THREADS, PixelStats
from .plan import CubePlan
from .sinks.base import CubeSink
from .sources.base import ByteSource
from .write import write_cube

__all__ = ["execute", "rows_to_write", "in_use"]


async def execute(
    plan: CubePlan,
    source: ByteSource,
    sink: CubeSink,
    *,
    resume: Journal | None = None,
    on_block: Callable[[int, int], None] | None = None,
    base_source: ByteSource | None = None,
    observer: BlockObserver | None = None,
    stats: PixelStats | None = None,
) -> CubePlan:
    """Run a plan: read, assemble and write the cube into ``sink``, then commit it.

    ``observer`` (the quality gate) is shown each complete block before it is written.
    ``stats`` (per-pixel statistics) are made of each block once it is written, in a
    task of their own, so that the writer goes on with the next block meanwhile; the
    block's buffer is free once both are done.  A failure of the statistics does not
    stop the build: ``stats.error`` says what it was.

    With ``resume`` (an interrupted build's journal) the sink continues where that build stopped
    and only the missing rows are read.  On an error or cancellation the sink is
    aborted: it keeps what it recorded as saved, and removes anything else.  Returns
    the plan as run (its ``row_ranges`` say which rows were written).
    """
    try:
        needed = await sink.open(resume)
        plan = replace(plan, row_ranges=rows_to_write(plan, needed))
        # Raw, page-aligned buffers: the assembler places each block in one so that its
        # bytes are aligned as in the file, which lets a local sink write it with
        # direct I/O (see fficube._buffers).
        buffers = [aligned_buffer(plan.memory.block_bytes) for _ in range(plan.memory.block_buffers)]
        free_blocks: asyncio.Queue[np.ndarray] = asyncio.Queue()
        for buffer in buffers:
            free_blocks.put_nowait(buffer)
        full_blocks: asyncio.Queue[Block | None] = asyncio.Queue(maxsize=1)
        n_blocks = len(plan.blocks)

        def done(index: int) -> None:
            # The last block is reported once the cube is whole (below): its table and
            # sealed header are bytes written too, and "n of n" should mean finished.
            if on_block is not None and index + 1 < n_blocks:
                on_block(index + 1, n_blocks)

        if on_block is not None:
            on_block(0, n_blocks)
        ready: asyncio.Queue[list[Slab]] = asyncio.Queue()
        written: asyncio.Queue[Block | None] | None = asyncio.Queue(maxsize=1) if stats is not None else None
        tasks = [
            fetch_slabs(plan, source, new_slab_pool(plan), ready, base_source, new_base_pool(plan)),
            assemble_blocks(plan, ready, free_blocks, full_blocks, observer),
            write_cube(plan, sink, full_blocks, free_blocks, done, written),
            prefault_buffers(in_use(plan, buffers)),
        ]
        if stats is not None and written is not None:
            tasks.append(measure_blocks(stats, written, free_blocks))
        await run_tasks(tasks)
        await sink.commit()
        if on_block is not None and n_blocks:
            on_block(n_blocks, n_blocks)
    except BaseException:
        await asyncio.shield(sink.abort())
        raise
    return plan


def in_use(plan: CubePlan, buffers: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The parts of the block buffers that the plan's blocks will fill.

    Blocks take the buffers in turn, each placed within its first ``ALIGN`` bytes
    (:func:`fficube._buffers.placed`).  A resumed build with one short block left
    uses a part of one buffer: mapping all of both ahead would touch memory for nothing.
    """
    blocks = plan.blocks
    largest = max((stop - start for start, stop in blocks), default=0) * plan.row_bytes
    return [buffer[: largest + ALIGN] for buffer in buffers[: len(blocks)]] if largest else []


async def prefault_buffers(buffers: Sequence[np.ndarray]) -> None:
    """Map ``buffers``' pages in a worker thread; if cancelled, stop it at its next chunk.

    Measured on this project's VM (fficube alone, with and without, in alternation,
    2 s apart, medians): 100 full-size FFIs at 1 GB to disk 3.13 -> 2.61 s wall (4
    runs each), to tmpfs 8.34 -> 7.22 s; 12,000 FFIs of 64 rows at 4 GB 18.2 -> 15.8 s
    (3 runs each); CPU time the same within the runs' spread.
    """
    stop = threading.Event()
    try:
        await asyncio.to_thread(prefault, buffers, stop)
    finally:
        stop.set()


async def measure_blocks(stats: PixelStats, written: asyncio.Queue[Block | None],
                         free_blocks: asyncio.Queue[np.ndarray]) -> None:
    """Make the pixel statistics of each written block in worker threads, then free its buffer.

    An error is kept in ``stats.error`` and the blocks still pass (the cube does not
    depend on its statistics); a cancelled build stops the thread at its next chunk.
    """
    stop = threading.Event()
    threads = STATS_THREADS
    try:
        while (item := await written.get()) is not None:
            if stats.error is None:
                # The block's rows in a few parts, one thread each: the statistics are
                # the build's heaviest computation, and the sorts release the GIL.
                rows = item.stop - item.start
                parts = [(item.start + rows * i // threads, item.start + rows * (i + 1) // threads)
                         for i in range(threads)]
                try:
                    await asyncio.gather(*(
                        asyncio.to_thread(stats.add, item.data[a - item.start:], a, b, stop)
                        for a, b in parts if b > a))
                except Exception as exc:  # kept for the result: never fatal to the cube
                    stats.error = exc
            free_blocks.put_nowait(item.buffer)
    finally:
        stop.set()


def rows_to_write(plan: CubePlan, needed: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...] | None:
    """The cube rows holding the bytes ``needed`` (byte ranges of the output), merged;
    None for all of them."""
    rows = plan.shape[0]
    ranges: list[tuple[int, int]] = []
    for first, last in needed:
        first, last = max(first, plan.data_offset), min(last, plan.data_offset + plan.data_bytes)
        if last <= first:
            continue  # headers or table only: the writer always writes those
        start, stop = plan.row_of(first), plan.row_of(last - 1) + 1
        if ranges and start <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(stop, ranges[-1][1]))
        else:
            ranges.append((start, stop))
    return None if ranges == [(0, rows)] else tuple(ranges)
