"""What distinguishes the FFI products fficube can cube.

A :class:`Product` is a small frozen record: which HDUs hold the image layers, which
header is the "image header" (time, camera, info table), which keywords sort and
describe the FFIs, and what a template FFI must have.  The pipeline stages take it as
data, so supporting a product is a matter of describing it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Product", "SPOC", "TICA", "PRODUCTS", "get_product"]


@dataclass(frozen=True, slots=True)
class Product:
    """Layout and keyword conventions of one kind of FFI."""

    name: str
    #: HDU indices of the cube's layers, in layer order (science first).
    layer_hdus: tuple[int, ...]
    #: HDU whose header gives times, camera/CCD and the info-table values.
    image_hdu: int
    #: Keyword of the image header that orders the FFIs in time.
    time_keyword: str
    #: Keywords copied (value and comment) from the latest FFI's image header.
    last_file_keywords: tuple[str, ...]
    #: Keywords copied from the earliest FFI's image header (camera and CCD).
    camera_keywords: tuple[str, str]
    #: Image-header values a file must have to serve as the info-table template.
    template_requirements: Mapping[str, Any]
    #: Glob used when an input is a directory.
    file_pattern: str

    @property
    def layers(self) -> int:
        """Number of layers in the cube's last axis."""
        return len(self.layer_hdus)

    @property
    def template_rule(self) -> str:
        """The template requirement, as words for messages."""
        return ", ".join(f"{k} = {v!r}" for k, v in self.template_requirements.items())


SPOC = Product(
    name="spoc",
    layer_hdus=(1, 2),
    image_hdu=1,
    time_keyword="TSTART",
    last_file_keywords=("DATE-END", "TSTOP"),
    camera_keywords=("CAMERA", "CCD"),
    template_requirements={"WCSAXES": 2},
    file_pattern="*ffic.fits",
)

TICA = Product(
    name="tica",
    layer_hdus=(0,),
    image_hdu=0,
    time_keyword="STARTTJD",
    last_file_keywords=("ENDTJD",),
    camera_keywords=("CAMNUM", "CCDNUM"),
    template_requirements={"NAXIS": 2},
    file_pattern="*_img.fits",
)

PRODUCTS: dict[str, Product] = {p.name: p for p in (SPOC, TICA)}


def get_product(name: str) -> Product | None:
    """Return the product called ``name`` (``None`` for ``"auto"``).

    Raises
    ------
    ValueError
        If ``name`` is neither ``"auto"`` nor a known product.
    """
    key = name.lower()
    if key == "auto":
        return None
    try:
        return PRODUCTS[key]
    except KeyError:
        known = ", ".join(["auto", *PRODUCTS])
        raise ValueError(f"unknown product {name!r}; expected one of {known}") from None
