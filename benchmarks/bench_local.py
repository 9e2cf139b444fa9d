"""Local build benchmark: fficube vs astrocut vs the copy floor, on full-size FFIs.

    python benchmarks/bench_local.py --n 100 --memory 1GB,4GB --repeat 3
    python benchmarks/bench_local.py --n 100 --tools cat,fficube --out-dir /dev/shm/bench
    python benchmarks/bench_local.py --n 12000 --rows 64 --sparse --tools cat,fficube --memory 4GB

Writes ``--n`` synthetic SPOC FFIs (``--rows`` x 2136, float32; 2078 rows, about 35.5 MB
each, by default) once into ``--data`` (reused on later runs), then runs, in
alternation, ``--repeat`` times:

* ``cat``: every input byte read once and every output byte written once
  (``cat`` of all inputs into one file, then ``sync`` of that file, as fficube flushes
  the cube to disk before renaming it into place): the floor for this machine;
* ``fficube`` at each ``--memory``;
* ``stats``: ``fficube`` with ``--pixel-stats`` (per-pixel statistics made in the same
  pass, written beside the cube) at each ``--memory``;
* astrocut's ``CubeFactory`` at each ``--memory`` (as its ``max_memory`` in GB);
* ``prelude`` and ``write`` (with ``--tools ...,floor``), the parts of fficube's own floor
  on this machine.  ``prelude`` is a fficube process up to its frozen plan (interpreter,
  imports, header scan, planning; it stops before the first data byte).  ``write`` writes
  as many bytes as ``cat`` does (about the cube's size) once, by one writer, from one warm
  64 MB buffer, with direct I/O where the filesystem takes it (as fficube's writer), then
  ``fsync``; it is timed inside its process.  fficube can hide its reads and
  transposition behind the writer, not the prelude, so ``prelude + write`` is as fast as
  fficube can be here; the table's last line gives it against ``cat``.

With ``--sparse`` the FFIs are sparse files (real headers, zero images but for three
marker rows, the rest a hole), so that a prime-mission or 200-s sector fits a small
disk: reading a hole costs the kernel about what reading cached data does.  The cube
goes to ``--out-dir`` (default ``--data``): compare a disk path with tmpfs
(``/dev/shm/...``) to separate the disk's writeback from the CPU's work.

Before each run the inputs are read once, untimed, so that every run finds them in the
page cache (unless they take more than 3/4 of the memory).  Each run is a separate
process; wall time, user and system CPU time and its own peak RSS come from
:mod:`measure` (which keeps this process's size out of a child's peak).  Prints a
Markdown table of medians, ratios to ``cat`` and CPU seconds
per GB of cube.

``--idle S`` waits S seconds before each timed run.  On a VM that gives freed memory
back to its host (free page reporting), a run's first touch of fresh memory costs
seconds per GB, but memory that the run before freed moments ago is cheap: in back-to-back
alternation the tool that needs more memory pays for what the other one recycles.
After 10 s idle every run starts on fresh memory, as a user's build does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import measured

FFICUBE = """
import sys, json, fficube
paths, out, budget, *stats = json.load(open(sys.argv[1]))
fficube.make_cube(paths, out, max_memory=budget, overwrite=True, pixel_stats=stats[0] if stats else None)
"""
ASTROCUT = """
import sys, json, warnings
from astrocut import CubeFactory
warnings.simplefilter("ignore")  # astrocut warns once per FFI about strings it cuts (after astropy's own filters)
paths, out, budget = json.load(open(sys.argv[1]))
CubeFactory().make_cube(paths, out, max_memory=budget / 1e9, verbose=False)
"""
# fficube up to its plan: the start-up a build pays before its first data byte.
PRELUDE = """
import sys, json, fficube, fficube.build as build

class Planned(Exception):
    pass

def plan_then_stop(*args, **kwargs):
    build_plan(*args, **kwargs)
    raise Planned

build_plan, build.make_plan = build.make_plan, plan_then_stop
paths, out, budget = json.load(open(sys.argv[1]))
try:
    fficube.make_cube(paths, out, max_memory=budget, overwrite=True)
except Planned:
    pass
"""
# The inputs' bytes (about the cube's) written once, by one writer, from one warm buffer, then made durable:
# with direct I/O where the filesystem takes it, as fficube's local sink writes.
WRITE = """
import mmap, os, sys, time
size, out = int(sys.argv[1]) // 4096 * 4096, sys.argv[2]
chunk = mmap.mmap(-1, 64 * 2**20)  # page-aligned, as direct I/O needs
chunk.write(b"\\x01" * len(chunk))
try:
    fd = os.open(out, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_DIRECT)
except OSError:
    fd = os.open(out, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
start = time.perf_counter()
done = 0
while done < size:
    done += os.pwrite(fd, memoryview(chunk)[:size - done], done)
os.fsync(fd)
print(time.perf_counter() - start)
os.close(fd)
"""

MAKE_INPUTS = """
import json, sys
from fficube.synthetic import FULL_SHAPE, SectorSpec, make_sector
directory, n, rows, sparse, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
spec = SectorSpec(n_ffis=n, shape=(rows, FULL_SHAPE[1]), no_wcs=(1,), sparse=sparse)
paths = make_sector(directory, spec)
open(marker, "w").write(json.dumps(paths))
"""
FULL_ROWS = 2078
UNITS = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    number = text.rstrip("kKmMgGiBb")
    return int(float(number) * UNITS.get(text[len(number):].lower(), 1))


def inputs_dir(data: Path, n: int, rows: int, sparse: bool) -> Path:
    """Where ``n`` FFIs of this kind live (the default kind keeps its old name)."""
    name = f"ffis-{n}" + (f"-r{rows}" if rows != FULL_ROWS else "") + ("-sparse" if sparse else "")
    return data / name


def make_inputs(directory: Path, n: int, rows: int = FULL_ROWS, sparse: bool = False) -> list[str]:
    marker = directory / f"ready-{n}.json"
    if not marker.exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        argv = [sys.executable, "-c", MAKE_INPUTS, str(directory), str(n), str(rows), "1" if sparse else "0", str(marker)]
        subprocess.run(argv, check=True)
    return json.loads(marker.read_text())


def run(argv: list[str], timed_inside: bool = False) -> dict:
    """Run a command; wall seconds, user and system CPU seconds and peak RSS (MB) of the process.

    With ``timed_inside`` the wall time is the number the command prints (its own timing).
    """
    measures, out = measured(argv, capture=timed_inside)
    return {**measures, "wall": float(out)} if timed_inside else measures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--memory", default="1GB,4GB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tools", default="cat,fficube,astrocut", help="of cat, fficube, stats, astrocut, floor")
    parser.add_argument("--data", type=Path, default=Path("bench-data"))
    parser.add_argument("--out-dir", type=Path, default=None, help="where the cube goes (default: --data)")
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="rows per FFI (64: a 200-s sector's test geometry)")
    parser.add_argument("--sparse", action="store_true", help="inputs as sparse files (headers and marker rows)")
    parser.add_argument("--idle", type=float, default=0.0,
                        help="seconds to wait before each timed run (see the module's docstring)")
    args = parser.parse_args()

    paths = make_inputs(inputs_dir(args.data, args.n, args.rows, args.sparse), args.n, args.rows, args.sparse)
    out_dir = args.out_dir or args.data
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "cube.fits"
    budgets = [parse_size(m) for m in args.memory.split(",")]
    input_bytes = sum(os.path.getsize(p) for p in paths)
    cases: list[tuple[str, list[str]]] = []
    tools = args.tools.split(",")
    # Paths go through files: 12,000 of them do not fit a command line.
    listing = args.data / "bench-paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    if "cat" in tools:
        cases.append(("cat", ["sh", "-c", f'xargs -d "\\n" cat < "{listing}" > "{out}" && sync "{out}"']))
    for budget in budgets:
        payload_file = args.data / f"bench-payload-{budget}.json"
        payload_file.write_text(json.dumps([paths, str(out), budget]))
        payload = str(payload_file)
        if "fficube" in tools:
            cases.append((f"fficube {budget / 1e9:g} GB", [sys.executable, "-c", FFICUBE, payload]))
        if "stats" in tools:
            stats_file = args.data / f"bench-payload-{budget}-stats.json"
            stats_file.write_text(json.dumps([paths, str(out), budget, str(out_dir / "stats.fits")]))
            cases.append((f"fficube --pixel-stats {budget / 1e9:g} GB", [sys.executable, "-c", FFICUBE,
                                                                        str(stats_file)]))
        if "astrocut" in tools:
            cases.append((f"astrocut {budget / 1e9:g} GB", [sys.executable, "-c", ASTROCUT, payload]))
        if "floor" in tools:
            cases.append((f"prelude {budget / 1e9:g} GB", [sys.executable, "-c", PRELUDE, payload]))
    if "floor" in tools:
        cases.append(("write", [sys.executable, "-c", WRITE, str(input_bytes), str(out)]))

    results: dict[str, list[dict]] = {name: [] for name, _ in cases}
    # Inputs that fill most of the memory cannot all stay cached (1,300 full-size FFIs).
    warm = input_bytes < 0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for round_ in range(args.repeat):
        for name, argv in cases:  # alternate, so that drift hits every tool alike
            for old in (out, out_dir / "stats.fits"):
                if old.exists():
                    old.unlink()
            subprocess.run(["sync"], check=True)
            if warm:
                # Untimed: put the inputs back in the page cache.  A 12,000-FFI cube written
                # through the cache (``cat``'s) evicts inputs that the next run would then
                # read again at a cost the other tool did not pay.
                subprocess.run(["sh", "-c", f'xargs -d "\\n" cat < "{listing}" > /dev/null'], check=True)
            time.sleep(args.idle)
            results[name].append(run(argv, timed_inside=name == "write"))
            r = results[name][-1]
            print(f"round {round_ + 1} {name}: {r['wall']:.1f} s wall, {r['user']:.1f} s user, "
                  f"{r['sys']:.1f} s sys, {r['rss']:.0f} MB", file=sys.stderr)
    if out.exists():
        out.unlink()

    floor = statistics.median(r["wall"] for r in results["cat"]) if "cat" in results else None
    kind = f"{args.rows} x 2136" + (", sparse" if args.sparse else "")
    print(f"\n{args.n} FFIs of {kind} ({input_bytes / 1e9:.2f} GB in), output on {out_dir}, "
          f"{os.cpu_count()} cores, medians of {args.repeat}\n")
    print("| run | wall s | user s | sys s | CPU s per GB | peak RSS MB | x cat |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    gb = input_bytes / 1e9
    for name, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        user = statistics.median(r["user"] for r in runs)
        sys_ = statistics.median(r["sys"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        rss = max(r["rss"] for r in runs)
        ratio = f"{wall / floor:.2f}" if floor else "-"
        print(f"| {name} | {wall:.2f} | {user:.2f} | {sys_:.2f} | {cpu / gb:.2f} | {rss:.0f} | {ratio} |")
    if "write" in results and floor:
        write = statistics.median(r["wall"] for r in results["write"])
        for name in (n for n in results if n.startswith("prelude")):
            prelude = statistics.median(r["wall"] for r in results[name])
            print(f"\nfficube's floor at {name[len('prelude '):]}: prelude + write = {prelude + write:.2f} s, "
                  f"{(prelude + write) / floor:.2f}x cat")


if __name__ == "__main__":
    main()
