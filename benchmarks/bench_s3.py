"""S3 benchmark: builds from S3 through a proxy that models a distant store.

    python benchmarks/bench_s3.py --n 48 --rows 512 --memory 256MB --repeat 2
    python benchmarks/bench_s3.py --scenarios model --concurrency 8,16,32,64   # choose the default
    python benchmarks/bench_s3.py --to local --memory 16MB,64MB,256MB --scenarios model,tail  # the slow tail

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

The cube goes to S3 (``--to s3``, S3 -> S3) or to a local file (``--to local``), at
each budget of ``--memory``.  The proxy counts what went over the wire: ranged GETs,
those it held (``slowed``), and the GET bytes sent beyond one answer to each distinct
request (hedges and retries: "extra bytes", as a share of the input's).

Every build runs in a child process, so its CPU time (user and sys) and peak RSS are
fficube's alone (:mod:`measure`): moto and the proxy run in this process, and their RSS
is kept out of the child's peak.  A local
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
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import measured

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
    """Run one build in a child process: its result, wall time, CPU time (user, sys) and peak RSS (MB)."""
    measures, out = measured([sys.executable, "-c", BUILD, json.dumps(payload)], capture=True)
    return {**json.loads(out), **measures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--memory", default="256MB", help="comma-separated budgets")
    parser.add_argument("--to", choices=("s3", "local"), default="s3", help="where the cube goes")
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
    budgets = args.memory.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_sector(Path(tmp) / "ffis", SectorSpec(n_ffis=args.n, shape=(args.rows, 2136), no_wcs=()))
        for path in paths:
            client.upload_file(path, "bench", f"ffi/{Path(path).name}")
        input_bytes = sum(os.path.getsize(p) for p in paths)
        cases = [(s, c, b) for b in budgets for s in scenarios for c in levels]
        results: dict[tuple[str, int | None, str], list[dict]] = {case: [] for case in cases}
        local: list[dict] = []
        reads: list[dict] = []
        for round_ in range(args.repeat):
            if not args.no_local:
                local.append(child([paths, str(Path(tmp) / "local.fits"), budgets[-1], None, {}]))
                proxy = S3Proxy((host, port))
                try:
                    reads.append(child(["s3://bench/ffi/", str(Path(tmp) / "from-s3.fits"), budgets[-1], None,
                                        {"endpoint_url": proxy.url}]))
                finally:
                    proxy.close()
            for scenario, concurrency, budget in cases:
                proxy = S3Proxy((host, port), **SCENARIOS[scenario])
                out = f"s3://bench/cube-{scenario}.fits" if args.to == "s3" else str(Path(tmp) / "cube.fits")
                try:
                    run = child(["s3://bench/ffi/", out, budget, concurrency, {"endpoint_url": proxy.url}])
                finally:
                    proxy.close()
                state = proxy.state
                run.update(wire_gets=state.max_in_flight_by.get("GET", 0),
                           wire_parts=state.max_in_flight_by.get("UploadPart", 0),
                           wire_requests=state.requests, slowed=state.slowed, wire_ranged=state.ranged_gets,
                           extra_bytes=state.extra_get_bytes)
                results[(scenario, concurrency, budget)].append(run)
                print(f"round {round_ + 1} {scenario} c={concurrency} {budget}: {run['wall']:.2f} s, "
                      f"{run['user']:.1f}+{run['sys']:.1f} s CPU, {run['requests']} GETs, {run['hedges']} hedged, "
                      f"{run['wire_gets']} GETs / {run['wire_parts']} parts in flight, {run['slowed']} slowed, "
                      f"{run['extra_bytes'] / input_bytes:.1%} extra bytes, {run['rss']:.0f} MB peak RSS", file=sys.stderr)
    server.stop()

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    gb = input_bytes / 1e9
    moved = (2 if args.to == "s3" else 1) * gb  # read once (and written once, to S3)
    print(f"\n{args.n} FFIs of {args.rows} x 2136 ({gb:.2f} GB) S3 -> {args.to} through the proxy, "
          f"{os.cpu_count()} cores, medians of {args.repeat}\n")
    print("| max_memory | network model | concurrency | wall s | MB/s | vs no delay | vs model | GETs | mean GET "
          "| slowed | hedged | extra GET bytes | GETs in flight | parts in flight | user+sys s | CPU s per GB moved "
          "| peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (scenario, concurrency, budget), runs in results.items():
        wall, user, sys_ = med(runs, "wall"), med(runs, "user"), med(runs, "sys")
        base = results.get(("none", concurrency, budget))
        model = results.get(("model", concurrency, budget))
        ratio = f"{med(base, 'wall') / wall:.0%}" if base else "-"
        vs_model = f"{wall / med(model, 'wall') - 1:+.1%}" if model and scenario != "model" else "-"
        mean_get = med(runs, "bytes_read") / med(runs, "requests") / 1e3
        print(f"| {budget} | {LABELS[scenario]} | {concurrency or 'default'} | {wall:.2f} | "
              f"{input_bytes / wall / 1e6:.0f} | {ratio} | {vs_model} | {med(runs, 'wire_ranged'):.0f} | "
              f"{mean_get:.0f} kB | {med(runs, 'slowed'):.0f} | {med(runs, 'hedges'):.0f} | "
              f"{med(runs, 'extra_bytes') / input_bytes:.1%} | {max(r['wire_gets'] for r in runs)} | "
              f"{max(r['wire_parts'] for r in runs)} | {user:.1f}+{sys_:.1f} | {(user + sys_) / moved:.2f} | "
              f"{max(r['rss'] for r in runs):.0f} |")
    if local:
        user, sys_ = med(local, "user"), med(local, "sys")
        user_r, sys_r = med(reads, "user"), med(reads, "sys")
        for label, runs, u, s_ in (("local files -> local file", local, user, sys_),
                                   ("S3 -> local file (no delay)", reads, user_r, sys_r)):
            print(f"| {budgets[-1]} | {label} | - | {med(runs, 'wall'):.2f} | "
                  f"{input_bytes / med(runs, 'wall') / 1e6:.0f} | - | - | {med(runs, 'requests'):.0f} | "
                  f"{med(runs, 'bytes_read') / med(runs, 'requests') / 1e3:.0f} kB | - | {med(runs, 'hedges'):.0f} | "
                  f"- | - | - | {u:.1f}+{s_:.1f} | {(u + s_) / gb:.2f} | {max(r['rss'] for r in runs):.0f} |")
        extra = user_r + sys_r - user - sys_
        print(f"\nfficube CPU per GET (S3 -> local file minus local -> local, no delay): {extra:.2f} s / "
              f"{med(reads, 'requests'):.0f} GETs = {1000 * extra / med(reads, 'requests'):.2f} ms; "
              f"CPU per GB read: S3 {(user_r + sys_r) / gb:.2f} s, local {(user + sys_) / gb:.2f} s "
              f"({(user_r + sys_r) / (user + sys_):.2f}x)")


if __name__ == "__main__":
    main()
