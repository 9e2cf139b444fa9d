"""Local reads: fficube's LocalSource (os.preadv on a private thread pool) against aiofiles.

Reads the rows of every block of N full-size synthetic FFIs, as a build does (one
range per layer per FFI per block, at most 4 in flight), once with each reader, in
alternation, and reports wall time and the process's user + sys CPU for each.  The
inputs are read once first, so both readers read from the page cache.

    python benchmarks/bench_aiofiles.py --n 40 --repeat 3

aiofiles is not a dependency of fficube: install it to run this (pip install aiofiles).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import scan_paths

from fficube.plan import Limits, make_plan
from fficube.sources.local import LocalSource
from fficube.synthetic import FULL_SHAPE, SectorSpec, make_sector

IN_FLIGHT = 4


async def read_with_local_source(ranges: list[tuple[str, int, int]]) -> int:
    source = LocalSource(IN_FLIGHT)
    try:
        buffers = [bytearray(stop - start) for _, start, stop in ranges[:IN_FLIGHT]]
        done = 0

        async def one(i: int, path: str, start: int, stop: int) -> None:
            nonlocal done
            await source.readinto(path, start, memoryview(buffers[i % IN_FLIGHT])[: stop - start])
            done += stop - start

        for k in range(0, len(ranges), IN_FLIGHT):
            await asyncio.gather(*(one(k + i, *r) for i, r in enumerate(ranges[k : k + IN_FLIGHT])))
        return done
    finally:
        await source.aclose()


async def read_with_aiofiles(ranges: list[tuple[str, int, int]]) -> int:
    import aiofiles

    done = 0
    handles = {}
    try:
        for path in {p for p, _, _ in ranges}:
            handles[path] = await aiofiles.open(path, "rb", buffering=0)

        async def one(path: str, start: int, stop: int) -> None:
            nonlocal done
            # One handle per file: seek and read must not interleave on it.
            f = handles[path]
            async with locks[path]:
                await f.seek(start)
                data = await f.read(stop - start)
            done += len(data)

        locks = {p: asyncio.Lock() for p in handles}
        for k in range(0, len(ranges), IN_FLIGHT):
            await asyncio.gather(*(one(*r) for r in ranges[k : k + IN_FLIGHT]))
        return done
    finally:
        for f in handles.values():
            await f.close()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="full-size FFIs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the FFIs go (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        paths = make_sector(tmp, SectorSpec(n_ffis=args.n, shape=FULL_SHAPE, no_wcs=()))
        plan = make_plan(scan_paths(paths), Limits.for_build(10**9, IN_FLIGHT, local=True))
        ranges = [(f.path, *lay.row_range(a, b)) for a, b in plan.blocks for f in plan.files for lay in f.layers]
        for path in paths:  # into the page cache
            Path(path).read_bytes()
        results: dict[str, list[tuple[float, float]]] = {"LocalSource (preadv)": [], "aiofiles": []}
        for _ in range(args.repeat):
            for name, reader in (("LocalSource (preadv)", read_with_local_source), ("aiofiles", read_with_aiofiles)):
                t0, c0 = time.perf_counter(), cpu()
                total = asyncio.run(reader(ranges))
                results[name].append((time.perf_counter() - t0, cpu() - c0))
        print(f"{args.n} FFIs, {len(ranges)} reads, {total / 1e9:.2f} GB from the page cache, medians of {args.repeat}")
        print("| reader | wall s | CPU s (user+sys) | GB/s |")
        print("|---|---:|---:|---:|")
        for name, runs in results.items():
            wall = statistics.median(w for w, _ in runs)
            used = statistics.median(c for _, c in runs)
            print(f"| {name} | {wall:.2f} | {used:.2f} | {total / wall / 1e9:.2f} |")


if __name__ == "__main__":
    main()
