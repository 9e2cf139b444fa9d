"""Headers parsed card by card (with a cache of distinct cards) read as astropy reads them."""

from __future__ import annotations

import pytest

from fficube.errors import FitsFormatError
from fficube.fitsblocks import Cards, parse_cards, parse_header
from fficube.synthetic import tica_header_sample


def text(*cards: str) -> str:
    return "".join(card.ljust(80) for card in (*cards, "END"))


def assert_like_astropy(raw: str) -> Cards:
    cards = parse_cards(raw, path="f.fits", offset=0)
    header = parse_header(raw.encode("ascii"), path="f.fits", offset=0)
    assert set(cards) == set(header.keys())
    for key in header:
        expected = header[key]
        if key in ("", "COMMENT", "HISTORY"):
            assert cards[key] == list(expected)
        else:
            assert cards[key] == expected and type(cards[key]) is type(expected), key
        assert key in cards and key.lower() in cards
    assert "NOSUCHKEY" not in cards and cards.get("NOSUCHKEY", 3) == 3
    return cards


def test_a_real_header_reads_the_same() -> None:
    assert_like_astropy(tica_header_sample().tostring())


def test_values_of_every_kind_and_repeats() -> None:
    cards = assert_like_astropy(text(
        "SIMPLE  =                    T", "BITPIX  =                  -32", "NAXIS   =                    0",
        "A       = 'text    '           / comment", "B       =                 1.5E3", "C       =          12345678901",
        "D       =                    F", "E       =", "F       = 'it''s'", "A       = 'second'",
        "COMMENT first comment", "HISTORY a story", "COMMENT  second", "        blank text",
        "G       = (1.0, 2.0)", "H       =               1.0D-3",
    ))
    assert cards["A"] == "text" and cards["COMMENT"] == ["first comment", " second"]
    assert cards["E"] is None and "E" in cards


def test_a_repeated_card_is_parsed_once() -> None:
    from fficube.fitsblocks import _card

    raw = text("SIMPLE  =                    T", "TELESCOP= 'TESS    '", "TSTART  =             1325.125")
    parse_cards(raw, path="a", offset=0)
    hits = _card.cache_info().hits
    parse_cards(raw.replace("1325.125", "1325.250"), path="b", offset=0)
    assert _card.cache_info().hits == hits + 2  # SIMPLE and TELESCOP; TSTART is new


@pytest.mark.parametrize("special", [
    "LONG    = 'a long string that continues &'",
    "HIERARCH ESO TEL AIRM = 1.2",
    "DP1     = 'AXIS.1: 1'",
])
def test_cards_astropy_must_read_in_context_use_astropy_header(special: str) -> None:
    raw = text("SIMPLE  =                    T", special, *(["CONTINUE  'the rest'"] if "&" in special else []))
    cards = parse_cards(raw, path="f", offset=0)
    header = parse_header(raw.encode("ascii"), path="f", offset=0)
    assert cards._header is not None
    for key in header:
        assert cards[key] == header[key]


def test_a_malformed_card_is_a_format_error() -> None:
    with pytest.raises(FitsFormatError, match="unreadable FITS header"):
        parse_cards(text("SIMPLE  =                    T", "BAD     = 'unterminated"), path="f", offset=0)


SIMPLE_CARDS = [
    "SIMPLE  =                    T / conforms to FITS standard",
    "EXTEND  =                    F",
    "BITPIX  =                  -32 / array data type",
    "NAXIS1  =                 2136",
    "BIG     =          12345678901",
    "NEG     =                   -7",
    "PLUS    =                   +7",
    "REAL    =    1325.293524888884 / [d] start",
    "EXP     =             1.5E+03",
    "DEXP    =             1.0D-03",
    "NOEXP   =                  1.",
    "LEAD    =                  .25",
    "SIGNED  =                -0.0",
    "INTEXP  =                  1E3",
    "FREE    = 42 / free format",
    "STR     = 'TESS    '           / telescope",
    "QUOTE   = 'it''s'",
    "EMPTY   = ''",
    "BLANKS  = '   '",
    "LEADING = '  x'",
    "SLASH   = 'a/b'               / comment with 'quotes' and / slash",
    "DATE-OBS= '2018-07-25T19:29:42.708Z'",
    "TIME    = 'with: colon'",
    "DP2     = 'NAXES: 2'",
    "LONGSTR = 'starts a long string &'",
    "lower   =                    1",
    "CMPLX   = (1.0, 2.0)",
    "UNDEF   =",
    "LOWEXP  =               1.0e3",
    "HIERARCH A B = 3",
    "CONTINUE  'x'",
    "COMMENT = 'not a value'",
    "NOSPACE =1",
]


@pytest.mark.parametrize("card", SIMPLE_CARDS)
def test_simple_cards_read_as_astropy_reads_them(card: str) -> None:
    import warnings

    from astropy.io import fits

    from fficube.fitsblocks import _simple_card

    image = card.ljust(80)
    simple = _simple_card(image)
    if simple is None:
        return  # astropy reads it (compared with astropy by the tests above)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        header = fits.Header.fromstring(image + "END".ljust(80))
    key, value = simple
    assert list(header.keys()) == [key]
    assert header[key] == value and type(header[key]) is type(value), (header[key], value)


def test_the_commonest_cards_take_the_fast_path() -> None:
    from fficube.fitsblocks import _simple_card

    fast = [c for c in SIMPLE_CARDS if _simple_card(c.ljust(80)) is not None]
    assert "STR     = 'TESS    '           / telescope" in fast and "REAL    =    1325.293524888884 / [d] start" in fast
    for slow in ("TIME    = 'with: colon'", "LONGSTR = 'starts a long string &'", "HIERARCH A B = 3", "lower   =                    1"):
        assert slow not in fast


def test_times_take_the_fast_path_and_field_specifiers_do_not() -> None:
    from fficube.fitsblocks import _simple_card

    assert _simple_card("DATE-OBS= '2018-07-25T19:29:42.708Z'".ljust(80)) == ("DATE-OBS", "2018-07-25T19:29:42.708Z")
    assert _simple_card("DP1     = 'AXIS.1: 1'".ljust(80)) is None
    assert _simple_card("LONG    = 'abc &'".ljust(80)) is None
