"""S3 benchmark: the same build from a local S3 server with and without added latency.

    python benchmarks/bench_s3.py --n 32 --memory 100MB --latency 0,0.05 --repeat 3

Uploads ``--n`` synthetic SPOC FFIs (``--rows`` x 2136) to moto's S3 server on
127.0.0.1 and builds their cube from ``s3://`` through a proxy that adds ``--latency``
seconds before every response (tests/s3_proxy.py), in alternation, ``--repeat`` times.
Reports wall time, throughput (input bytes / wall), requests, the most requests in
flight, and bytes fetched / input bytes.  moto is a Python server on the same 2 cores,
so absolute rates say little; the ratio between latencies is the point: with enough
requests in flight, latency should cost little.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--latency", default="0,0.05")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", default="100MB")
    parser.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args()

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    import boto3
    from moto.server import ThreadedMotoServer
    from s3_proxy import S3Proxy

    import fficube
    from fficube.synthetic import SectorSpec, make_sector

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
    client.create_bucket(Bucket="bench-ffis")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_sector(Path(tmp) / "ffis", SectorSpec(n_ffis=args.n, shape=(args.rows, 2136), no_wcs=()))
        for path in paths:
            client.upload_file(path, "bench-ffis", f"ffi/{Path(path).name}")
        input_bytes = sum(os.path.getsize(p) for p in paths)
        latencies = [float(x) for x in args.latency.split(",")]
        results: dict[float, list[dict]] = {lat: [] for lat in latencies}
        for round_ in range(args.repeat):
            for latency in latencies:
                proxy = S3Proxy((host, port), latency=latency)
                try:
                    start = time.perf_counter()
                    result = fficube.make_cube(
                        "s3://bench-ffis/ffi/", Path(tmp) / "cube.fits", max_memory=args.memory, overwrite=True,
                        concurrency=args.concurrency, storage_options={"endpoint_url": proxy.url},
                    )
                    wall = time.perf_counter() - start
                finally:
                    proxy.close()
                run = {"blocks": result.blocks, "wall": wall, "rate": input_bytes / wall, "requests": result.requests,
                       "in_flight": result.max_in_flight, "fetched": result.bytes_read / input_bytes}
                results[latency].append(run)
                print(f"round {round_ + 1}, latency {latency * 1000:.0f} ms: {wall:.2f} s, "
                      f"{run['rate'] / 1e6:.0f} MB/s, {result.requests} requests", file=sys.stderr)
    server.stop()

    base = statistics.median(r["rate"] for r in results[latencies[0]])
    print(f"\n{args.n} FFIs of {args.rows} x 2136 ({input_bytes / 1e9:.2f} GB) from moto S3, "
          f"max_memory {args.memory}, medians of {args.repeat}\n")
    print("| added latency | blocks | wall s | MB/s | vs no latency | requests | most in flight | fetched / input |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for latency, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        print(f"| {latency * 1000:.0f} ms | {runs[0]['blocks']} | {statistics.median(r['wall'] for r in runs):.2f} | {rate / 1e6:.0f} | "
              f"{rate / base:.0%} | {runs[0]['requests']} | {max(r['in_flight'] for r in runs)} | "
              f"{statistics.median(r['fetched'] for r in runs):.3f} |")


if __name__ == "__main__":
    main()
