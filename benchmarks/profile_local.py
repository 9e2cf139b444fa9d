"""Where a local build's time goes: py-spy samples of every thread, summed by stage.

    pip install py-spy
    python benchmarks/profile_local.py --n 100 --memory 1GB

Uses the FFIs that ``bench_local.py`` writes (``--data``), samples a build at 200 Hz
with py-spy (all threads, idle waits left out) and prints the share of busy samples
per pipeline stage.  Samples count a thread that is ready to run but waiting for a
core as busy, so the shares are of thread time, not of CPU time.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: (stage, what marks it in a stack), first match wins.
STAGES = [
    ("assemble: placing slabs into blocks", ("place_group", "place (fficube", "place_base")),
    ("write: data checksum", ("data_sum",)),
    ("write: pwrite into the partial file", ("LocalSink._write",)),
    ("write: flush and journal", ("LocalSink._record", "LocalJournal.save")),
    ("fetch: positional reads", ("_preadinto", "LocalSource")),
    ("scan: headers", ("scan_steps", "scan_file", "header_at", "parse_header")),
    ("plan: table and headers", ("make_plan", "column_values", "encode_")),
    ("imports and start-up", ("_bootstrap",)),
]
IDLE = ("thread.py:81", "Condition.wait", "select", "_worker")

BUILD = """
import sys, json, fficube
paths, out, budget = json.loads(sys.argv[1])
fficube.make_cube(paths, out, max_memory=budget, overwrite=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--memory", default="1GB")
    parser.add_argument("--data", type=Path, default=Path("bench-data"))
    args = parser.parse_args()
    marker = args.data / f"ffis-{args.n}" / f"ready-{args.n}.json"
    if not marker.exists():
        raise SystemExit(f"no FFIs at {marker.parent}: run benchmarks/bench_local.py --n {args.n} first")
    paths = json.loads(marker.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "samples.txt"
        payload = json.dumps([paths, str(args.data / "cube.fits"), args.memory])
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        subprocess.run([spy, "record", "-f", "raw", "-r", "200", "--threads", "-o", str(raw), "--",
                        sys.executable, "-c", BUILD, payload], check=True, capture_output=True)
        stages: collections.Counter[str] = collections.Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if any(mark in frames[-1] for mark in IDLE):
                continue
            total += int(count)
            text = ";".join(frames)
            stage = next((name for name, marks in STAGES if any(m in text for m in marks)), "other")
            stages[stage] += int(count)
    (args.data / "cube.fits").unlink(missing_ok=True)
    print(f"{args.n} FFIs, max_memory {args.memory}: {total} busy samples at 200 Hz\n")
    print("| stage | share of busy thread time |")
    print("|---|---:|")
    for stage, count in stages.most_common():
        print(f"| {stage} | {count / total:.0%} |")


if __name__ == "__main__":
    main()
