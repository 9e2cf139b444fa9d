"""FITS ``CHECKSUM``/``DATASUM``, computed while the data streams by.

The FITS checksum convention (FITS standard 4.0, appendix J) uses the 32-bit ones'
complement sum of an HDU's big-endian words.  That sum is associative and
commutative, so the sum of a cube's data is the sum of the sums of its blocks (or
of an upload's parts), each taken on its own as it passes, provided every piece
starts on a 4-byte word of the data unit.  Headers are small and written last:
:func:`seal_header` fills in ``DATASUM`` and ``CHECKSUM`` once the data's sum is known.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

__all__ = ["ZERO", "data_sum", "add", "encode", "header_sum", "checksum_cards", "seal_header", "seal", "hdu_sum"]

WORD = 0xFFFFFFFF
ZERO = 0  #: the sum of no data
#: ``np.sum`` of big-endian words into uint64 cannot overflow within this many bytes.
_CHUNK = 2**32

_PLACEHOLDER = "0" * 16
#: Characters the ASCII encoding avoids (punctuation between digits and letters).
_EXCLUDED = frozenset(range(0x3A, 0x41)) | frozenset(range(0x5B, 0x61))


def _fold(total: int) -> int:
    # End-around carry: what overflows 32 bits is added back in at the bottom.
    while total > WORD:
        total = (total & WORD) + (total >> 32)
    return total


def add(*sums: int) -> int:
    """Combine ones' complement sums of consecutive (word-aligned) pieces."""
    return _fold(sum(sums))


def data_sum(buffer: bytes | bytearray | memoryview | np.ndarray) -> int:
    """The 32-bit ones' complement sum of ``buffer``'s big-endian words.

    ``len(buffer)`` must be a multiple of 4 and the buffer must start on a word of the
    HDU it belongs to.  numpy sums big-endian words at several GB/s.
    """
    array = buffer if isinstance(buffer, np.ndarray) else np.frombuffer(buffer, dtype=np.uint8)
    raw = array.reshape(-1).view(np.uint8)
    if raw.size % 4:
        raise ValueError(f"checksummed data must be whole 4-byte words, not {raw.size} bytes")
    total = 0
    for first in range(0, raw.size, _CHUNK):
        words = raw[first : first + _CHUNK].view(">u4")
        total += int(np.sum(words, dtype=np.uint64))
    return _fold(total)


def encode(value: int) -> str:
    """The 16-character ASCII form of a 32-bit value (the CHECKSUM keyword's value).

    Each byte becomes four characters, spread over the four 32-bit words of the
    16-byte string so that their ones' complement sum is the byte again; characters
    are kept to digits and letters, then the string is rotated right by one.
    """
    chars = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quotient, remainder = byte // 4 + 0x30, byte % 4
        four = [quotient + remainder, quotient, quotient, quotient]
        changed = True
        while changed:
            changed = False
            for j in (0, 2):
                # Moving one unit between a pair keeps their sum, so the checksum holds.
                while four[j] in _EXCLUDED or four[j + 1] in _EXCLUDED:
                    four[j] += 1
                    four[j + 1] -= 1
                    changed = True
        for j in range(4):
            chars[4 * j + i] = four[j]
    return bytes(chars[-1:] + chars[:-1]).decode("ascii")


def header_sum(header: bytes) -> int:
    """Ones' complement sum of a padded header's bytes."""
    return data_sum(header)


def hdu_sum(header: bytes, datasum: int) -> int:
    """The sum of a whole HDU: its header's and its data's."""
    return add(header_sum(header), datasum)


def checksum_cards(header: fits.Header, when: str) -> None:
    """Give ``header`` ``CHECKSUM`` and ``DATASUM`` cards with placeholder values.

    The cards keep their place when present; otherwise ``CHECKSUM`` goes before
    ``DATASUM`` at the end.  ``when`` is the time stamp in their comments.
    """
    if "DATASUM" not in header:
        header["DATASUM"] = "0"
    header.set("DATASUM", "0", f"data unit checksum updated {when}")
    if "CHECKSUM" in header:
        header.set("CHECKSUM", _PLACEHOLDER, f"HDU checksum updated {when}")
    else:
        header.set("CHECKSUM", _PLACEHOLDER, f"HDU checksum updated {when}", before="DATASUM")


def seal_header(header: bytes, datasum: int) -> bytes:
    """``header`` (padded bytes, with :func:`checksum_cards`) with its sums filled in.

    ``DATASUM`` becomes ``datasum``; ``CHECKSUM`` is chosen so that the whole HDU,
    header and data, sums to negative zero, which is what readers check.  Only those
    two cards' values change, so the header keeps its length.
    """
    sealed = seal(fits.Header.fromstring(header.decode("ascii")), datasum)
    if len(sealed) != len(header):
        raise ValueError("sealing changed the header's length")
    return sealed


def seal(header: fits.Header, datasum: int) -> bytes:
    """The padded bytes of ``header`` (which has :func:`checksum_cards`), its ``DATASUM``
    set to ``datasum`` and its ``CHECKSUM`` to what makes the HDU sum to negative zero."""
    header.set("DATASUM", str(datasum))
    header.set("CHECKSUM", _PLACEHOLDER)
    return _seal_text(header.tostring().encode("ascii"), datasum)


def seal_text(text: bytes, datasum: int) -> bytes:
    """:func:`seal` for a header already as bytes (padded, with :func:`checksum_cards`):
    only the ``DATASUM`` and ``CHECKSUM`` cards change."""
    card = _card_offset(text, b"DATASUM")
    comment = fits.Card.fromstring(text[card : card + 80].decode("ascii")).comment
    image = fits.Card("DATASUM", str(datasum), comment).image.encode("ascii")
    checksum = _card_offset(text, b"CHECKSUM")
    placeholder = b"CHECKSUM= '" + _PLACEHOLDER.encode("ascii")
    text = text[:card] + image + text[card + 80 :]
    return _seal_text(text[:checksum] + placeholder + text[checksum + 27 :], datasum)


def _seal_text(text: bytes, datasum: int) -> bytes:
    """``text`` (its DATASUM set, its CHECKSUM a placeholder) with the CHECKSUM that makes the HDU sum to -0."""
    card = _card_offset(text, b"CHECKSUM")
    value = encode(~hdu_sum(text, datasum) & WORD).encode("ascii")
    sealed = text[: card + 11] + value + text[card + 27 :]
    assert hdu_sum(sealed, datasum) == WORD, "checksum does not verify"
    return sealed


def _card_offset(header: bytes, keyword: bytes) -> int:
    key = keyword.ljust(8) + b"= '"
    for offset in range(0, len(header), 80):
        if header[offset : offset + 11] == key:
            return offset
    raise ValueError(f"no {keyword.decode()} card")
