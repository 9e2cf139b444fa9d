"""S3 benchmark: S3 -> S3 builds through a proxy that models a distant store.

    python benchmarks/bench_s3.py --n 48 --rows 512 --memory 256MB --repeat 2
    python benchmarks/bench_s3.py --scenarios model --concurrency 8,16,32,64   # choose the default

Uploads ``--n`` synthetic SPOC FFIs (``--rows`` x 2136) to moto's S3 server on
127.0.0.1, then builds their cube from ``s3://`` into ``s3://`` through the test proxy
(tests/s3_proxy.py), once per scenario and ``--repeat`` times, in alternation:

* ``none``: no delay;
* ``model``: 50 ms per request and 80 MB/s per connection (one S3 connection moves
  roughly 50-100 MB/s), for request and response bodies alike;
* ``tail``: the same, plus 1% of GETs held 2 s longer, each request drawn on its own
  (S3's slow tail: a request sent again, a hedge, is as likely to be fast as any other);
* ``slowserver``: the same, but 1% of ranges held 2 s at every attempt (a hedge cannot
  win, so only the pipeline's overlap hides them; not in the default run).

Every build runs in a child process, so its CPU time (user and sys, from
``os.wait4``) is fficube's alone: moto and the proxy run in this process.  A local
build of the same FFIs (files -> file) gives the CPU per GB without requests, and a
build from S3 into a local file (no delay) the CPU with GETs only: their difference,
per GET, is what each S3 read costs fficube.  (Uploads over plain HTTP cost more CPU
than over HTTPS: botocore then signs a SHA-256 of every part's body.)  The proxy
reports what was on the wire: requests, GETs and UploadParts in flight at once.
moto is a Python server on the same cores, so absolute rates say little about AWS;
the ratios between scenarios are the point.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SCENARIOS = {
    "none": {},
    "model": {"latency": 0.05, "bandwidth": 80e6},
    "tail": {"latency": 0.05, "bandwidth": 80e6, "slow": 0.01, "slow_seconds": 2.0},
    "slowserver": {"latency": 0.05, "bandwidth": 80e6, "slow": 0.01, "slow_seconds": 2.0, "slow_every_attempt": True},
}
LABELS = {"none": "no delay", "model": "50 ms + 80 MB/s per connection", "tail": "... + 1% of GETs held 2 s",
          "slowserver": "... + 1% of ranges held 2 s at every attempt"}
BUILD = """
import json, sys, fficube
inputs, output, budget, concurrency, options = json.loads(sys.argv[1])
r = fficube.make_cube(inputs, output, max_memory=budget, concurrency=concurrency, overwrite=True,
                      storage_options=options, quality=False)
print(json.dumps({"requests": r.requests, "hedges": r.hedges, "retries": r.retries, "bytes_read": r.bytes_read,
                  "bytes_written": r.bytes_written, "blocks": r.blocks, "in_flight": r.max_in_flight}))
"""


def child(payload: list) -> dict:
    """Run one build in a child process: its result, wall time and CPU time (user, sys)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", BUILD, json.dumps(payload)], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build failed: {payload[:2]}")
    return {**json.loads(out), "wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--memory", default="256MB")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--scenarios", default="none,model,tail")
    parser.add_argument("--concurrency", default="", help="comma-separated; empty: fficube's default")
    parser.add_argument("--no-local", action="store_true", help="skip the local reference build")
    args = parser.parse_args()

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    import boto3
    from moto.server import ThreadedMotoServer
    from s3_proxy import S3Proxy

    from fficube.synthetic import SectorSpec, make_sector

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
    client.create_bucket(Bucket="bench")
    scenarios = args.scenarios.split(",")
    levels: list[int | None] = [int(c) for c in args.concurrency.split(",") if c] or [None]
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_sector(Path(tmp) / "ffis", SectorSpec(n_ffis=args.n, shape=(args.rows, 2136), no_wcs=()))
        for path in paths:
            client.upload_file(path, "bench", f"ffi/{Path(path).name}")
        input_bytes = sum(os.path.getsize(p) for p in paths)
        cases = [(s, c) for s in scenarios for c in levels]
        results: dict[tuple[str, int | None], list[dict]] = {case: [] for case in cases}
        local: list[dict] = []
        reads: list[dict] = []
        for round_ in range(args.repeat):
            if not args.no_local:
                local.append(child([paths, str(Path(tmp) / "local.fits"), args.memory, None, {}]))
                proxy = S3Proxy((host, port))
                try:
                    reads.append(child(["s3://bench/ffi/", str(Path(tmp) / "from-s3.fits"), args.memory, None,
                                        {"endpoint_url": proxy.url}]))
                finally:
                    proxy.close()
            for scenario, concurrency in cases:
                proxy = S3Proxy((host, port), **SCENARIOS[scenario])
                try:
                    run = child(["s3://bench/ffi/", f"s3://bench/cube-{scenario}.fits", args.memory, concurrency,
                                 {"endpoint_url": proxy.url}])
                finally:
                    proxy.close()
                state = proxy.state
                run.update(wire_gets=state.max_in_flight_by.get("GET", 0),
                           wire_parts=state.max_in_flight_by.get("UploadPart", 0),
                           wire_requests=state.requests, slowed=state.slowed)
                results[(scenario, concurrency)].append(run)
                print(f"round {round_ + 1} {scenario} c={concurrency}: {run['wall']:.2f} s, "
                      f"{run['user']:.1f}+{run['sys']:.1f} s CPU, {run['requests']} GETs, {run['hedges']} hedged, "
                      f"{run['wire_gets']} GETs / {run['wire_parts']} parts in flight", file=sys.stderr)
    server.stop()

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    gb = input_bytes / 1e9
    moved = 2 * gb  # read once, written once
    print(f"\n{args.n} FFIs of {args.rows} x 2136 ({gb:.2f} GB) S3 -> S3 through the proxy, "
          f"max_memory {args.memory}, {os.cpu_count()} cores, medians of {args.repeat}\n")
    print("| network model | concurrency | wall s | MB/s | vs no delay | GETs | mean GET | hedged "
          "| GETs in flight | parts in flight | user+sys s | CPU s per GB moved |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = {c: med(results[("none", c)], "wall") for c in levels if ("none", c) in results}
    for (scenario, concurrency), runs in results.items():
        wall, user, sys_ = med(runs, "wall"), med(runs, "user"), med(runs, "sys")
        ratio = f"{base[concurrency] / wall:.0%}" if concurrency in base else "-"
        mean_get = med(runs, "bytes_read") / med(runs, "requests") / 1e3
        print(f"| {LABELS[scenario]} | {concurrency or 'default'} | {wall:.2f} | {input_bytes / wall / 1e6:.0f} | "
              f"{ratio} | {med(runs, 'requests'):.0f} | {mean_get:.0f} kB | {med(runs, 'hedges'):.0f} | "
              f"{max(r['wire_gets'] for r in runs)} | {max(r['wire_parts'] for r in runs)} | "
              f"{user:.1f}+{sys_:.1f} | {(user + sys_) / moved:.2f} |")
    if local:
        user, sys_ = med(local, "user"), med(local, "sys")
        print(f"| local files -> local file | - | {med(local, 'wall'):.2f} | {input_bytes / med(local, 'wall') / 1e6:.0f}"
              f" | - | {med(local, 'requests'):.0f} | - | - | - | - | {user:.1f}+{sys_:.1f} | "
              f"{(user + sys_) / moved:.2f} |")
        user_r, sys_r = med(reads, "user"), med(reads, "sys")
        print(f"| S3 -> local file (no delay) | default | {med(reads, 'wall'):.2f} | "
              f"{input_bytes / med(reads, 'wall') / 1e6:.0f} | - | {med(reads, 'requests'):.0f} | "
              f"{med(reads, 'bytes_read') / med(reads, 'requests') / 1e3:.0f} kB | {med(reads, 'hedges'):.0f} | - | - | "
              f"{user_r:.1f}+{sys_r:.1f} | {(user_r + sys_r) / moved:.2f} |")
        extra = user_r + sys_r - user - sys_
        print(f"\nfficube CPU per GET (S3 -> local file minus local -> local, no delay): {extra:.2f} s / "
              f"{med(reads, 'requests'):.0f} GETs = {1000 * extra / med(reads, 'requests'):.2f} ms")

if __name__ == "__main__":
    main()
