"""Drop-in replacements for astrocut's cube factories (``TicaCubeFactory`` as in astrocut 1.2).

``fficube.CubeFactory().make_cube(file_list, cube_file, sector, max_memory, verbose)``
takes astrocut's arguments (``max_memory`` in GB) and returns the cube's path, so
scripts written for astrocut switch by changing one import.  As in astrocut, an
existing ``cube_file`` is replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .sync import make_cube

__all__ = ["CubeFactory", "TicaCubeFactory"]

log = logging.getLogger("fficube")


class CubeFactory:
    """astrocut-compatible factory for SPOC cubes.

    Parameters
    ----------
    max_memory
        Memory for the build in GB (the default of each ``make_cube`` call).
    """

    product = "spoc"

    def __init__(self, max_memory: float = 50) -> None:
        self.max_memory = max_memory

    def make_cube(
        self,
        file_list: Sequence[str],
        cube_file: str = "img-cube.fits",
        sector: int | None = None,
        max_memory: float | None = None,
        verbose: bool = True,
    ) -> str:
        """Build ``cube_file`` from ``file_list``; return its path.

        ``max_memory`` is in GB, as in astrocut; ``verbose`` logs the result to the
        ``fficube`` logger at INFO (at DEBUG otherwise).
        """
        gigabytes = self.max_memory if max_memory is None else max_memory
        result = make_cube(
            list(file_list), cube_file, product=self.product, sector=sector,
            max_memory=int(gigabytes * 1e9), overwrite=True,
        )
        log.log(logging.INFO if verbose else logging.DEBUG, "%s", result.summary())
        return result.output


class TicaCubeFactory(CubeFactory):
    """astrocut-compatible factory for TICA cubes (astrocut removed its own after 1.2)."""

    product = "tica"
