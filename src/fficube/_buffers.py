"""Page-aligned buffers, so that a block can go to disk with direct I/O without a copy.

Direct I/O (``O_DIRECT``) needs the file offset, the length and the memory address of
a write aligned to the device's block size.  A cube's blocks start at arbitrary file
offsets (after 2880-byte FITS headers, at multiples of a row), so a block buffer is
allocated one page larger than the block and each block is placed in it at the shift
that gives its bytes the same alignment in memory as in the file: then every whole
page of the block can be written directly, and only the partial pages at its two
ends go through the page cache.

:func:`prefault` maps a new buffer's pages in advance, from a worker thread, so that
their first-touch cost is paid beside the pipeline rather than in it.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["ALIGN", "aligned_buffer", "address", "placed", "prefault", "PREFAULT_CHUNK"]

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


#: ``madvise`` advice (Linux 5.14+): fault pages in writable without writing to them.
MADV_POPULATE_WRITE = 23
#: Bytes populated per call, so that a stop request is seen within one chunk.
PREFAULT_CHUNK = 16 * 2**20


def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover - a libc without madvise
        return None
    func.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_MADVISE = _madvise()


def prefault(buffers: Sequence[np.ndarray], stop: threading.Event | None = None) -> int:
    """Map the pages of ``buffers`` (in order) writable without changing their bytes;
    return the bytes populated.

    A fresh buffer's pages are mapped at their first write, each with a fault and a
    zeroed page, and on a VM whose freed memory goes back to the host, with the host's
    own fault as well (this project's machines: 2-7 s of system time per GB).  The
    transposition's first writes to a block buffer paid that on the pipeline's critical
    path; run in a worker thread beside it, this pays it on an otherwise idle core.
    ``MADV_POPULATE_WRITE`` never writes, so it may run while the buffers are being
    filled.  Stops between chunks once ``stop`` is set; does nothing where the advice
    is not supported (other systems, Linux before 5.14).  Releases the GIL (ctypes).
    """
    if _MADVISE is None:
        return 0
    done = 0
    for buffer in buffers:
        start = -(-buffer.ctypes.data // ALIGN) * ALIGN  # whole pages only
        end = (buffer.ctypes.data + buffer.nbytes) // ALIGN * ALIGN
        for chunk in range(start, end, PREFAULT_CHUNK):
            if stop is not None and stop.is_set():
                return done
            length = min(PREFAULT_CHUNK, end - chunk)
            if _MADVISE(chunk, length, MADV_POPULATE_WRITE) != 0:
                return done  # EINVAL on kernels before 5.14 (or EINTR): only the head start is lost
            done += length
    return done
