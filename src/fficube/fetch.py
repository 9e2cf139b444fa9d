"""Stage 3: read the rows of each block from every FFI, ahead of assembly.

For a block of rows ``start:stop`` the bytes of those rows are contiguous in each image
layer of each FFI, so one FFI costs one request per layer per block, and over a whole
build every data byte is read once.  Reads fill *slabs*, buffers taken from a fixed
pool: the pool's size is what bounds the memory held by reads in flight and by slabs
waiting for the assembler, however many FFIs there are.

A slab holds each layer's rows at a fixed stride of ``plan.block_rows`` rows, whatever
the rows of its block.  When FFIs are placed in groups (raw float32 input), the pool's
buffers are *arenas* of one group each, ``(group, layers, block_rows, cols)``: the FFIs
of a group are read straight into consecutive slots, and the assembler transposes the
arena into the block without first gathering the slabs.

The reads of a group are one batch (:func:`fficube.sources.base.read_batch`: for local
files one job of the reader pool) and the group goes to the assembler as one item:
with thousands of FFIs a block means tens of thousands of reads, and a task, a
thread hop and a queue item per read cost more CPU than the reads themselves
(measured, 2,000 FFIs of 64 rows: 536,000 ``futex`` calls for 16,000 reads).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .plan import CubePlan
from .sources.base import ByteSource, ReadRequest, read_batch

__all__ = ["Slab", "Arena", "BASE", "new_slab_pool", "new_base_pool", "fetch_slabs", "read_spans", "Span"]

#: ``Slab.ffi`` of a slab holding the base cube's rows (an update's old cube).
BASE = -1
#: A pool of free buffers: of :class:`Slab`, or of :class:`Arena` when FFIs are placed
#: in groups (a queue's type cannot say "one or the other" more precisely).
Pool = asyncio.Queue[Any]


@dataclass(slots=True, eq=False)
class Slab:
    """One FFI's rows of one block, every layer, as the bytes in the file
    (or, with ``ffi == BASE``, the old cube's rows of the block)."""

    buffer: np.ndarray  #: uint8, large enough for the biggest block
    home: Pool | None  #: the pool it returns to (None: it goes back with its arena)
    block: int = -1
    ffi: int = -1
    rows: int = 0
    arena: Arena | None = None  #: the group buffer it is a slot of, if any
    view: memoryview = field(init=False)  #: ``buffer``'s bytes, made once (reads slice it)

    def __post_init__(self) -> None:
        self.view = self.buffer.data


@dataclass(slots=True, eq=False)
class Arena:
    """One group's slabs in one buffer: ``data[j]`` is slot ``j``'s slab."""

    data: np.ndarray  #: uint32, (group, layers, block_rows, cols)
    slabs: list[Slab]
    home: Pool  #: the pool of arenas it returns to


#: Where one layer of an FFI is read from and put: (byte offset of the layer's data in
#: the file, bytes per row, byte offset of the layer in a slab).
Span = tuple[int, int, int]


def read_spans(plan: CubePlan) -> list[tuple[str, tuple[Span, ...]]]:
    """Each FFI's path and the :data:`Span` of each of its layers.

    Computed once per build: the reads of a block are then a few additions each (a
    block of 12,000 FFIs is 24,000 reads, built on the event loop's thread: 0.21 us
    apiece, against 0.56 us through the layouts' methods).
    """
    spans = []
    for ffi in plan.files:
        layers, at = [], 0
        for layout in ffi.layers:
            row_bytes = layout.cols * layout.itemsize
            layers.append((layout.offset, row_bytes, at))
            at += plan.block_rows * row_bytes
        spans.append((ffi.path, tuple(layers)))
    return spans


def _pool(count: int, nbytes: int) -> asyncio.Queue[Slab]:
    pool: asyncio.Queue[Slab] = asyncio.Queue()
    for _ in range(count):
        pool.put_nowait(Slab(np.empty(nbytes, dtype=np.uint8), pool))
    return pool


def new_slab_pool(plan: CubePlan) -> Pool:
    """A queue holding the plan's slab buffers, all free: slabs, or arenas of ``group`` slabs."""
    group = plan.memory.group
    if group == 1:
        return _pool(plan.memory.slabs, plan.memory.slab_bytes)
    pool: asyncio.Queue[Arena] = asyncio.Queue()
    layers, cols = plan.shape[3], plan.shape[1]
    for _ in range(plan.memory.slabs // group):
        data = np.empty((group, layers, plan.block_rows, cols), dtype=np.uint32)
        slabs = [Slab(data[j].reshape(-1).view(np.uint8), None) for j in range(group)]
        arena = Arena(data, slabs, pool)
        for slab in slabs:
            slab.arena = arena
        pool.put_nowait(arena)
    return pool


def new_base_pool(plan: CubePlan) -> asyncio.Queue[Slab]:
    """One buffer for the old cube's rows of a block (none without a base cube)."""
    return _pool(1 if plan.base else 0, plan.memory.base_bytes)


async def fetch_slabs(
    plan: CubePlan,
    source: ByteSource,
    free: Pool,
    ready: asyncio.Queue[list[Slab]],
    base_source: ByteSource | None = None,
    base_free: asyncio.Queue[Slab] | None = None,
) -> None:
    """Read every block's rows of every FFI, in block order, into slabs put on ``ready``
    (a list of slabs per item: a group's, read as one batch, or one slab).

    All reads of a block are started before any read of the next block, so the
    assembler always gets the slabs of its current block: slabs of the next block
    that arrive early wait, and the pool cannot run dry while a block is incomplete.
    """
    spans = read_spans(plan)

    async def read(slabs: list[Slab], start: int, stop: int) -> None:
        rows = stop - start
        requests: list[ReadRequest] = []
        for slab in slabs:
            path, layers = spans[slab.ffi]
            view = slab.view
            requests += [(path, offset + start * row_bytes, view[at : at + rows * row_bytes])
                         for offset, row_bytes, at in layers]
        await read_batch(source, requests)
        ready.put_nowait(slabs)

    async def read_base(slab: Slab, start: int, stop: int) -> None:
        assert plan.base is not None and base_source is not None
        first, last = plan.base.row_range(start, stop)
        await base_source.readinto(plan.base.path, first, slab.buffer.data[: last - first])
        ready.put_nowait([slab])

    n_files, group = len(plan.files), plan.memory.group
    async with asyncio.TaskGroup() as tg:
        for block, (start, stop) in enumerate(plan.blocks):
            if plan.base is not None:
                assert base_free is not None
                slab = await base_free.get()
                slab.block, slab.ffi, slab.rows = block, BASE, stop - start
                tg.create_task(read_base(slab, start, stop))
            for first in range(0, n_files, group):
                if group == 1:
                    slabs = [await free.get()]
                else:  # a group's FFIs go into the slots of one arena
                    arena = await free.get()
                    slabs = arena.slabs[: min(group, n_files - first)]
                for j, slab in enumerate(slabs):
                    slab.block, slab.ffi, slab.rows = block, first + j, stop - start
                tg.create_task(read(slabs, start, stop))
