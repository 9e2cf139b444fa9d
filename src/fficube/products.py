"""What distinguishes the FFI products fficube can cube.

A :class:`Product` is a small frozen record: which HDUs hold the image layers, which
header is the "image header" (time, camera, info table), which keywords sort and
describe the FFIs, and what a template FFI must have.  The pipeline stages take it as
data, so supporting a product is a matter of describing it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import FitsFormatError, OptionError

__all__ = ["Product", "SPOC", "TICA", "PRODUCTS", "CHOICES", "get_product", "detect_product", "product_with_layers"]


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
    #: Keyword of the image header that ends the FFI's exposure (the cube's time range).
    stop_keyword: str
    #: Image-header values a file must have to serve as the info-table template.
    template_requirements: Mapping[str, Any]
    #: The template is the first qualifying FFI in time order that has a celestial WCS
    #: (TICA: its requirement, NAXIS = 2, admits any FFI), not the first in input order
    #: (SPOC, as astrocut: its requirement, WCSAXES = 2, is a WCS).
    template_by_time: bool
    #: Glob used when an input is a directory.
    file_pattern: str
    #: ``NAXIS`` of HDU 0 in this product's FFIs: how a file is recognised.  (A product
    #: with its image in an extension also needs ``EXTEND = T``.)
    primary_naxis: int
    #: Names of the cube's layers, as array views call them (science first).
    layer_names: tuple[str, ...]
    #: What the time keywords count.
    time_units: str
    #: Info-table column of each FFI's quality flags ("" if the product has none).
    quality_column: str
    #: Info-table column of each FFI's cadence number ("" if the image header has none).
    cadence_column: str
    #: The HDU and keyword of each FFI's cadence number, which the scan reads (SPOC's is
    #: in the primary header, which the info table does not hold).
    cadence_card: tuple[int, str]

    def matches(self, primary: Mapping[str, Any]) -> bool:
        """Whether an FFI whose primary header is ``primary`` is of this product."""
        if primary.get("NAXIS") != self.primary_naxis:
            return False
        return self.image_hdu == 0 or bool(primary.get("EXTEND", False))

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
    stop_keyword="TSTOP",
    template_requirements={"WCSAXES": 2},
    template_by_time=False,
    file_pattern="*ffic.fits",
    primary_naxis=0,
    layer_names=("flux", "flux_err"),
    time_units="BTJD (BJD - 2457000), days",
    quality_column="DQUALITY",
    # FFIINDEX, SPOC's cadence number, is in the primary header, not in the image
    # header whose cards make the info table: the build takes it from the scan.
    cadence_column="",
    cadence_card=(0, "FFIINDEX"),
)

TICA = Product(
    name="tica",
    layer_hdus=(0,),
    image_hdu=0,
    time_keyword="STARTTJD",
    last_file_keywords=("ENDTJD",),
    camera_keywords=("CAMNUM", "CCDNUM"),
    stop_keyword="ENDTJD",
    template_requirements={"NAXIS": 2},
    template_by_time=True,
    file_pattern="*_img.fits",
    primary_naxis=2,
    layer_names=("flux",),
    time_units="TJD (JD - 2457000), days",
    quality_column="QUAL_BIT",
    cadence_column="CADENCE",
    cadence_card=(0, "CADENCE"),
)

PRODUCTS: dict[str, Product] = {p.name: p for p in (SPOC, TICA)}
#: What ``product=`` (``--product``) accepts.
CHOICES: tuple[str, ...] = ("auto", *PRODUCTS)


def get_product(name: str) -> Product | None:
    """Return the product called ``name`` (``None`` for ``"auto"``).

    Raises
    ------
    OptionError
        If ``name`` is neither ``"auto"`` nor a known product.
    """
    key = str(name).lower()
    if key == "auto":
        return None
    try:
        return PRODUCTS[key]
    except KeyError:
        raise OptionError("product", f"unknown product {name!r}; expected one of {', '.join(CHOICES)}") from None


def detect_product(primary: Mapping[str, Any], *, path: str) -> Product:
    """The product of the FFI whose primary header is ``primary``.

    Raises
    ------
    FitsFormatError
        If it is none of them.
    """
    for product in PRODUCTS.values():
        if product.matches(primary):
            return product
    rules = "; ".join(f"{p.name.upper()}: NAXIS = {p.primary_naxis}" for p in PRODUCTS.values())
    raise FitsFormatError(
        f"not an FFI fficube knows: HDU 0 has NAXIS = {primary.get('NAXIS')!r} ({rules})", path=path
    )


def product_of_cube(recorded: object, layers: int, *, path: str) -> Product:
    """The product of a cube: the one its build recorded (``FCPROD``), else, for cubes
    fficube did not write (astrocut's, MAST's), the one whose cubes have ``layers`` layers.

    Raises
    ------
    FitsFormatError
        If the recorded product is unknown or does not have ``layers`` layers, or no
        product makes such cubes.
    """
    if recorded in (None, ""):
        return product_with_layers(layers, path=path)
    product = PRODUCTS.get(str(recorded).lower())
    if product is None or product.layers != layers:
        raise FitsFormatError(f"the cube says it is of product {recorded!r} (FCPROD) but has {layers} layer(s): "
                              f"not a cube fficube knows", path=path)
    return product


def product_with_layers(layers: int, *, path: str) -> Product:
    """The product whose cubes have ``layers`` layers (how a cube tells its product).

    Raises
    ------
    FitsFormatError
        If no product makes such cubes.
    """
    for product in PRODUCTS.values():
        if product.layers == layers:
            return product
    raise FitsFormatError(f"a cube with {layers} layer(s) is of no product fficube knows", path=path)
