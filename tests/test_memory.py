"""The memory budget holds: peak RSS of a build stays under max_memory + 300 MB."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fficube.synthetic import SectorSpec, make_sector

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import fficube
    paths, output, budget = json.loads(sys.argv[1])
    result = fficube.make_cube(paths, output, max_memory=budget)
    print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
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
