"""Build several cubes at once from async code, sharing one memory budget.

Each build gets an equal share of the budget, and all run on one event loop, so the
total memory held stays within ``TOTAL_BUDGET`` however many cubes there are.

    python examples/concurrent_cubes.py [OUTPUT_DIR]
"""

import asyncio
import os
import sys
import tempfile

import fficube
from fficube.synthetic import SectorSpec, make_sector

TOTAL_BUDGET = 600 * 10**6  # bytes, for all builds together


async def build_all(jobs: dict[str, list[str]], out_dir: str) -> list[fficube.BuildResult]:
    share = TOTAL_BUDGET // len(jobs)
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(
                fficube.build_cube(paths, os.path.join(out_dir, name), max_memory=share, overwrite=True)
            )
            for name, paths in jobs.items()
        ]
    return [t.result() for t in tasks]


def main() -> None:
    out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="fficube-cubes-")
    # One synthetic camera/CCD per cube; with real data, give each its own FFI folder.
    jobs = {}
    for camera, ccd in [(1, 1), (1, 2), (2, 1)]:
        spec = SectorSpec(n_ffis=8, camera=camera, ccd=ccd, shape=(64, 80), seed=camera * 10 + ccd)
        jobs[f"tess-s0001-{camera}-{ccd}-cube.fits"] = make_sector(os.path.join(out_dir, f"ffis-{camera}-{ccd}"), spec)
    for result in asyncio.run(build_all(jobs, out_dir)):
        print(result.summary())


if __name__ == "__main__":
    main()
