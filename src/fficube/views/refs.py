"""A reference manifest of a cube: its bytes as a Zarr group, read in place.

A manifest is a JSON document in the reference format of fsspec's
``ReferenceFileSystem`` (version 1, as kerchunk writes it)::

    {"version": 1, "templates": {"cube": URL}, "refs": {KEY: "text" | "base64:..." | ["{{cube}}", offset, length]}}

Its keys make a Zarr group in Zarr's version-2 format (``.zgroup``, ``.zarray``,
``.zattrs`` with ``_ARRAY_DIMENSIONS``, and the consolidated ``.zmetadata``), which
zarr-python 2 and 3 and xarray read.  The group holds:

``cube`` (row, column, time, layer)
    The cube's data, big-endian float32, uncompressed, *not copied*: every chunk is a
    byte range of the cube file.  A cube row is contiguous in the file
    (``cols * n_ffis * layers * 4`` bytes), so a chunk is one row by a divisor of the
    columns by all FFIs by all layers, chosen so that a chunk is at most
    ``chunk_bytes`` (one column when even that is larger).
``layer``
    The layers' names: ``flux`` and ``flux_err`` (SPOC) or ``flux`` (TICA).
``time``, ``time_start``, ``time_stop``
    Mid-exposure, start and stop times of the FFIs: ``TSTART``/``TSTOP`` (SPOC, in
    BTJD) or ``STARTTJD``/``ENDTJD`` (TICA, in TJD); the mid time is their mean, as
    astrocut's ``TIME``.
``row``, ``column``
    Pixel indices (0-based) of the FFI image.
one array per info-table column (time)
    Each FFI's header value, stored in the manifest itself (zlib, base64): a FITS table
    is stored row by row, so a column is not one byte range of the file.

The dataset's attributes are the cube's primary header cards.  Reading a manifest
needs no fficube (with zarr 3, an ``s3://`` cube's ``remote_options`` must include
``"asynchronous": True``: zarr 3 reads through an async reference filesystem, whose
target filesystem fsspec requires to be async too)::

    xr.open_dataset("reference://", engine="zarr",
                    storage_options={"fo": "refs.json", "remote_options": {"anon": True, "asynchronous": True}})

URLs that carry credentials (presigned URLs) are kept in a manifest made in memory
(:func:`cube_refs`) but refused when writing one to a file (:func:`make_refs`).
"""

from __future__ import annotations

import base64
import json
import math
import os
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits

from .._version import __version__
from ..access import CubeInfo, cube_location, cube_path, read_cube
from ..errors import InputError
from ..layout import pixel_bytes
from ..redact import redact
from ..sources.locations import is_url
from ..sync import run

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "chunk_columns",
    "cube_references",
    "cube_refs",
    "make_refs",
]

#: Largest chunk of the cube's data in a manifest, by default.  A few MB per request
#: balances S3's per-request latency against reading pixels a cutout does not need.
DEFAULT_CHUNK_BYTES = 4 * 2**20
#: Table header cards that describe the table itself, not a column (see cube-format.md).
_TABLE_STRUCTURE = frozenset({"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS"})
_TEMPLATE = "cube"


def chunk_columns(cols: int, n_ffis: int, layers: int, chunk_bytes: int) -> int:
    """Columns per chunk: the largest divisor of ``cols`` whose chunk (that many
    columns x all FFIs x all layers x 4 bytes) fits ``chunk_bytes``; at least 1.

    A divisor, so that every chunk is a whole byte range of one row: Zarr stores edge
    chunks at full size, which a cube row does not have.
    """
    per_column = pixel_bytes(n_ffis, layers)
    best = 1
    for d in range(1, math.isqrt(cols) + 1):
        if cols % d:
            continue
        for divisor in (d, cols // d):
            if divisor * per_column <= chunk_bytes and divisor > best:
                best = divisor
    return best


def _array_meta(shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str, *, compressed: bool) -> dict[str, Any]:
    return {
        "zarr_format": 2,
        "shape": list(shape),
        "chunks": list(chunks),
        "dtype": dtype,
        "compressor": {"id": "zlib", "level": 6} if compressed else None,
        "filters": None,
        # No fill value: every chunk exists, and a NaN fill would make xarray mask NaNs.
        "fill_value": None,
        "order": "C",
        "dimension_separator": ".",
    }


def _inline(values: np.ndarray) -> str:
    return "base64:" + base64.b64encode(zlib.compress(np.ascontiguousarray(values).tobytes(), 6)).decode("ascii")


def _column_values(data: Any) -> np.ndarray | None:
    """A table column as a native 1-D array (text as fixed-width unicode), or None
    for columns Zarr's version-2 format cannot hold simply (arrays in a cell)."""
    array = np.asarray(data)
    if array.ndim != 1:
        return None
    if array.dtype.kind == "S":
        text = np.char.decode(array, "ascii", errors="replace")
        return text.astype(f"<U{max(1, text.dtype.itemsize // 4)}")
    if array.dtype.kind == "U":
        return array.astype(f"<U{max(1, array.dtype.itemsize // 4)}")
    if array.dtype.kind == "b":
        return array.astype("|b1")
    if array.dtype.kind in "iuf":
        return array.astype(array.dtype.newbyteorder("<"))
    return None


def _json_value(value: Any) -> Any:
    """A header value as JSON can hold it, or None to leave the card out."""
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN
    return None  # undefined values, complex numbers


def cube_references(cube: CubeInfo, url: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> dict[str, Any]:
    """The reference manifest of a scanned cube whose bytes are at ``url``.

    Parameters
    ----------
    cube
        The cube's headers and table (:func:`fficube.cubeinfo.scan_cube`).
    url
        Where readers find the cube's bytes: an absolute local path or an fsspec URL.
    chunk_bytes
        Largest chunk of the data (see :func:`chunk_columns`).

    Returns
    -------
    dict
        ``{"version": 1, "templates": {"cube": url}, "refs": {...}}``, JSON-ready.
    """
    rows, cols, n, layers = cube.shape
    product = cube.product
    refs: dict[str, Any] = {}
    meta: dict[str, Any] = {}

    def put(key: str, value: dict[str, Any]) -> None:
        meta[key] = value
        refs[key] = json.dumps(value)

    def inline_array(name: str, values: np.ndarray, dims: list[str], attrs: dict[str, Any]) -> None:
        put(f"{name}/.zarray", _array_meta(values.shape, values.shape, values.dtype.str, compressed=True))
        put(f"{name}/.zattrs", {"_ARRAY_DIMENSIONS": dims, **attrs})
        refs[f"{name}/" + ".".join("0" * values.ndim)] = _inline(values)

    primary = fits.Header.fromstring(cube.primary_header)
    attrs: dict[str, Any] = {}
    for card in primary.cards:
        value = _json_value(card.value)
        if card.keyword and card.keyword not in ("COMMENT", "HISTORY") and value is not None:
            attrs.setdefault(card.keyword, value)
    attrs.update(
        fficube_product=product.name,
        fficube_source=redact(url),
        fficube_version=__version__,
    )
    put(".zgroup", {"zarr_format": 2})
    put(".zattrs", attrs)

    width = chunk_columns(cols, n, layers, chunk_bytes)
    chunk = width * pixel_bytes(n, layers)
    put("cube/.zarray", {**_array_meta((rows, cols, n, layers), (1, width, n, layers), ">f4", compressed=False)})
    put("cube/.zattrs", {
        "_ARRAY_DIMENSIONS": ["row", "column", "time", "layer"],
        "long_name": f"{product.name.upper()} FFI cube: pixels x FFIs x layers",
        # CF: these per-time variables are coordinates of the cube, not data.
        "coordinates": "time_start time_stop",
    })
    template = "{{" + _TEMPLATE + "}}"
    for r in range(rows):
        start = cube.data_offset + r * cube.row_bytes
        for j in range(cols // width):
            refs[f"cube/{r}.{j}.0.0"] = [template, start + j * chunk, chunk]

    names = product.layer_names
    inline_array("layer", np.array(names, dtype=f"<U{max(map(len, names))}"), ["layer"], {})
    inline_array("row", np.arange(rows, dtype="<i4"), ["row"], {"long_name": "FFI image row (0-based)"})
    inline_array("column", np.arange(cols, dtype="<i4"), ["column"], {"long_name": "FFI image column (0-based)"})

    table = cube.table.data
    columns = cube.table.columns.names
    start_key, stop_key = product.time_keyword, product.stop_keyword
    t0 = np.asarray(table[start_key], dtype="<f8") if start_key in columns else np.full(n, np.nan)
    t1 = np.asarray(table[stop_key], dtype="<f8") if stop_key in columns else np.full(n, np.nan)
    mid = np.where(np.isfinite(t1), (t0 + t1) / 2, t0)
    units = product.time_units
    inline_array("time", mid, ["time"],
                 {"long_name": f"mid-exposure time, ({start_key} + {stop_key}) / 2", "units": units})
    inline_array("time_start", t0, ["time"], {"long_name": f"start time ({start_key})", "units": units})
    inline_array("time_stop", t1, ["time"], {"long_name": f"stop time ({stop_key})", "units": units})

    header = cube.table.header
    for name in columns:
        values = _column_values(table[name])
        if values is None or name in ("time", "time_start", "time_stop", "row", "column", "layer", "cube"):
            continue
        described = name not in _TABLE_STRUCTURE and isinstance(header.get(name), str)
        inline_array(name, values, ["time"], {"description": header[name]} if described else {})

    refs[".zmetadata"] = json.dumps({"zarr_consolidated_format": 1, "metadata": meta})
    return {"version": 1, "templates": {_TEMPLATE: url}, "refs": refs}


async def cube_refs(
    cube: str | os.PathLike[str],
    *,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, Any]:
    """The reference manifest of ``cube`` (local or URL), reading its headers and table.

    Parameters
    ----------
    cube
        A cube file or URL (``s3://...``).
    anon, storage_options
        As for :func:`fficube.build_cube`: ``anon=True`` reads S3 unsigned; the options
        go to the fsspec filesystem (``endpoint_url``, ``requester_pays``...).
    chunk_bytes
        Largest chunk of the data (see :func:`chunk_columns`).

    Returns
    -------
    dict
        The manifest (see the module's documentation); its URL is the cube as given
        (local paths made absolute).

    Raises
    ------
    FitsFormatError
        If the file is not a cube in fficube's (astrocut's) format.
    """
    info, _ = await read_cube(cube_path(cube), anon=anon, storage_options=storage_options)
    return cube_references(info, cube_location(cube), chunk_bytes=chunk_bytes)


def make_refs(
    cube: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, Any]:
    """Make the reference manifest of ``cube``; write it to ``output`` (JSON) if given.

    The synchronous twin of :func:`cube_refs` (it also works inside a running event
    loop, as in a notebook).  ``output`` may be a local path or an fsspec URL, written
    with ``storage_options`` (never anonymously).

    Raises
    ------
    InputError
        If the cube's URL carries credentials (a presigned URL): a manifest would store
        them.
    FitsFormatError
        If the file is not a cube in fficube's (astrocut's) format.
    """
    refs = run(cube_refs(cube, anon=anon, storage_options=storage_options, chunk_bytes=chunk_bytes))
    if output is not None:
        url = refs["templates"][_TEMPLATE]
        if redact(url) != url:
            raise InputError("the URL carries credentials, which a manifest file would store", path=redact(url))
        text = json.dumps(refs, separators=(",", ":"))
        target = os.fspath(output)
        if is_url(target):
            import fsspec

            with fsspec.open(target, "w", **dict(storage_options or {})) as f:
                f.write(text)
        else:
            with open(target, "w", encoding="ascii") as f:
                f.write(text)
    return refs
