"""Page-aligned buffers, so that a block can go to disk with direct I/O without a copy.

Direct I/O (``O_DIRECT``) needs the file offset, the length and the memory address of
a write aligned to the device's block size.  A cube's blocks start at arbitrary file
offsets (after 2880-byte FITS headers, at multiples of a row), so a block buffer is
allocated one page larger than the block and each block is placed in it at the shift
that gives its bytes the same alignment in memory as in the file: then every whole
page of the block can be written directly, and only the partial pages at its two
ends go through the page cache.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALIGN", "aligned_buffer", "address", "placed"]

#: Alignment of direct writes (memory, offset, length): 4 KiB covers devices with
#: 512-byte and 4 KiB sectors.
ALIGN = 4096


def aligned_buffer(nbytes: int) -> np.ndarray:
    """An uninitialised uint8 buffer of ``nbytes + ALIGN`` bytes whose first byte is page-aligned."""
    raw = np.empty(nbytes + 2 * ALIGN, dtype=np.uint8)
    skip = -raw.ctypes.data % ALIGN
    return raw[skip : skip + nbytes + ALIGN]


def address(data: memoryview) -> int:
    """The memory address of ``data``'s first byte."""
    return int(np.frombuffer(data, dtype=np.uint8).ctypes.data) if len(data) else 0


def placed(buffer: np.ndarray, offset: int, nbytes: int) -> np.ndarray:
    """The ``nbytes`` of ``buffer`` (from :func:`aligned_buffer`) that hold data bound for
    file ``offset``: their address is congruent to ``offset`` modulo :data:`ALIGN`."""
    shift = offset % ALIGN
    return buffer[shift : shift + nbytes]
