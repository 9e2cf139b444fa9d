"""The cube's data in its file: one 4-D big-endian float32 array ``(rows, cols, n_ffis,
layers)`` in C order, so that a cube row (all its columns, FFIs and layers) is one
contiguous run of bytes, and within it so is each pixel's time series.

The one home of that arithmetic: what a row, a pixel or the whole data takes.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["VALUE_BYTES", "pixel_bytes", "row_bytes", "cube_data_bytes"]

#: Bytes of one value (float32).
VALUE_BYTES = 4


def pixel_bytes(n_ffis: int, layers: int) -> int:
    """Bytes of one pixel's time series, all layers: contiguous in a cube."""
    return int(n_ffis) * int(layers) * VALUE_BYTES


def row_bytes(shape: Sequence[int]) -> int:
    """Bytes of one row of a cube of ``shape`` ``(rows, cols, n_ffis, layers)``."""
    _rows, cols, n, layers = shape
    return int(cols) * pixel_bytes(n, layers)


def cube_data_bytes(shape: Sequence[int]) -> int:
    """Bytes of a cube's data (before its padding to whole FITS blocks)."""
    return int(shape[0]) * row_bytes(shape)
