"""The cube's third HDU: one row of header values per FFI.

Pure functions: header text in, the encoded ``BinTableHDU`` out.  The layout follows
astrocut (one column per card of the template's image header, first occurrence only,
typed from the template's value, then ``FFI_FILE``; the table header gets one card per
column whose value is the template card's comment).  One deliberate difference:
string columns are as wide as the longest value over all FFIs, so nothing is cut.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from astropy.io import fits

from .checksum import checksum_cards, data_sum, seal_header
from .fitsblocks import header_end, padded

__all__ = ["ColumnSpec", "template_columns", "column_values", "table_arrays", "encode_info_table", "FILE_COLUMN"]

log = logging.getLogger("fficube")

FILE_COLUMN = "FFI_FILE"
#: Structural keywords of a binary table: their cards are not overwritten with comments.
STRUCTURAL = frozenset(("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS"))
COMMENTARY = frozenset(("COMMENT", "HISTORY"))
INT32 = np.iinfo(np.int32)

Kind = Literal["A", "J", "D"]


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One info-table column: the header keyword, its FITS type, the template's comment."""

    name: str
    kind: Kind
    comment: str


def template_columns(template: fits.Header) -> list[ColumnSpec]:
    """Columns of the info table, in the template header's card order.

    The type comes from the template's value: ``str`` gives a string column, ``int``
    and ``bool`` a 32-bit integer one, anything else (floats, undefined values) a
    double.
    """
    columns: list[ColumnSpec] = []
    seen: set[str] = set()
    for card in template.cards:
        key = card.keyword
        if not key or key in seen:  # blank cards carry no value; repeats: first wins
            continue
        seen.add(key)
        value = card.value
        kind: Kind = "A" if isinstance(value, str) else "J" if isinstance(value, int) else "D"
        columns.append(ColumnSpec(key, kind, card.comment))
    return columns


def _commentary_text(values: Sequence[Any] | None) -> str | None:
    """All the cards' text, joined by spaces (commentary is prose wrapped over cards):
    a cutout tool copies the value into a TPF header card, which takes printable ASCII
    only, so no newline, and anything else unprintable becomes "?"."""
    if values is None:
        return None
    text = " ".join(str(v).strip() for v in values)
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)


def _to_text(value: Any) -> str:
    return "" if value is None else str(value)


def _to_int(value: Any, key: str, name: str) -> int:
    if value is None:
        return 0
    try:
        return int(value) if not isinstance(value, float) or math.isfinite(value) else 0
    except (TypeError, ValueError):
        log.warning("%s: %s = %r is not an integer; the info table holds 0", name, key, value)
        return 0


def _to_float(value: Any, key: str, name: str) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        log.warning("%s: %s = %r is not a number; the info table holds NaN", name, key, value)
        return math.nan


def column_values(
    columns: Sequence[ColumnSpec], headers: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> dict[str, np.ndarray]:
    """The table's columns as numpy arrays, one row per header (plus ``FFI_FILE``).

    A keyword missing from a header gives ``''``, ``0`` or ``NaN``.  String columns
    are as wide as their longest value (at least one character).  An integer column
    whose values do not fit 32 bits becomes 64-bit rather than wrapping.
    """
    return table_arrays(columns, {col.name: [_value(h, col.name) for h in headers] for col in columns}, names)


def _value(header: Mapping[str, Any], key: str) -> Any:
    value = header.get(key)
    return None if isinstance(value, fits.card.Undefined) else value


def table_arrays(
    columns: Sequence[ColumnSpec], values: Mapping[str, Sequence[Any]], names: Sequence[str]
) -> dict[str, np.ndarray]:
    """:func:`column_values` from the headers' values by column, as ``header.get(key)``
    gives them with ``None`` for an undefined value (see
    :func:`fficube.fitsblocks.header_columns`)."""
    arrays: dict[str, np.ndarray] = {}
    for col in columns:
        raw = [_commentary_text(v) for v in values[col.name]] if col.name in COMMENTARY else values[col.name]
        if col.kind == "A":
            text = [_to_text(v).encode("ascii", "replace") for v in raw]
            arrays[col.name] = np.array(text, dtype=f"S{max([1, *map(len, text)])}")
        elif col.kind == "J":
            arrays[col.name] = _int_array(raw, col.name, names)
        else:
            arrays[col.name] = _float_array(raw, col.name, names)
    files = [n.encode("ascii", "replace") for n in names]
    arrays[FILE_COLUMN] = np.array(files, dtype=f"S{max([1, *map(len, files)])}")
    return arrays


def _int_array(raw: Sequence[Any], key: str, names: Sequence[str]) -> np.ndarray:
    if all(type(v) is int for v in raw):  # the usual column, converted at once
        ints = np.array(raw, dtype=object)
    else:
        ints = np.array([_to_int(v, key, n) for v, n in zip(raw, names, strict=True)], dtype=object)
    if len(ints) == 0:
        return np.zeros(0, dtype=np.int32)
    fits32 = INT32.min <= ints.min() and ints.max() <= INT32.max
    return ints.astype(np.int32 if fits32 else np.int64)


_NUMBERS = frozenset((float, int, bool, type(None)))


def _float_array(raw: Sequence[Any], key: str, names: Sequence[str]) -> np.ndarray:
    if set(map(type, raw)) <= _NUMBERS:  # the usual column, converted at once (None is NaN)
        return np.array(raw, dtype=np.float64)
    return np.array([_to_float(v, key, n) for v, n in zip(raw, names, strict=True)], dtype=np.float64)


def _fits_format(array: np.ndarray) -> str:
    if array.dtype.kind == "S":
        return f"A{array.dtype.itemsize}"
    return {np.dtype(np.int32): "J", np.dtype(np.int64): "K"}.get(array.dtype, "D")


def encode_info_table(columns: Sequence[ColumnSpec], arrays: dict[str, np.ndarray], when: str) -> bytes:
    """Encode the table HDU (header and padded data) as it stands in the cube file.

    The header's ``CHECKSUM`` and ``DATASUM`` hold the HDU's checksums (stamped
    ``when``), not the template's comments for the columns of those names.
    """
    comments = {c.name: c.comment for c in columns}
    hdu = fits.BinTableHDU.from_columns(
        [fits.Column(name=name, format=_fits_format(arr), array=arr) for name, arr in arrays.items()]
    )
    for name in arrays:
        if name not in STRUCTURAL:
            hdu.header[name] = comments.get(name, "")
    checksum_cards(hdu.header, when)
    # A table cannot be written on its own; write it after an empty primary HDU and
    # keep only the table's bytes.
    primary = fits.PrimaryHDU()
    skip = len(primary.header.tostring())
    buf = io.BytesIO()
    fits.HDUList([primary, hdu]).writeto(buf)
    raw = buf.getvalue()[skip:]
    end = header_end(raw, 0)
    assert end is not None
    head = padded(end)
    return seal_header(raw[:head], data_sum(raw[head:])) + raw[head:]
