"""The memory budget holds: what a build adds to its process's peak RSS stays near max_memory.

Each build runs in a child process that first warms up (imports, astropy's lazy
modules, thread pools: a tiny build) and then records its VmHWM from
/proc/self/status as the baseline; the bound is on the peak above that baseline.
(getrusage's ru_maxrss would include the parent's RSS at spawn time: Linux folds the
old address space's high-water mark in at exec.)  The bound is tight enough that a
pipeline holding buffers its plan does not account for (eight times the read
buffers, say) fails it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fficube.synthetic import SectorSpec, make_sector

#: What a build may hold above its budget: Python objects, queues, scan results.
SLACK = 20 * 10**6

CHILD = textwrap.dedent(
    """
    import json, os, re, sys, tempfile
    import fficube, fficube.sync
    from fficube.synthetic import SectorSpec, make_sector

    def hwm():
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

    kind, args, budget, options, warm_inputs = json.loads(sys.argv[1])
    with tempfile.TemporaryDirectory() as warm:
        # The same kind of inputs, tiny: their imports, clients and threads are in the baseline.
        inputs = warm_inputs or make_sector(warm, SectorSpec(n_ffis=3, shape=(16, 20)))
        fficube.make_cube(inputs, os.path.join(warm, "c.fits"), storage_options=options.get("storage_options"))
    base = hwm()
    if kind == "build":
        result = fficube.make_cube(*args, max_memory=budget, **options)
    else:
        result = fficube.sync.update_cube(*args, max_memory=budget)
    print(json.dumps({"base": base, "peak": hwm(), "blocks": result.blocks, "bytes": result.bytes_written}))
    """
)


def measured(
    kind: str, args: list[str | list[str]], budget: int, warm: list[str] | None = None,
    env: dict[str, str] | None = None, **options
) -> dict[str, int]:
    """Run a build (or an update) with ``args`` and keyword ``options`` in a child (with
    ``env`` added to its environment); its baseline (after building ``warm``, or a tiny
    local sector) and peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([kind, args, budget, options, warm])],
        capture_output=True, text=True, timeout=600, check=True, env={**os.environ, **(env or {})},
    )
    return json.loads(done.stdout)


def assert_within_budget(report: dict[str, int], budget: int) -> None:
    above = report["peak"] - report["base"]
    assert report["bytes"] > 8 * budget and report["blocks"] > 8  # the cube could not fit the budget
    assert above < budget + SLACK, f"the build added {above / 1e6:.0f} MB to the peak RSS for a {budget / 1e6:.0f} MB budget"
    assert report["peak"] < budget + 300 * 10**6  # the documented bound, imports included


@pytest.mark.slow
def test_peak_rss_stays_within_budget_for_a_cube_much_larger(tmp_path: Path) -> None:
    budget = 40 * 10**6
    paths = make_sector(tmp_path / "ffis", SectorSpec(n_ffis=48, shape=(500, 2136), no_wcs=(3,)))
    assert_within_budget(measured("build", [paths, str(tmp_path / "cube.fits")], budget), budget)


@pytest.mark.slow
def test_peak_rss_stays_within_budget_when_reading_from_s3(tmp_path: Path, s3) -> None:
    # Thousands of GETs through obstore: its threads, connections and bodies in flight
    # come on top of the plan's buffers, and must stay within the slack too.
    budget = 20 * 10**6
    paths = make_sector(tmp_path / "ffis", SectorSpec(n_ffis=32, shape=(320, 2136), no_wcs=(3,)))
    urls = s3.upload(paths, "big")
    warm = s3.upload(make_sector(tmp_path / "warm", SectorSpec(n_ffis=3, shape=(16, 20))), "warm")
    # The endpoint as users give it to every AWS tool: the environment, not storage options.
    report = measured("build", [urls, str(tmp_path / "cube.fits")], budget, warm=warm,
                      env={"AWS_ENDPOINT_URL": s3.url})
    assert_within_budget(report, budget)


@pytest.mark.slow
def test_pixel_statistics_stay_within_the_budget(tmp_path: Path) -> None:
    # The images of 1000 x 2136 pixels and their scratch take 32 MB of the 40: the
    # blocks must make room for them.
    budget = 40 * 10**6
    paths = make_sector(tmp_path / "ffis", SectorSpec(n_ffis=24, shape=(1000, 2136), no_wcs=(3,)))
    report = measured("build", [paths, str(tmp_path / "cube.fits")], budget, pixel_stats=str(tmp_path / "s.fits"))
    assert_within_budget(report, budget)
    from astropy.io import fits

    assert fits.getdata(tmp_path / "s.fits", "MEDIAN").shape == (1000, 2136)


@pytest.mark.slow
def test_update_streams_within_the_budget(tmp_path: Path) -> None:
    import fficube

    budget = 40 * 10**6
    paths = sorted(make_sector(tmp_path / "ffis", SectorSpec(n_ffis=48, shape=(500, 2136), no_wcs=(3,))))
    cube = tmp_path / "cube.fits"
    fficube.make_cube(paths[::2], cube, max_memory="200MB")  # the old cube: every other FFI
    assert_within_budget(measured("update", [str(cube), paths[1::2]], budget), budget)
    fficube.make_cube(paths, tmp_path / "fresh.fits", max_memory="200MB")
    from astropy.io import fits

    with fits.open(cube) as a, fits.open(tmp_path / "fresh.fits") as b:
        assert np.array_equal(a[1].section[::50, ::100, :, :], b[1].section[::50, ::100, :, :])
