"""An xarray view of any cube, local or remote, read lazily in place.

:func:`open_dataset` makes the cube's reference manifest (:mod:`fficube.views.refs`) and
opens it with xarray's Zarr backend through fsspec's reference filesystem: no pixel is
read until asked for, and then only the chunks (rows x column ranges) that hold it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..access import reading_options, require
from ..products import product_of_cube
from ..sync import run
from .refs import DEFAULT_CHUNK_BYTES, cube_refs

if TYPE_CHECKING:
    import xarray

__all__ = ["open_dataset", "open_references"]

_EXTRA = "xarray"


def open_references(
    refs: Mapping[str, Any],
    *,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> xarray.Dataset:
    """Open a reference manifest (as made by :func:`fficube.views.refs.cube_refs`) with
    xarray, lazily (dask), as stored: one ``cube`` variable (row, column, time, layer).

    Parameters
    ----------
    refs
        The manifest.
    anon, storage_options
        How to read the cube's bytes: as for :func:`fficube.build_cube`.

    Returns
    -------
    xarray.Dataset
    """
    fsspec = require("fsspec", _EXTRA, "open_dataset")
    xr = require("xarray", _EXTRA, "open_dataset")
    zarr_storage = require("zarr.storage", _EXTRA, "open_dataset")
    require("dask", _EXTRA, "open_dataset")
    url = refs["templates"]["cube"]
    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    cls = fsspec.get_filesystem_class(protocol)
    remote = reading_options(protocol, anon=anon, storage_options=storage_options)
    if getattr(cls, "async_impl", False):
        # zarr 3 reads through an async reference filesystem, and fsspec requires its
        # target filesystem to be async alike.  fsspec's instance cache is kept on
        # purpose: zarr runs every read on its one I/O loop, so datasets opened with
        # the same options share one session instead of each leaving one open.
        remote["asynchronous"] = True
    fs = fsspec.filesystem(
        "reference", fo=dict(refs), remote_protocol=protocol, remote_options=remote,
        asynchronous=True, skip_instance_cache=True,
    )
    store = zarr_storage.FsspecStore(fs, read_only=True, path="")
    # chunks={}: dask chunks are the manifest's chunks (a row by a column range).
    dataset: xarray.Dataset = xr.open_dataset(store, engine="zarr", consolidated=True, chunks={})
    return dataset


def open_dataset(
    cube: str | os.PathLike[str],
    *,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> xarray.Dataset:
    """Open a cube (local or ``s3://``...) as an ``xarray.Dataset``, lazily, in place.

    Only the cube's headers and info table are read now (a few requests); pixels are
    read when computed, by the chunk: one cube row by a range of columns, all FFIs.

    Parameters
    ----------
    cube
        A cube file or URL, in fficube's (astrocut's) format.
    anon
        Read S3 anonymously (public buckets), as ``fficube build --anon``.
    storage_options
        fsspec options for the remote filesystem (``endpoint_url``, ``requester_pays``,
        ``profile``...), as for :func:`fficube.build_cube`.
    chunk_bytes
        Largest chunk, in bytes (see :func:`fficube.views.refs.chunk_columns`).

    Returns
    -------
    xarray.Dataset
        Dimensions ``row``, ``column``, ``time``.  Data variables ``flux`` and
        ``flux_err`` (SPOC) or ``flux`` (TICA), each (row, column, time), dask-backed;
        one variable per info-table column (time) with each FFI's header value.
        Coordinates ``time`` (mid-exposure), ``time_start``, ``time_stop`` (from
        ``TSTART``/``TSTOP``, TICA: ``STARTTJD``/``ENDTJD``), ``row``, ``column``.
        Attributes: the cube's primary header.

    Raises
    ------
    MissingExtraError
        If xarray, zarr or dask is not installed (``pip install 'fficube[xarray]'``).
    FitsFormatError
        If the file is not a cube in fficube's (astrocut's) format.

    Examples
    --------
    >>> ds = fficube.open_dataset("s3://stpubdata/tess/public/mast/tess-s0001-1-1-cube.fits", anon=True)
    >>> cutout = ds.flux.isel(row=slice(1000, 1010), column=slice(500, 510))
    >>> light_curve = cutout.median(["row", "column"]).compute()
    """
    for module in ("xarray", "zarr", "dask"):  # before any request: fail fast
        require(module, _EXTRA, "open_dataset")
    refs = run(cube_refs(cube, anon=anon, storage_options=storage_options, chunk_bytes=chunk_bytes))
    stored = open_references(refs, anon=anon, storage_options=storage_options)
    data = stored["cube"]
    product = product_of_cube(stored.attrs.get("fficube_product"), data.sizes["layer"], path=str(cube))
    layer_names = product.layer_names
    layers = {name: data.isel(layer=i, drop=True) for i, name in enumerate(layer_names)}
    for name, layer in layers.items():
        layer.attrs = {"long_name": f"{name} ({'science image' if name == 'flux' else 'uncertainty'})"}
    # The per-time values are in the manifest itself: load them now (no request), so
    # that using them costs no dask computation.
    rest = stored.drop_vars(["cube", "layer"]).load()
    return rest.assign(layers)[[*layers, *rest.data_vars]]
