"""Cutouts: fficube's one call for many targets against astrocut 1.4's ``cube_cut`` per target.

Builds a cube of synthetic FFIs (a slice of a sector: fewer pixels, many FFIs), picks
``--targets`` positions on it (some at the edges), then writes every TPF once with
``fficube.sync.cut_cube(..., out_dir=...)`` and once with one astrocut ``cube_cut``
call per target, in alternation, and reports wall time and the process's user + sys
CPU for each, after checking that every pair of TPFs has equal FLUX, FLUX_ERR, TIME,
QUALITY and aperture.  The cube is read once first, so both read from the page cache.

With ``--s3`` it also cuts the same targets from the cube on a local moto server
behind the tests' proxy with ``--latency`` seconds per request, and reports cutouts
per second (astrocut cannot read such a bucket: it opens ``s3://`` anonymously only).

    python benchmarks/bench_cut.py --targets 60 --n-ffis 400 --size 11 --repeat 3 [--s3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fficube
from fficube.synthetic import SectorSpec, make_sector
from fficube.views.cut import table_wcs


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(run: Callable[[], object]) -> tuple[float, float]:
    wall, used = time.perf_counter(), cpu()
    run()
    return time.perf_counter() - wall, cpu() - used


def positions(cube: str, count: int, seed: int = 1) -> list[tuple[float, float]]:
    """``count`` (ra, dec) on the cube, one in ten near an edge (their TPFs are padded)."""
    with fits.open(cube) as hdus:
        rows, cols = hdus[1].data.shape[:2]
        wcs, _ = table_wcs(hdus[2].data)
    rng = np.random.default_rng(seed)
    xs, ys = rng.uniform(3, cols - 4, count), rng.uniform(3, rows - 4, count)
    xs[::10] = rng.uniform(-2, 2, len(xs[::10]))
    coords = wcs.pixel_to_world(xs, ys)
    return [(float(c.ra.deg), float(c.dec.deg)) for c in coords]


def astrocut_all(cube: str, targets: list[tuple[float, float]], size: int, out: Path) -> list[str]:
    from astrocut import cube_cut
    from astropy.coordinates import SkyCoord

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [cube_cut(cube, SkyCoord(ra, dec, unit="deg"), size, output_path=str(out), verbose=False)
                for ra, dec in targets]


def check_equal(ours: list[str], theirs: list[str]) -> None:
    for a_path, b_path in zip(ours, theirs, strict=True):
        with fits.open(a_path) as a, fits.open(b_path) as b:
            for column in ("FLUX", "FLUX_ERR", "TIME", "QUALITY"):
                np.testing.assert_array_equal(a[1].data[column], b[1].data[column], err_msg=column)
            np.testing.assert_array_equal(a[2].data, b[2].data)


def s3_rate(cube: str, targets: list[tuple[float, float]], size: int, latency: float) -> tuple[float, int]:
    """Cutouts per second from the cube on moto behind the proxy, and the requests they took."""
    import boto3
    from moto.server import ThreadedMotoServer
    from s3_proxy import S3Proxy

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = S3Proxy((host, port), latency=latency)
    try:
        client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
        client.create_bucket(Bucket="cubes")
        client.upload_file(cube, "cubes", "cube.fits")
        with tempfile.TemporaryDirectory() as out:
            wall = time.perf_counter()
            report = fficube.sync.cut_targets("s3://cubes/cube.fits", fficube.views.cut.targets_of(targets), size,
                                              out_dir=out, storage_options={"endpoint_url": proxy.url})
            return len(report.paths) / (time.perf_counter() - wall), report.requests
    finally:
        proxy.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=60)
    parser.add_argument("--n-ffis", type=int, default=400)
    parser.add_argument("--shape", type=int, nargs=2, default=(80, 96), metavar=("ROWS", "COLS"))
    parser.add_argument("--size", type=int, default=11)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="also cut from S3 (moto) behind a proxy with --latency")
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_sector(root / "ffis", SectorSpec(n_ffis=args.n_ffis, shape=tuple(args.shape), no_wcs=()))
        cube = str(root / "tess-s0001-1-1-cube.fits")
        fficube.make_cube(paths, cube, sector=1)
        Path(cube).read_bytes()  # into the page cache
        targets = positions(cube, args.targets)
        print(f"cube: {args.shape[0]} x {args.shape[1]} pixels x {args.n_ffis} FFIs "
              f"({os.path.getsize(cube) / 1e6:.0f} MB); {args.targets} targets, {args.size} x {args.size}")
        times: dict[str, list[tuple[float, float]]] = {"fficube": [], "astrocut": []}
        for i in range(args.repeat):
            ours_dir, theirs_dir = root / f"ours{i}", root / f"theirs{i}"
            ours: list[str] = []
            theirs: list[str] = []
            times["fficube"].append(measure(lambda d=ours_dir, o=ours: o.extend(
                fficube.sync.cut_cube(cube, targets, args.size, out_dir=d))))
            times["astrocut"].append(measure(lambda d=theirs_dir, t=theirs: t.extend(
                astrocut_all(cube, targets, args.size, d))))
            check_equal(ours, theirs)
        print(f"{'tool':10} {'wall s':>8} {'user+sys s':>11}   (median of {args.repeat}; all TPFs equal)")
        medians = {}
        for tool, runs in times.items():
            wall, used = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            medians[tool] = wall
            print(f"{tool:10} {wall:8.2f} {used:11.2f}")
        print(f"fficube is {medians['astrocut'] / medians['fficube']:.1f}x faster (wall)")
        if args.s3:
            rate, requests = s3_rate(cube, targets, args.size, args.latency)
            print(f"s3 (moto behind a proxy, {args.latency * 1000:.0f} ms per request): {rate:.1f} cutouts/s, "
                  f"{requests} requests; astrocut: cannot read the bucket (anonymous only)")


if __name__ == "__main__":
    main()
