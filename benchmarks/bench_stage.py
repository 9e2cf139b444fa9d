"""Staged vs direct builds from S3: GETs per FFI and wall time, under a network model.

    python benchmarks/bench_stage.py --n 64 --rows 256 --memory 24MB --latency 0.05 --bandwidth 80MB --repeat 3

Uploads ``--n`` synthetic SPOC FFIs (``--rows`` x 2136) to moto's S3 server on 127.0.0.1
and builds their cube into a local file, directly from ``s3://`` and staged (each FFI
copied whole into a local directory first), through a proxy that models a distant
store: ``--latency`` seconds before every response and ``--bandwidth`` bytes per second
per connection (tests/s3_proxy.py).  Many FFIs and a small budget give what a 200-second
sector gives at scale: small row-range GETs in a direct build.  Builds alternate,
``--repeat`` times; medians are reported.  moto is a Python server on the same cores,
so absolute rates say little; the GET counts and the ratio are the point.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--memory", default="24MB")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--bandwidth", default="80MB", help="per connection, e.g. 80MB (per second); 0: no cap")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    import boto3
    from moto.server import ThreadedMotoServer
    from s3_proxy import S3Proxy

    import fficube
    from fficube.synthetic import SectorSpec, make_sector
    from fficube.units import parse_size

    bandwidth = 0.0 if args.bandwidth in ("0", "") else float(parse_size(args.bandwidth))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
    client.create_bucket(Bucket="bench-ffis")
    runs: dict[str, list[dict]] = {"direct": [], "staged": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_sector(Path(tmp) / "ffis", SectorSpec(n_ffis=args.n, shape=(args.rows, 2136), no_wcs=()))
        for path in paths:
            client.upload_file(path, "bench-ffis", f"ffi/{Path(path).name}")
        input_bytes = sum(os.path.getsize(p) for p in paths)
        shutil.rmtree(Path(tmp) / "ffis")
        for round_ in range(args.repeat):
            for kind in runs:
                proxy = S3Proxy((host, port), latency=args.latency, bandwidth=bandwidth)
                try:
                    start = time.perf_counter()
                    result = fficube.make_cube(
                        "s3://bench-ffis/ffi/", Path(tmp) / "cube.fits", max_memory=args.memory, overwrite=True,
                        storage_options={"endpoint_url": proxy.url},
                        stage=Path(tmp) / "stage" if kind == "staged" else None,
                    )
                    wall = time.perf_counter() - start
                    gets = sum(p.startswith("GET /bench-ffis/ffi/") for p in proxy.state.paths)
                finally:
                    proxy.close()
                run = {"wall": wall, "gets": gets, "fetched": (result.stage_bytes or result.bytes_read) / input_bytes,
                       "blocks": result.blocks}
                runs[kind].append(run)
                print(f"round {round_ + 1}, {kind}: {wall:.2f} s, {gets} GETs, {result.blocks} blocks",
                      file=sys.stderr)
    server.stop()

    model = f"{args.latency * 1000:.0f} ms per request" + (f" + {args.bandwidth}/s per connection" if bandwidth else "")
    print(f"\n{args.n} FFIs of {args.rows} x 2136 ({input_bytes / 1e9:.2f} GB) from moto S3 through a proxy adding "
          f"{model}; max_memory {args.memory}; medians of {args.repeat}\n")
    print("| build | wall s | MB/s | GETs of FFIs | GETs per FFI | fetched / input | blocks |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, results in runs.items():
        wall = statistics.median(r["wall"] for r in results)
        gets = statistics.median(r["gets"] for r in results)
        print(f"| {kind} | {wall:.2f} | {input_bytes / wall / 1e6:.0f} | {gets:.0f} | {gets / args.n:.1f} | "
              f"{statistics.median(r['fetched'] for r in results):.3f} | {results[0]['blocks']} |")


if __name__ == "__main__":
    main()
