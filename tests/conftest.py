"""Shared fixtures: synthetic sectors written by astropy, astrocut as the oracle."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fficube.synthetic import SectorSpec, make_sector

STAMPS = [
    (re.compile(rb"DATE    = '\d{4}-\d\d-\d\d'"), b"DATE    = 'YYYY-MM-DD'"),
    (re.compile(rb"checksum updated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"), b"checksum updated YYYY-MM-DDThh:mm:ss"),
]


def without_build_stamps(data: bytes) -> bytes:
    """Cube bytes with the build date and the DATASUM time stamp blanked.

    Those two cards hold the time of the build (in astrocut's cubes as in ours); all
    other bytes of two cubes of the same FFIs must be equal.
    """
    for pattern, replacement in STAMPS:
        data = pattern.sub(replacement, data)
    return data


@pytest.fixture
def sector(tmp_path: Path):
    """Factory: ``sector(**SectorSpec fields)`` writes FFIs and returns their paths."""

    def make(**fields) -> list[str]:
        spec = SectorSpec(**fields)
        return make_sector(tmp_path / f"ffis-{spec.product}-{spec.seed}-{spec.n_ffis}", spec)

    return make


def astrocut_cube(paths: list[str], output: Path, sector: int | None = 1) -> bytes:
    """The cube astrocut's CubeFactory makes of ``paths``, as bytes."""
    from astrocut import CubeFactory

    CubeFactory().make_cube(list(paths), str(output), sector=sector, verbose=False)
    return output.read_bytes()
