"""The synthetic sky: stars through a PSF that move a little with the pointing, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from fficube.synthetic import PSF_SIGMA, SectorSpec, make_sector, star_field


def frames(directory: Path, **fields) -> list[np.ndarray]:
    paths = sorted(make_sector(directory, SectorSpec(n_ffis=4, shape=(40, 50), no_wcs=(), **fields)))
    return [fits.getdata(path, 1) for path in paths]


def centroid(image: np.ndarray, row: float, col: float, half: int = 3) -> tuple[float, float]:
    r0, c0 = round(row), round(col)
    stamp = image[r0 - half : r0 + half + 1, c0 - half : c0 + half + 1] - 150.0
    rows, cols = np.mgrid[r0 - half : r0 + half + 1, c0 - half : c0 + half + 1]
    return float((stamp * rows).sum() / stamp.sum()), float((stamp * cols).sum() / stamp.sum())


def test_stars_are_point_sources_that_jitter(tmp_path: Path) -> None:
    images = frames(tmp_path / "a", stars=30)
    np.testing.assert_array_equal(images[0], frames(tmp_path / "b", stars=30)[0])  # deterministic
    field = star_field(30, (40, 50), (0, 1, 1, 1))
    assert field.shape == (30, 3) and field[:, 2].min() >= 10**2.5 and field[:, 2].max() <= 10**5.5
    inside = (field[:, 0] > 5) & (field[:, 0] < 34) & (field[:, 1] > 5) & (field[:, 1] < 44)
    row, col, flux = field[inside][np.argmax(field[inside][:, 2])]  # the brightest star away from the edges
    peak = flux / (2 * np.pi * PSF_SIGMA**2)
    offsets = []
    for image in images:
        r, c = centroid(image, row, col)
        offsets.append((r - row, c - col))
        assert abs(r - row) < 0.7 and abs(c - col) < 0.7  # where the field puts it, give or take the jitter
        assert image[round(r), round(c)] > 150 + 0.3 * peak  # a point source, not spread out
        assert image[round(r) + 4, round(c)] < 150 + 0.01 * peak  # a PSF of about one pixel
    assert len({(round(r, 3), round(c, 3)) for r, c in offsets}) == len(images)  # the pointing moves
    assert np.median(images[0]) < 160  # mostly sky


def test_stars_are_opt_in(tmp_path: Path) -> None:
    plain = frames(tmp_path / "plain")
    assert SectorSpec().stars == 0
    assert not np.array_equal(plain[0], frames(tmp_path / "stars", stars=30)[0])
    assert 140 < np.median(plain[0]) < 160
