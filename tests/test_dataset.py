"""The reference manifest and the xarray view of a cube, against astropy's reads.

Cubes are real files built by fficube from FFIs written by astropy; S3 is moto's
server over HTTP.  Every cutout is compared with ``fits.open(cube)[1].data[...]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from helpers import make_public, run_cli

import fficube
from fficube.views.refs import chunk_columns

xr = pytest.importorskip("xarray")


def cube_data(path: str) -> np.ndarray:
    with fits.open(path) as hdul:
        return np.array(hdul[1].data)


def table(path: str) -> fits.FITS_rec:
    with fits.open(path) as hdul:
        return hdul[2].data.copy()


def six_column_chunks(path: str) -> int:
    """chunk_bytes that makes chunks of 6 columns (the largest divisor of 30 up to 7)."""
    _rows, _cols, n, layers = cube_data(path).shape
    return 7 * n * layers * 4


def cutouts(rows: int, cols: int) -> dict[str, tuple[slice, slice]]:
    """10 x 10 cutouts: at the left edge, at the last row and column, in the centre."""
    r, c = rows // 2 - 5, cols // 2 - 5
    return {
        "edge": (slice(r, r + 10), slice(0, 10)),
        "corner": (slice(rows - 10, rows), slice(cols - 10, cols)),
        "centre": (slice(r, r + 10), slice(c, c + 10)),
    }


def check_dataset(ds, path: str, product: str) -> None:
    data = cube_data(path)
    rows, cols, _n, layers = data.shape
    layer_names = ["flux", "flux_err"] if product == "spoc" else ["flux"]
    assert layers == len(layer_names)
    assert [v for v in ds.data_vars if ds[v].ndim == 3] == layer_names
    for name in layer_names:
        assert ds[name].dims == ("row", "column", "time") and ds[name].chunks is not None  # lazy: dask
    assert ds.flux.chunks[1] == (6,) * (cols // 6)  # chunks of the manifest: 6 columns, all FFIs
    for where, (rs, cs) in cutouts(rows, cols).items():
        for i, name in enumerate(layer_names):
            got = ds[name].isel(row=rs, column=cs).values
            np.testing.assert_array_equal(got, data[rs, cs, :, i], err_msg=f"{name} at the {where}")
    info = table(path)
    start, stop = ("TSTART", "TSTOP") if product == "spoc" else ("STARTTJD", "ENDTJD")
    np.testing.assert_array_equal(ds.time_start.values, info[start])
    np.testing.assert_array_equal(ds.time_stop.values, info[stop])
    np.testing.assert_array_equal(ds.time.values, (info[start] + info[stop]) / 2)
    assert list(ds.FFI_FILE.values) == [str(f) for f in info["FFI_FILE"]]
    quality = "DQUALITY" if product == "spoc" else "QUAL_BIT"
    np.testing.assert_array_equal(ds[quality].values, info[quality])
    assert ds[quality].dims == ("time",)
    header = fits.getheader(path, 0)
    assert ds.attrs["SECTOR"] == header["SECTOR"] and ds.attrs["fficube_product"] == product


@pytest.mark.parametrize("product", ["spoc", "tica"])
def test_local_cutouts_equal_astropy(product: str, spoc_cube: str, tica_cube: str) -> None:
    path = spoc_cube if product == "spoc" else tica_cube
    ds = fficube.open_dataset(path, chunk_bytes=six_column_chunks(path))
    check_dataset(ds, path, product)


@pytest.mark.parametrize("product", ["spoc", "tica"])
def test_s3_cutouts_equal_astropy(product: str, spoc_cube: str, tica_cube: str, s3) -> None:
    path = spoc_cube if product == "spoc" else tica_cube
    key = f"cubes/{Path(path).name}"
    s3.client.upload_file(path, s3.bucket, key)
    ds = fficube.open_dataset(f"s3://{s3.bucket}/{key}", storage_options=s3.options,
                              chunk_bytes=six_column_chunks(path))
    check_dataset(ds, path, product)


def test_dask_median_light_curve_equals_numpy(spoc_cube: str) -> None:
    ds = fficube.open_dataset(spoc_cube, chunk_bytes=six_column_chunks(spoc_cube))
    data = cube_data(spoc_cube)[..., 0]
    cutout = ds.flux.isel(row=slice(3, 13), column=slice(4, 14)).median(["row", "column"])
    assert cutout.chunks is not None  # a dask computation, not numpy behind the scenes
    np.testing.assert_array_equal(cutout.compute().values, np.median(data[3:13, 4:14], axis=(0, 1)))
    whole = ds.flux.median(["row", "column"]).compute()  # every chunk of the cube
    np.testing.assert_array_equal(whole.values, np.median(data, axis=(0, 1)))
    assert whole.dims == ("time",) and np.array_equal(whole.time.values, ds.time.values)


def test_anonymous_reads_are_unsigned(spoc_cube: str, s3, proxy) -> None:
    key = "public/cube.fits"
    s3.client.upload_file(spoc_cube, s3.bucket, key)
    make_public(s3, key)
    p = proxy()
    ds = fficube.open_dataset(f"s3://{s3.bucket}/{key}", anon=True, storage_options={"endpoint_url": p.url})
    np.testing.assert_array_equal(ds.flux_err[:4, :5].values, cube_data(spoc_cube)[:4, :5, :, 1])
    assert p.state.requests >= 3 and p.state.signed == 0  # headers, table and data, all unsigned
    p.state.requests = p.state.unsigned = 0
    _ = fficube.open_dataset(f"s3://{s3.bucket}/{key}", storage_options={"endpoint_url": p.url}).flux[0, 0].values
    assert p.state.signed == p.state.requests > 0 and p.state.unsigned == 0


def test_chunk_columns_divide_the_row() -> None:
    assert chunk_columns(2136, 1300, 2, 4 * 2**20) == 356  # 6 chunks of 3.7 MB per row
    assert chunk_columns(2136, 12000, 2, 4 * 2**20) == 24
    assert chunk_columns(30, 7, 2, 10**9) == 30  # a whole row when it fits
    assert chunk_columns(31, 7, 2, 100) == 1  # a prime width: one column, even over the limit
    for cols in (1, 2, 12, 30, 97, 2136):
        for budget in (1, 57, 400, 5000):
            d = chunk_columns(cols, 7, 2, budget)
            assert cols % d == 0 and (d == 1 or d * 56 <= budget)


PLAIN = textwrap.dedent(
    """
    import json, sys
    sys.modules["fficube"] = None  # importing fficube now fails: this code path has none of it
    import fsspec, numpy as np, xarray as xr, zarr

    refs, expected, remote = sys.argv[1], np.load(sys.argv[2]), json.loads(sys.argv[3])
    ds = xr.open_dataset("reference://", engine="zarr", chunks={},
                         storage_options={"fo": refs, "remote_options": remote})
    assert ds.cube.dims == ("row", "column", "time", "layer"), ds.cube.dims
    np.testing.assert_array_equal(ds.cube.values, expected)
    assert list(ds.layer.values) == ["flux", "flux_err"] and "time_start" in ds.coords
    fs = fsspec.filesystem("reference", fo=refs, remote_options=remote, asynchronous=True)
    group = zarr.open_group(zarr.storage.FsspecStore(fs, read_only=True), mode="r")
    np.testing.assert_array_equal(group["cube"][2:7, 3:9], expected[2:7, 3:9])
    np.testing.assert_array_equal(group["DQUALITY"][:], ds.DQUALITY.values)
    assert not [m for m, v in sys.modules.items() if m.startswith("fficube") and v is not None]
    print("plain ok", ds.cube.shape)
    """
)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_manifest_opens_without_fficube(where: str, spoc_cube: str, s3, tmp_path: Path) -> None:
    cube, remote = spoc_cube, {}
    if where == "s3":
        s3.client.upload_file(spoc_cube, s3.bucket, "m/cube.fits")
        cube = f"s3://{s3.bucket}/m/cube.fits"
        # zarr 3 reads through an async reference filesystem, so the target must be async.
        remote = {"endpoint_url": s3.url, "asynchronous": True}
    refs = tmp_path / "refs.json"
    code, out, err = run_cli("refs", cube, "-o", str(refs), "--chunk-size", str(six_column_chunks(spoc_cube)),
                             *(["--storage-option", f"endpoint_url={s3.url}"] if where == "s3" else []))
    assert code == 0, err
    assert f"wrote {refs}" in out and "chunks of 1 row x 6 columns x 7 FFIs x 2 layers" in out
    manifest = json.loads(refs.read_text())
    assert manifest["version"] == 1 and manifest["templates"]["cube"] == (cube if where == "s3" else str(Path(cube).resolve()))
    expected = tmp_path / "expected.npy"
    np.save(expected, cube_data(spoc_cube))
    done = subprocess.run([sys.executable, "-c", PLAIN, str(refs), str(expected), json.dumps(remote)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "plain ok (26, 30, 7, 2)" in done.stdout


def test_refs_of_a_file_that_is_not_a_cube(tmp_path: Path, sector) -> None:
    ffi = sector(n_ffis=1, shape=(10, 12), no_wcs=())[0]
    code, _out, err = run_cli("refs", ffi, "-o", str(tmp_path / "r.json"))
    assert code == 1 and "not an FFI cube" in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_missing_extra_is_one_clear_error(spoc_cube: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["xarray"] = None  # as if fficube[xarray] were not installed
        import fficube
        try:
            fficube.open_dataset({spoc_cube!r})
        except fficube.MissingExtraError as exc:
            assert isinstance(exc, ImportError)
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "open_dataset needs xarray: pip install 'fficube[xarray]'"


async def test_open_dataset_inside_a_running_event_loop(spoc_cube: str) -> None:
    # As in a notebook cell: the headers are read on a helper thread's loop.
    ds = fficube.open_dataset(spoc_cube)
    np.testing.assert_array_equal(ds.flux[5:9, 0:3].values, cube_data(spoc_cube)[5:9, 0:3, :, 0])


def test_manifest_to_s3_and_presigned_urls(spoc_cube: str, s3, tmp_path: Path) -> None:
    s3.client.upload_file(spoc_cube, s3.bucket, "p/cube.fits")
    cube = f"s3://{s3.bucket}/p/cube.fits"
    refs = fficube.make_refs(cube, f"s3://{s3.bucket}/p/refs.json", storage_options=s3.options)
    stored = s3.client.get_object(Bucket=s3.bucket, Key="p/refs.json")["Body"].read()
    assert json.loads(stored) == refs and refs["templates"]["cube"] == cube
    # A presigned URL reads, but a manifest file would keep its signature: refused.
    signed = s3.client.generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": "p/cube.fits"},
                                              ExpiresIn=600)
    with pytest.raises(fficube.InputError, match=r"carries credentials") as caught:
        fficube.make_refs(signed, tmp_path / "signed.json")
    from urllib.parse import parse_qs, urlsplit

    secret = next(v[0] for k, v in parse_qs(urlsplit(signed).query).items() if "Signature" in k)
    assert "Signature=***" in str(caught.value) and secret not in str(caught.value)
    assert not (tmp_path / "signed.json").exists()
    in_memory = fficube.make_refs(signed)
    assert in_memory["templates"]["cube"] == signed and "***" in in_memory["refs"][".zattrs"]
