"""Drop-in replacements for astrocut's cube factories (``TicaCubeFactory`` as in astrocut 1.2)
and its ``CutoutFactory``.

``fficube.CubeFactory().make_cube(file_list, cube_file, sector, max_memory, verbose)``
takes astrocut's arguments (``max_memory`` in GB) and returns the cube's path, so
scripts written for astrocut switch by changing one import.  As in astrocut, an
existing ``cube_file`` is replaced.  ``fficube.CutoutFactory().cube_cut(...)`` does
the same for cutouts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from . import sync

__all__ = ["CubeFactory", "TicaCubeFactory", "CutoutFactory"]

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
        result = sync.make_cube(
            list(file_list), cube_file, product=self.product, sector=sector,
            max_memory=int(gigabytes * 1e9), overwrite=True,
        )
        log.log(logging.INFO if verbose else logging.DEBUG, "%s", result.summary())
        return result.output

    def update_cube(
        self,
        file_list: Sequence[str],
        cube_file: str,
        sector: int | None = None,
        max_memory: float | None = None,
        verbose: bool = True,
    ) -> str:
        """Add the FFIs of ``file_list`` to ``cube_file`` (replaced when complete); return its path.

        Unlike astrocut's, this streams within ``max_memory`` GB, keeps float32 and
        places new FFIs in time order.
        """
        gigabytes = self.max_memory if max_memory is None else max_memory
        result = sync.update_cube(cube_file, list(file_list), sector=sector, max_memory=int(gigabytes * 1e9))
        log.log(logging.INFO if verbose else logging.DEBUG, "%s", result.summary())
        return result.output


class TicaCubeFactory(CubeFactory):
    """astrocut-compatible factory for TICA cubes (astrocut removed its own after 1.2)."""

    product = "tica"


class CutoutFactory:
    """astrocut-compatible cutouts: ``cube_cut`` takes the arguments of astrocut's."""

    def cube_cut(
        self,
        cube_file: str | os.PathLike[str],
        coordinates: Any,
        cutout_size: int | float | Sequence[int | float],
        target_pixel_file: str | None = None,
        output_path: str | os.PathLike[str] = ".",
        memory_only: bool = False,
        verbose: bool = False,
    ) -> Any:
        """Cut one TPF around ``coordinates`` (a ``SkyCoord`` or ``"ra dec"`` in degrees).

        Returns the TPF's path (``target_pixel_file`` in ``output_path``, astrocut's
        name by default), or with ``memory_only`` the ``HDUList``.  ``verbose`` logs
        the path to the ``fficube`` logger at INFO (at DEBUG otherwise).
        """
        from .views.cut import cut_targets, targets_of

        targets = targets_of(coordinates)
        if memory_only:
            return sync.cut_cube(cube_file, targets, cutout_size)[0]
        names = [target_pixel_file] if target_pixel_file else None
        report = sync.run(cut_targets(cube_file, targets, cutout_size, out_dir=output_path, file_names=names))
        if report.failed:
            from .errors import OutsideFootprintError

            raise OutsideFootprintError.of_many(report.failed, path=os.fspath(cube_file))
        log.log(logging.INFO if verbose else logging.DEBUG, "wrote %s", report.paths[0])
        return report.paths[0]
