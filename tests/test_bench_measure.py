"""The benchmarks' measure of a child's peak RSS is the child's own, whatever the parent holds.

The S3 benchmarks keep moto's server, and every object in it, in the process that starts
the builds; Linux would report that process's size as each build's peak.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from measure import measured

ALLOCATE = "import sys; import numpy as np; a = np.ones(int(sys.argv[1]) * 2**20 // 8); print(a.size)"


def test_a_childs_peak_rss_is_its_own_not_its_large_parents() -> None:
    held = np.ones(300 * 2**20 // 8)  # the parent holds 300 MB, every page touched
    small, out = measured([sys.executable, "-c", ALLOCATE, "1"], capture=True)
    large, _ = measured([sys.executable, "-c", ALLOCATE, "120"])
    assert out.strip() == str(2**20 // 8)
    assert small["rss"] < 100  # numpy's import and 1 MB: not the parent's 300 MB
    assert 120 < large["rss"] < 250  # the child's own 120 MB are counted
    assert large["cpu"] == large["user"] + large["sys"] > 0
    assert held.sum() == held.size


def test_a_failing_command_stops_the_benchmark() -> None:
    import pytest

    with pytest.raises(SystemExit, match="failed"):
        measured([sys.executable, "-c", "raise SystemExit(3)"])
