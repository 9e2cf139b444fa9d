"""Stage 4: place the slabs of each block into the block ``(rows, cols, n_ffis, layers)``.

When an input layer is big-endian float32 without scaling (SPOC and TICA FFIs), its
bytes are the cube's bytes: they are copied into place with no byte swap and no float
conversion.  Other BITPIX/BSCALE/BZERO/BLANK inputs are decoded to float32 as astropy
decodes them, so that the cube equals astrocut's.

Copies run in a worker thread: numpy releases the GIL while copying, so assembly
overlaps with reading and writing.  An optional :class:`BlockObserver` (the quality
gate, :class:`fficube.quality.QualityGate`) sees each block once it is complete,
before it goes to the writer, in a worker thread too; it reads, never writes.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from ._buffers import placed as placed_at
from .checksum import add
from .fetch import BASE, Slab
from .layout import row_bytes
from .plan import CubePlan
from .scan import ImageLayout

try:  # the compiled transposition (optional: see setup.py)
    from ._kernels import transpose as _transpose
except ImportError:  # pragma: no cover - depends on how fficube was installed
    _transpose = None  # type: ignore[assignment]  # numpy does it, more slowly

__all__ = ["decode", "place", "place_group", "transpose_group", "assemble_blocks", "Block", "BlockObserver"]

#: BZERO of pseudo-unsigned integers (FITS 5.2.5; astropy's int8 convention for 8 bits).
PSEUDO_ZERO = {8: -128.0, 16: 2.0**15, 32: 2.0**31, 64: 2.0**63}


class Block(NamedTuple):
    """A complete block, handed to the writer."""

    number: int  #: the block's index in the plan
    start: int  #: first cube row
    stop: int  #: cube row after the last
    data: np.ndarray  #: ``(block_rows, cols, n_ffis, layers)`` big-endian float32, rows ``:stop - start`` filled
    buffer: np.ndarray  #: the raw buffer ``data`` lies in, to be given back to the pool
    #: The FITS data sum of rows ``:stop - start`` when assembly computed it on the way
    #: (every value was placed by the compiled kernel), else None.
    datasum: int | None = None


class BlockObserver(Protocol):
    """Looks at complete blocks (cube rows ``start:stop``) without changing them."""

    def wants(self, start: int, stop: int) -> bool:
        """Whether :meth:`observe` has anything to do for these rows (else it is not called)."""
        ...

    def observe(self, block: np.ndarray, start: int, stop: int) -> None:
        """Called in a worker thread, once per block, blocks in order."""
        ...


def decode(raw: np.ndarray, layout: ImageLayout) -> np.ndarray:
    """Pixel values of ``raw`` (the file's bytes, as ``layout.dtype``) ready for a float32 cube.

    Follows astropy: unscaled data is returned as stored (cast on assignment);
    scaled data is computed in float32 for 8- and 16-bit and float32 input, in
    float64 otherwise (``x * BSCALE + BZERO``), and BLANK integers become NaN.
    Like astropy, BLANK is ignored when it is 0 (astropy tests it for truth) and for
    pseudo-unsigned data (BZERO = 2**(BITPIX-1), which astropy returns as integers).
    """
    pseudo_unsigned = layout.bitpix > 0 and layout.bscale == 1.0 and layout.bzero == PSEUDO_ZERO[layout.bitpix]
    blank = layout.blank if layout.blank and not pseudo_unsigned else None
    if layout.bscale == 1.0 and layout.bzero == 0.0 and blank is None:
        return raw
    work: type[np.floating[Any]] = np.float32 if layout.bitpix in (8, 16, -32) else np.float64
    values: np.ndarray = raw.astype(work)
    if layout.bscale != 1.0:
        values *= work(layout.bscale)
    if layout.bzero != 0.0:
        values += work(layout.bzero)
    if blank is not None:
        values[raw == blank] = np.nan
    return values


def _bits(array: np.ndarray) -> np.ndarray:
    """``array``'s 4-byte values as native uint32: copying bits, numpy takes its fastest
    paths (with a byte-swapped dtype it takes slower ones, though nothing is swapped)."""
    return array.view(np.uint32)


def place(block: np.ndarray, slab: Slab, layers: tuple[ImageLayout, ...], slot: int) -> None:
    """Copy one FFI's slab into ``block[:, :, slot, :]``.

    Layers lie in the slab at a stride of the block's full rows (``block.shape[0]``).
    """
    offset = 0
    for index, layout in enumerate(layers):
        nbytes = slab.rows * layout.cols * layout.itemsize
        raw = slab.buffer[offset : offset + nbytes].view(layout.dtype).reshape(slab.rows, layout.cols)
        if layout.is_raw_float32:
            _bits(block)[: slab.rows, :, slot, index] = _bits(raw)
        else:
            block[: slab.rows, :, slot, index] = decode(raw, layout)
        offset += block.shape[0] * layout.cols * layout.itemsize


def place_group(block: np.ndarray, slabs: list[Slab], layers: tuple[ImageLayout, ...], first_slot: int
                ) -> int | None:
    """Copy the slabs of consecutive raw-float32 FFIs (slots ``first_slot`` on) into the
    block at once.

    The slabs are the first slots of one arena, ``(group, layers, block_rows, cols)``;
    seen as ``(group x layers, rows, cols)`` they transpose into the block's pixel-major
    ``(rows, cols, n_ffis x layers)`` in one copy whose innermost run is the group's
    ``group x layers`` contiguous values of a pixel: whole cache lines, each written once.
    Returns the (unfolded) sum of the big-endian words placed, when the compiled
    kernel did the copy (else None).
    """
    rows, count, n_layers = slabs[0].rows, len(slabs), len(layers)
    arena = slabs[0].arena
    assert arena is not None and all(s is arena.slabs[j] for j, s in enumerate(slabs)), "not one arena"
    pixels = _bits(block).reshape(block.shape[0], block.shape[1], -1)  # (rows, cols, n_ffis x layers)
    return transpose_group(arena.data, count * n_layers, rows, pixels, first_slot * n_layers)


def transpose_group(arena: np.ndarray, planes: int, rows: int, pixels: np.ndarray, first: int, *,
                    compiled: bool = True) -> int | None:
    """``pixels[:rows, :, first:first + planes] = planes of arena, transposed``.

    ``arena`` is uint32 ``(group, layers, block_rows, cols)``; its first ``planes``
    planes (FFI x layer) in order, ``rows`` rows each, go into the pixel-major block
    ``pixels`` (uint32 ``(block_rows, cols, n_ffis x layers)``).  ``compiled`` uses the
    C kernel when it is built (1.3-1.6 times numpy's speed: :mod:`fficube._kernels`), numpy
    otherwise; both give the same bytes.  The kernel also returns the sum of the
    big-endian words it copied (not folded; :func:`fficube.checksum.add` folds it),
    which saves the writer a pass over the block; numpy's copy returns None.
    """
    block_rows, cols = arena.shape[2], arena.shape[3]
    if compiled and _transpose is not None and arena.flags.c_contiguous and pixels.flags.c_contiguous:
        return _transpose(arena.reshape(-1).data, pixels.reshape(-1).data, planes, block_rows * cols, rows * cols,
                          pixels.shape[2], first)
    stack = arena.reshape(-1, block_rows, cols)[:planes, :rows]
    pixels[:rows, :, first : first + planes] = stack.transpose(1, 2, 0)
    return None


def place_base(block: np.ndarray, slab: Slab, slots: tuple[int, ...]) -> None:
    """Copy the old cube's rows into their FFIs' new places (runs of FFIs as slices)."""
    _rows, cols, _, layers = block.shape
    old = slab.buffer[: slab.rows * row_bytes((slab.rows, cols, len(slots), layers))].view(np.uint32)
    old = old.reshape(slab.rows, cols, len(slots), layers)
    block = _bits(block)
    start = 0
    # Old FFIs keep their order; new ones are inserted between runs of them.
    while start < len(slots):
        stop = start + 1
        while stop < len(slots) and slots[stop] == slots[stop - 1] + 1:
            stop += 1
        block[: slab.rows, :, slots[start] : slots[start] + stop - start, :] = old[:, :, start:stop, :]
        start = stop


def release(slabs: list[Slab]) -> None:
    """Give placed slabs back to their pool: each alone, or their arena once (a group is
    always placed whole, so the arena is free when its slabs are)."""
    arenas = []
    for slab in slabs:
        if slab.arena is None:
            assert slab.home is not None
            slab.home.put_nowait(slab)
        elif slab.arena not in arenas:
            arenas.append(slab.arena)
    for arena in arenas:
        arena.home.put_nowait(arena)


@dataclass(slots=True, eq=False)
class _Open:
    """A block being assembled: its buffer, its view, the slabs waiting for their group."""

    buffer: np.ndarray
    data: np.ndarray
    held: dict[int, Slab] = field(default_factory=dict)
    placed: int = 0  #: slabs placed so far
    #: Sums of the words placed, one per copy; a None among them: some copy did not sum.
    sums: list[int | None] = field(default_factory=list)


async def assemble_blocks(
    plan: CubePlan,
    ready: asyncio.Queue[list[Slab]],
    free_blocks: asyncio.Queue[np.ndarray],
    full_blocks: asyncio.Queue[Block | None],
    observer: BlockObserver | None = None,
) -> None:
    """Fill block buffers and pass each, complete, to the writer, in order (after the
    ``observer``, if any, has seen it).

    As many blocks are assembled at once as there are block buffers: when one read of
    block ``k`` is slow (a GET held at S3), the slabs of block ``k + 1`` are placed
    into the other buffer as they come and their buffers go back to the fetcher,
    which reads on, instead of piling up until block ``k`` is complete and leaving
    the fetcher without buffers (measured: 1% of GETs held 2 s).  Blocks are opened
    in order and handed to the writer in order.

    Ends by putting ``None`` on ``full_blocks``.
    """
    early: dict[int, list[list[Slab]]] = defaultdict(list)  # batches of blocks not opened yet
    opened: dict[int, _Open] = {}
    n_files, n_blocks = len(plan.files), len(plan.blocks)
    group, buffers = plan.memory.group, plan.memory.block_buffers
    _rows, cols, n, layers = plan.shape
    next_open = next_hand = 0  # the first block not opened yet; not handed to the writer yet

    async def place_ready(block: _Open, first: int, stop: int) -> None:
        slabs = [block.held.pop(j) for j in range(first, stop)]
        # A group's slots are consecutive unless an update interleaves old FFIs.
        consecutive = all(plan.slot(first + j) == plan.slot(first) + j for j in range(len(slabs)))
        if group > 1 and len(slabs) > 1 and consecutive:
            block.sums.append(await asyncio.to_thread(
                place_group, block.data, slabs, plan.files[first].layers, plan.slot(first)))
        else:
            block.sums.append(None)
            for j, slab in enumerate(slabs):
                await asyncio.to_thread(place, block.data, slab, plan.files[first + j].layers, plan.slot(first + j))
        release(slabs)

    async def place_batch(index: int, batch: list[Slab]) -> None:
        block = opened[index]
        if batch[0].ffi == BASE:
            assert plan.base is not None
            await asyncio.to_thread(place_base, block.data, batch[0], plan.base.slots)
            block.sums.append(None)
            release(batch)
            block.placed += 1
            return
        for slab in batch:
            block.held[slab.ffi] = slab
        # A batch is usually one whole group; check each group it touches.
        for first in sorted({slab.ffi - slab.ffi % group for slab in batch}):
            last = min(first + group, n_files)
            if all(j in block.held for j in range(first, last)):
                await place_ready(block, first, last)
                block.placed += last - first

    async def open_next(buffer: np.ndarray | None = None) -> None:
        """Open the first unopened block in ``buffer`` (default: the next free one) and
        place what came for it early.

        Called only while fewer than ``buffers`` blocks are open: every other buffer is
        then with the writer, which gives it back, so the wait always ends.
        """
        nonlocal next_open
        index = next_open
        if buffer is None:
            buffer = await free_blocks.get()
        offset = plan.data_offset + plan.blocks[index][0] * plan.row_bytes
        data = placed_at(buffer, offset, plan.memory.block_bytes).view(">f4").reshape(plan.block_rows, cols, n, layers)
        opened[index] = _Open(buffer, data)
        next_open += 1
        for batch in early.pop(index, []):
            await place_batch(index, batch)

    def could_open() -> bool:
        """Whether a block that has slabs waiting could be opened, if a buffer were free."""
        return next_open < n_blocks and len(opened) < buffers and next_open in early

    while next_hand < n_blocks:
        # Open blocks in order.  The next block to hand over must be open (its buffer
        # comes back from the writer); a later one is opened only into a buffer that is
        # free now: waiting for the writer here would leave the current block's slabs
        # unplaced meanwhile.
        while next_open < n_blocks and len(opened) < buffers:
            if next_open == next_hand:
                await open_next()
            elif next_open in early and not free_blocks.empty():
                await open_next(free_blocks.get_nowait())
            else:
                break
        # Hand over, in order, the blocks that are complete.
        while next_hand in opened and opened[next_hand].placed == plan.slabs_per_block:
            done = opened.pop(next_hand)
            start, stop = plan.blocks[next_hand]
            if observer is not None and observer.wants(start, stop):
                await asyncio.to_thread(observer.observe, done.data, start, stop)
            datasum = None if None in done.sums else add(*(s for s in done.sums if s is not None))
            await full_blocks.put(Block(next_hand, start, stop, done.data, done.buffer, datasum))
            next_hand += 1
        if next_hand == n_blocks:
            break
        if next_open == next_hand:
            continue  # the block to hand over next can be opened now
        if could_open():
            batch, buffer = await _batch_or_buffer(ready, free_blocks)
            if buffer is not None:
                await open_next(buffer)
        else:
            batch = await ready.get()
        if batch is not None:
            index = batch[0].block
            if index in opened:
                await place_batch(index, batch)
            else:
                early[index].append(batch)
    await full_blocks.put(None)


async def _batch_or_buffer(
    ready: asyncio.Queue[list[Slab]], free_blocks: asyncio.Queue[np.ndarray]
) -> tuple[list[Slab] | None, np.ndarray | None]:
    """Whichever comes first, the next batch of slabs or a free block buffer (or both).

    What is not taken stays in its queue: a cancelled ``Queue.get`` takes nothing.
    """
    gets: tuple[asyncio.Future[Any], asyncio.Future[Any]] = (
        asyncio.ensure_future(ready.get()), asyncio.ensure_future(free_blocks.get()))
    try:
        await asyncio.wait(gets, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for get in gets:
            get.cancel()
        await asyncio.gather(*gets, return_exceptions=True)
    batch, buffer = (get.result() if get.done() and not get.cancelled() else None for get in gets)
    return batch, buffer
