"""A cutout and a light curve through xarray, read in place from a cube (local or S3).

    python examples/xarray_lightcurve.py tess-s0001-1-1-cube.fits --row 40 --column 35
    python examples/xarray_lightcurve.py s3://stpubdata/tess/public/mast/tess-s0001-1-1-cube.fits --anon \
        --row 1000 --column 1000

Only the cube's headers and table are read when the dataset opens; the light curve then
reads the chunks of the cutout's rows (one row by a range of columns, all FFIs each).
With no cube it builds a small synthetic one in a temporary directory (removed at the
end; its stars are scattered at random in each FFI, so its "light curve" jumps when
one falls into the cutout).  Needs ``pip install 'fficube[xarray]'``.
"""

import argparse
import tempfile
from pathlib import Path

import fficube


def light_curve(cube: str, args: argparse.Namespace) -> None:
    ds = fficube.open_dataset(cube, anon=True if args.anon else None)
    half = args.size // 2
    cutout = ds.flux.isel(row=slice(args.row - half, args.row - half + args.size),
                          column=slice(args.column - half, args.column - half + args.size))
    print(f"cutout {dict(cutout.sizes)}, {cutout.data.npartitions} chunk(s) to read")
    # Background: the cutout's median per FFI; the star: what stands above it.
    background = cutout.median(["row", "column"])
    flux = (cutout - background).sum(["row", "column"])
    quality = ds["DQUALITY"] if "DQUALITY" in ds else ds["QUAL_BIT"]  # SPOC / TICA
    good = quality == 0
    flux, background = flux.compute(), background.compute()
    print(f"{'time':>12} {'flux':>12} {'background':>11} quality")
    for t, f, b, ok in zip(ds.time.values, flux.values, background.values, good.values, strict=True):
        print(f"{t:12.5f} {f:12.1f} {b:11.2f} {'ok' if ok else 'flagged'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cube", nargs="?", help="a cube file or s3:// URL (default: a synthetic one)")
    parser.add_argument("--row", type=int, default=32)
    parser.add_argument("--column", type=int, default=40)
    parser.add_argument("--size", type=int, default=10, help="cutout side in pixels")
    parser.add_argument("--anon", action="store_true", help="read S3 anonymously")
    args = parser.parse_args()
    if args.cube:
        light_curve(args.cube, args)
        return
    from fficube.synthetic import SectorSpec, make_sector

    with tempfile.TemporaryDirectory(prefix="fficube-example-") as work:
        paths = make_sector(Path(work) / "ffis", SectorSpec(n_ffis=8, shape=(64, 80)))
        cube = str(Path(work) / "tess-s0001-1-1-cube.fits")
        fficube.make_cube(paths, cube, sector=1)
        light_curve(cube, args)


if __name__ == "__main__":
    main()
