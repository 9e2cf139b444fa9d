"""Stage 5: stream the cube into its sink, in file order, and seal its header.

One writer task writes the primary header, the cube header (with placeholder
checksums), the blocks as they come (each block is a run of whole cube rows, so it
is one contiguous write), the zero padding, then the info table.  The sink sums the
data as it passes; at the end the cube header is sealed with that sum
(:func:`fficube.checksum.seal_header`) and patched into place.  Where the bytes go,
and how they are made durable and visible, is the sink's business
(:mod:`fficube.sinks`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from .assemble import Block
from .checksum import seal_header
from .fitsblocks import padded
from .plan import CubePlan
from .sinks.base import CubeSink

__all__ = ["write_cube"]


async def write_cube(
    plan: CubePlan,
    sink: CubeSink,
    full_blocks: asyncio.Queue[Block | None],
    free_blocks: asyncio.Queue[np.ndarray],
    on_block: Callable[[int], None] | None = None,
    written: asyncio.Queue[Block | None] | None = None,
) -> None:
    """Write the cube into an opened ``sink`` (which the caller commits).

    Writes go to their place in the file; a sink that continues an interrupted build
    drops the bytes it already has.  Each block's buffer goes back to ``free_blocks``
    once written, or, with ``written``, the block goes on there (to the pixel
    statistics, which give the buffer back), and a None follows the last.
    """
    await sink.write_at(0, plan.primary_header + plan.cube_header)
    while (item := await full_blocks.get()) is not None:
        index, start, stop, block, buffer, datasum = item
        data = block[: stop - start].reshape(-1).view(np.uint8).data
        await sink.write_at(plan.data_offset + start * plan.row_bytes, data, datasum=datasum)
        if written is None:
            free_blocks.put_nowait(buffer)
        else:
            await written.put(item)
        await sink.checkpoint()
        if on_block is not None:
            on_block(index)
    if written is not None:
        await written.put(None)
    tail = bytes(padded(plan.data_bytes) - plan.data_bytes) + plan.info_table
    await sink.write_at(plan.data_offset + plan.data_bytes, tail)
    await sink.patch(len(plan.primary_header), seal_header(plan.cube_header, sink.datasum()))
