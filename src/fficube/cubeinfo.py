"""Read what a finished cube says about itself (headers and info table, not the data)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from .errors import FitsFormatError
from .products import PRODUCTS, Product

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


def describe_cube(path: str | os.PathLike[str]) -> CubeDescription:
    """Describe the cube at ``path``.

    Raises
    ------
    FitsFormatError
        If the file is not a cube of fficube's (astrocut's) format.
    """
    path = os.fspath(path)
    try:
        with fits.open(path, memmap=True, lazy_load_hdus=True) as hdus:
            primary = hdus[0].header
            cube = hdus[1].header
            table = hdus[2].data
            if cube.get("NAXIS") != 4 or not isinstance(hdus[2], fits.BinTableHDU):
                raise FitsFormatError("not an FFI cube (HDU 1 must be 4-D and HDU 2 a table)", path=path)
            shape = (cube["NAXIS4"], cube["NAXIS3"], cube["NAXIS2"], cube["NAXIS1"])
            product: Product = PRODUCTS["tica"] if "CAMNUM" in primary else PRODUCTS["spoc"]
            columns = table.columns.names
            time_key = product.time_keyword
            stop_key = "ENDTJD" if product.name == "tica" else "TSTOP"
            start = float(np.nanmin(table[time_key])) if time_key in columns else float("nan")
            stop = float(np.nanmax(table[stop_key])) if stop_key in columns else float("nan")
            files = [f.decode() if isinstance(f, bytes) else str(f) for f in table["FFI_FILE"]]
            template = None
            for key, value in product.template_requirements.items():
                if key in columns:
                    hits = np.flatnonzero(table[key] == value)
                    template = files[hits[0]] if hits.size else None
            cam_key, ccd_key = product.camera_keywords
            return CubeDescription(
                path=path,
                size=os.path.getsize(path),
                product=product.name,
                shape=shape,
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
    except (OSError, IndexError, KeyError, TypeError) as exc:
        if isinstance(exc, FitsFormatError):
            raise
        raise FitsFormatError(f"not a readable FFI cube ({exc})", path=path) from exc
