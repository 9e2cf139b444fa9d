"""Stage 5: stream the cube into its output, and make it visible only when complete.

One writer task writes, in file order: the primary header, the cube header, the
blocks as they come (each block is a run of whole cube rows, so it is one contiguous
write), the zero padding, then the info table.  A local output is written to
``<output>.partial`` and renamed over ``<output>`` only after everything is written
and flushed to disk; on any error or cancellation the partial file is removed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Protocol

import aiofiles
import aiofiles.os
import numpy as np

from .assemble import Block
from .errors import OutputError, OutputExistsError
from .plan import CubePlan
from .scan import padded

__all__ = ["CubeSink", "LocalSink", "write_cube", "partial_path"]


def partial_path(output: str) -> str:
    """Where a local cube is written until it is complete."""
    return output + ".partial"


class CubeSink(Protocol):
    """Where the cube's bytes go, in order."""

    bytes_written: int

    async def open(self) -> None: ...
    async def write(self, data: bytes | memoryview) -> None: ...
    async def commit(self) -> None: ...
    async def abort(self) -> None: ...


class LocalSink:
    """Writes a local file through ``<output>.partial`` and an atomic rename."""

    def __init__(self, output: str, *, overwrite: bool = False) -> None:
        self.output = output
        self.partial = partial_path(output)
        self.overwrite = overwrite
        self.bytes_written = 0
        self._file = None

    async def open(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.output))
        try:
            await aiofiles.os.makedirs(parent, exist_ok=True)
            self._file = await aiofiles.open(self.partial, "wb")
        except OSError as exc:
            raise OutputError(f"cannot write here: {exc.strerror or exc}", path=self.output) from exc

    async def write(self, data: bytes | memoryview) -> None:
        assert self._file is not None
        try:
            await self._file.write(data)
        except OSError as exc:
            raise OutputError(f"writing failed: {exc.strerror or exc}", path=self.partial) from exc
        self.bytes_written += len(data)

    async def commit(self) -> None:
        assert self._file is not None
        try:
            await self._file.flush()
            await asyncio.to_thread(os.fsync, self._file.fileno())
            await self._file.close()
            self._file = None
            if not self.overwrite and await aiofiles.os.path.exists(self.output):
                raise OutputExistsError("appeared during the build; not replaced (use overwrite)", path=self.output)
            await aiofiles.os.replace(self.partial, self.output)
        except OSError as exc:
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"finishing the cube failed: {exc.strerror or exc}", path=self.output) from exc

    async def abort(self) -> None:
        # Shielded from cancellation by the caller: this runs while a build is being
        # cancelled, and must finish.
        if self._file is not None:
            try:
                await self._file.close()
            except OSError:
                pass
            self._file = None
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass


async def write_cube(
    plan: CubePlan,
    sink: CubeSink,
    full_blocks: asyncio.Queue[Block | None],
    free_blocks: asyncio.Queue[np.ndarray],
    on_block: Callable[[int], None] | None = None,
) -> None:
    """Write the whole cube into an opened ``sink`` (which the caller commits)."""
    await sink.write(plan.primary_header)
    await sink.write(plan.cube_header)
    while (item := await full_blocks.get()) is not None:
        index, start, stop, block = item
        await sink.write(block[: stop - start].reshape(-1).view(np.uint8).data)
        free_blocks.put_nowait(block)
        if on_block is not None:
            on_block(index)
    await sink.write(bytes(padded(plan.data_bytes) - plan.data_bytes))
    await sink.write(plan.info_table)
