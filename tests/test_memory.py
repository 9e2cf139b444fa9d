"""The memory budget holds: peak RSS of a build stays under max_memory + 300 MB.

The child reports VmHWM from /proc/self/status, its own peak RSS: getrusage's
ru_maxrss would include the parent's RSS at spawn time (Linux folds the old address
space's high-water mark in at exec).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fficube.synthetic import SectorSpec, make_sector

CHILD = textwrap.dedent(
    """
    import json, re, sys
    import fficube
    paths, output, budget = json.loads(sys.argv[1])
    result = fficube.make_cube(paths, output, max_memory=budget)
    hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
    print(json.dumps({"peak_kb": hwm,
                      "blocks": result.blocks, "bytes": result.bytes_written}))
    """
)


def peak_rss_of_build(paths: list[str], output: Path, budget: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([paths, str(output), budget])],
        capture_output=True, text=True, timeout=600, check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.slow
def test_peak_rss_stays_within_budget_for_a_cube_much_larger(tmp_path: Path) -> None:
    budget = 40 * 10**6
    paths = make_sector(tmp_path / "ffis", SectorSpec(n_ffis=48, shape=(500, 2136), no_wcs=(3,)))
    report = peak_rss_of_build(paths, tmp_path / "cube.fits", budget)
    cube_bytes = report["bytes"]
    assert cube_bytes > 8 * budget  # the cube could not fit the budget
    assert report["blocks"] > 8
    peak = report["peak_kb"] * 1024
    assert peak < budget + 300 * 10**6, f"peak RSS {peak / 1e6:.0f} MB, cube {cube_bytes / 1e6:.0f} MB"
    assert peak < budget + 150 * 10**6, f"peak RSS {peak / 1e6:.0f} MB"  # the rest is imports


UPDATE_CHILD = textwrap.dedent(
    """
    import json, re, sys
    import fficube.sync
    cube, paths, budget = json.loads(sys.argv[1])
    result = fficube.sync.update_cube(cube, paths, max_memory=budget)
    hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
    print(json.dumps({"peak_kb": hwm,
                      "blocks": result.blocks, "bytes": result.bytes_written}))
    """
)


@pytest.mark.slow
def test_update_streams_within_the_budget(tmp_path: Path) -> None:
    import fficube

    budget = 40 * 10**6
    paths = sorted(make_sector(tmp_path / "ffis", SectorSpec(n_ffis=48, shape=(500, 2136), no_wcs=(3,))))
    cube = tmp_path / "cube.fits"
    fficube.make_cube(paths[::2], cube, max_memory="200MB")  # the old cube: every other FFI
    done = subprocess.run(
        [sys.executable, "-c", UPDATE_CHILD, json.dumps([str(cube), paths[1::2], budget])],
        capture_output=True, text=True, timeout=600, check=True,
    )
    report = json.loads(done.stdout)
    assert report["bytes"] > 8 * budget and report["blocks"] > 8
    peak = report["peak_kb"] * 1024
    assert peak < budget + 300 * 10**6, f"peak RSS {peak / 1e6:.0f} MB, cube {report['bytes'] / 1e6:.0f} MB"
    fficube.make_cube(paths, tmp_path / "fresh.fits", max_memory="200MB")
    from astropy.io import fits

    with fits.open(cube) as a, fits.open(tmp_path / "fresh.fits") as b:
        assert np.array_equal(a[1].section[::50, ::100, :, :], b[1].section[::50, ::100, :, :])
    # Tighter than the bound: the pipeline holds the budget, the rest is imports.
    assert peak < budget + 150 * 10**6, f"peak RSS {peak / 1e6:.0f} MB"
