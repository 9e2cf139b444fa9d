"""What a scan learns about one FFI: where its image layers are and the headers the plan needs.

:class:`FfiInfo` is what :mod:`fficube.scan` (stage 1) hands to :mod:`fficube.plan`
(stage 2) and the fetchers; it lives apart from the scanner so that the planner,
which reads nothing, does not import the code that reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .redact import file_name

__all__ = ["BITPIX_DTYPES", "ImageLayout", "FfiInfo"]

#: BITPIX values FITS allows for images, and the numpy dtype of each.
BITPIX_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@dataclass(frozen=True, slots=True)
class ImageLayout:
    """Where one image layer's pixels are in its file and how to decode them."""

    hdu: int
    offset: int  #: byte offset of the first pixel
    rows: int
    cols: int
    bitpix: int
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None

    @property
    def itemsize(self) -> int:
        return abs(self.bitpix) // 8

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(BITPIX_DTYPES[self.bitpix])

    @property
    def is_raw_float32(self) -> bool:
        """True when the bytes on disk are already the cube's big-endian float32."""
        return self.bitpix == -32 and self.bscale == 1.0 and self.bzero == 0.0

    def row_range(self, start: int, stop: int) -> tuple[int, int]:
        """Byte range of rows ``start:stop`` in the file."""
        row_bytes = self.cols * self.itemsize
        return self.offset + start * row_bytes, self.offset + stop * row_bytes


@dataclass(frozen=True, slots=True)
class FfiInfo:
    """Everything the plan and the fetchers need to know about one FFI."""

    path: str
    size: int
    product: str
    start: float  #: value of the product's time keyword
    camera: object
    ccd: object
    layers: tuple[ImageLayout, ...]
    primary_header: str  #: raw text of HDU 0's header, up to and including END
    image_header: str  #: raw text of the image header (the same as primary for TICA)
    header_bytes: int  #: bytes of the headers the scan needed (for the read budget)
    is_template: bool  #: meets the product's template requirement
    celestial_wcs: bool = False  #: the image header has a celestial WCS (RA/DEC axes)
    sector: int | None = None  #: the FFI's own sector (its SECTOR card, else its file name)
    cadence: int | None = None  #: the FFI's cadence number (SPOC: FFIINDEX; TICA: CADENCE), if it has one

    @property
    def name(self) -> str:
        return file_name(self.path)

    @property
    def shape(self) -> tuple[int, int]:
        return self.layers[0].rows, self.layers[0].cols
