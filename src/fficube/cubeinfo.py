"""Read what a finished cube says about itself (headers and info table, not the data)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from .products import PRODUCTS, Product
from .remote import Filesystems, is_url, protocol_of
from .scan import scan_cube
from .storage import ByteSource, FsspecSource, LocalSource

__all__ = ["CubeDescription", "describe_cube"]


@dataclass(frozen=True, slots=True)
class CubeDescription:
    """A cube's shape, product, time range and origin, for ``fficube inspect``."""

    path: str
    size: int
    product: str
    shape: tuple[int, int, int, int]  #: (rows, cols, n_ffis, layers)
    start: float
    stop: float
    sector: object
    camera: object
    ccd: object
    first_file: str
    last_file: str
    template: str | None  #: the earliest FFI meeting the template rule (input order is not recorded)
    template_rule: str
    date: str

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a short table."""
        rows, cols, n, layers = self.shape
        return [
            ("file", self.path),
            ("size", f"{self.size:,} bytes"),
            ("product", self.product.upper()),
            ("shape", f"{rows} rows x {cols} cols x {n} FFIs x {layers} layer(s)"),
            ("FFIs", str(n)),
            ("time", f"{self.start:.6f} .. {self.stop:.6f} TJD ({self.stop - self.start:.3f} d)"),
            ("sector", "undefined" if self.sector in (None, "") or isinstance(self.sector, fits.card.Undefined) else str(self.sector)),
            ("camera/CCD", f"{self.camera}/{self.ccd}"),
            ("first FFI", self.first_file),
            ("last FFI", self.last_file),
            ("template", f"{self.template} (earliest meeting {self.template_rule})" if self.template
             else f"none ({self.template_rule} in no FFI)"),
            ("built", self.date),
        ]


async def describe_cube(
    path: str | os.PathLike[str], *, anon: bool | None = None, storage_options: dict | None = None
) -> CubeDescription:
    """Describe the cube at ``path`` (local or any ranged fsspec URL), reading only its
    headers and info table by byte range.

    Raises
    ------
    FitsFormatError
        If the file is not a cube in fficube's (astrocut's) format.
    """
    path = os.fspath(path)
    filesystems = Filesystems(anon=anon, storage_options=storage_options)
    try:
        source: ByteSource
        if is_url(path):
            source = FsspecSource(await filesystems.get(protocol_of(path)), 4)
        else:
            source = LocalSource(1)
        try:
            cube = await scan_cube(source, path)
        finally:
            await source.aclose()
    finally:
        await filesystems.aclose()
    primary = fits.Header.fromstring(cube.primary_header)
    product: Product = PRODUCTS[cube.product]
    table = cube.table.data
    columns = cube.table.columns.names
    stop_key = "ENDTJD" if product.name == "tica" else "TSTOP"
    start = float(np.nanmin(table[product.time_keyword])) if product.time_keyword in columns else float("nan")
    stop = float(np.nanmax(table[stop_key])) if stop_key in columns else float("nan")
    files = cube.names
    template = None
    for key, value in product.template_requirements.items():
        if key in columns:
            hits = np.flatnonzero(table[key] == value)
            template = files[hits[0]] if hits.size else None
    cam_key, ccd_key = product.camera_keywords
    return CubeDescription(
        path=path,
        size=cube.size,
        product=product.name,
        shape=cube.shape,
        start=start,
        stop=stop,
        sector=primary.get("SECTOR"),
        camera=primary.get(cam_key),
        ccd=primary.get(ccd_key),
        first_file=files[0] if files else "",
        last_file=files[-1] if files else "",
        template=template,
        template_rule=product.template_rule,
        date=str(primary.get("DATE", "")),
    )
