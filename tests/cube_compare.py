"""Compare a cube of fficube's with a reference cube of astrocut's, part by part."""

from __future__ import annotations

import math

import numpy as np
from astropy.io import fits

from fficube.cubeinfo import PROVENANCE_KEYWORDS

#: Cards whose value (DATE) or comment (DATASUM) is the build time, and CHECKSUM:
#: fficube seals every HDU, astrocut none (its DATASUM is the kept FFI card's).
BUILD_TIME_CARDS = ("DATE", "DATASUM", "CHECKSUM")


def _same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _cards(header: fits.Header) -> list[fits.Card]:
    """The cards to compare: not the checksums, nor fficube's provenance (HDU 1; astrocut writes none)."""
    return [card for card in header.cards
            if card.keyword not in ("CHECKSUM", "DATASUM") and card.keyword not in PROVENANCE_KEYWORDS]


def assert_verifies(path) -> None:
    """Every HDU's CHECKSUM and DATASUM are right (astropy warns otherwise)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(path, checksum=True) as cube:
            for hdu in cube:
                assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header
                hdu.data  # noqa: B018 - reading the data checks DATASUM


def assert_equal_but_checksums(ours_path, ref_path) -> None:
    """Every card but the build time and checksums, and the data and table bytes, equal."""
    with fits.open(ours_path) as ours, fits.open(ref_path) as ref:
        assert len(ours) == len(ref) == 3
        for hdu in range(3):
            a = [c.image for c in _cards(ours[hdu].header) if c.keyword != "DATE"]
            b = [c.image for c in _cards(ref[hdu].header) if c.keyword != "DATE"]
            assert a == b, hdu
        spans = [(ours.fileinfo(i), ref.fileinfo(i)) for i in (1, 2)]
    with open(ours_path, "rb") as fo, open(ref_path, "rb") as fr:
        for info_o, info_r in spans:
            assert info_o["datSpan"] == info_r["datSpan"]
            fo.seek(info_o["datLoc"]), fr.seek(info_r["datLoc"])
            assert fo.read(info_o["datSpan"]) == fr.read(info_r["datSpan"]), "data differ"
    assert_verifies(ours_path)


def assert_headers_equal(ours: fits.Header, ref: fits.Header, ignore: tuple[str, ...] = BUILD_TIME_CARDS) -> None:
    assert [c.keyword for c in _cards(ours)] == [c.keyword for c in _cards(ref)]
    for a, b in zip(_cards(ours), _cards(ref), strict=True):
        if a.keyword in ignore:
            continue
        assert _same_value(a.value, b.value), (a.keyword, a.value, b.value)
        assert a.comment == b.comment, a.keyword


def assert_cube_matches(ours_path, ref_path) -> None:
    """Headers (but the build time), cube bytes and info table equal; astrocut's strings may be cut.

    astrocut sizes string columns from the template and cuts longer values, so
    each of its strings must equal ours cut to its width.
    """
    with fits.open(ours_path) as ours, fits.open(ref_path) as ref:
        assert len(ours) == len(ref) == 3
        assert_headers_equal(ours[0].header, ref[0].header)
        assert [c.image for c in _cards(ours[1].header)] == [c.image for c in _cards(ref[1].header)]
        info_o, info_r = ours.fileinfo(1), ref.fileinfo(1)
        assert info_o["datSpan"] == info_r["datSpan"]
    with open(ours_path, "rb") as fo, open(ref_path, "rb") as fr:
        fo.seek(info_o["datLoc"]), fr.seek(info_r["datLoc"])
        assert fo.read(info_o["datSpan"]) == fr.read(info_r["datSpan"]), "cube data differ"
    with fits.open(ours_path) as ours, fits.open(ref_path) as ref:
        to, tr = ours[2], ref[2]
        assert to.columns.names == tr.columns.names
        for name in to.columns.names:
            a, b = to.data[name], tr.data[name]
            if to.columns[name].format.recformat.startswith("a") or a.dtype.kind in "SU":
                width = tr.columns[name].format.repeat
                assert [v[:width] for v in a] == list(b), name
                assert to.columns[name].format.repeat >= width
            else:
                assert a.dtype == b.dtype, name
                np.testing.assert_array_equal(a, b, err_msg=name)
        widths = {"NAXIS1"} | {f"TFORM{i + 1}" for i in range(len(to.columns))}
        assert_headers_equal(to.header, tr.header, ignore=tuple(widths))
