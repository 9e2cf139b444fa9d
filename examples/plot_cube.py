"""Draw a cube's overview figure: time coverage, quality, a thumbnail, per-FFI levels.

    python examples/plot_cube.py tess-s0001-1-1-cube.fits -o cube.png [--frame N] [--report gate.json]
    python examples/plot_cube.py s3://stpubdata/tess/public/mast/tess-s0001-1-1-cube.fits --anon -o s0001-1-1.png

With no cube it builds a small synthetic one in a temporary directory (removed at the
end), so that it runs anywhere.  Needs ``pip install 'fficube[plot]'``.
"""

import argparse
import tempfile
from pathlib import Path

import fficube


def overview(cube: str, args: argparse.Namespace) -> None:
    result = fficube.plot_cube(cube, args.output, frame=args.frame, report=args.report,
                               anon=True if args.anon else None)
    o = result.overview
    print(f"wrote {args.output}: frame {o.frame} of {o.n_ffis}, {len(o.gaps)} gap(s), "
          f"{len({f for f, _ in o.set_bits})} FFI(s) with quality bits set")
    print(f"read {o.bytes_read:,} bytes in {o.requests} requests "
          f"({o.header_requests} for headers and table, {len(o.sample_rows)} for rows)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cube", nargs="?", help="a cube file or s3:// URL (default: a synthetic one)")
    parser.add_argument("-o", "--output", default="cube.png")
    parser.add_argument("--frame", type=int)
    parser.add_argument("--report", help="a quality report (JSON, see docs/quality.md)")
    parser.add_argument("--anon", action="store_true", help="read S3 anonymously")
    args = parser.parse_args()
    args.output = str(Path(args.output).resolve())
    if args.cube:
        overview(args.cube, args)
        return
    from fficube.synthetic import SectorSpec, make_sector

    with tempfile.TemporaryDirectory(prefix="fficube-example-") as work:
        paths = make_sector(Path(work) / "ffis", SectorSpec(n_ffis=12, shape=(64, 80)))
        cube = str(Path(work) / "tess-s0001-1-1-cube.fits")
        fficube.make_cube(paths, cube, sector=1)
        overview(cube, args)


if __name__ == "__main__":
    main()
