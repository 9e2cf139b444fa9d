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
