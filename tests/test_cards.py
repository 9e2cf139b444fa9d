"""Headers parsed card by card (with a cache of distinct cards) read as astropy reads them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_a_header_like_the_last_is_read_as_its_changes() -> None:
    from fficube.fitsblocks import _card

    raw = text("SIMPLE  =                    T", "TELESCOP= 'TESS    '", "TSTART  =             1325.125")
    parse_cards(raw, path="a", offset=0)
    before = _card.cache_info()
    cards = parse_cards(raw.replace("1325.125", "1325.250"), path="b", offset=0)
    after = _card.cache_info()
    # Only the changed card is looked at: SIMPLE and TELESCOP are neither hits nor misses.
    assert (after.hits, after.misses) == (before.hits, before.misses + 1)
    assert dict(cards) == {"SIMPLE": True, "TELESCOP": "TESS", "TSTART": 1325.25}


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


# -- headers read as changes of the last one of their length ------------------------

def _cut(header: str) -> str:
    """A header's text up to its END card, as the scanner hands it over."""
    end = next(i for i in range(0, len(header), 80) if header.startswith("END     ", i))
    return header[: end + 80]


BASE = _cut(text(
    "SIMPLE  =                    T", "TSTART  =             1325.125 / start", "TELESCOP= 'TESS    '",
    "CAMERA  =                    1", "REPEAT  =                    1", "REPEAT  =                    2",
    "COMMENT first comment", "DATE-OBS= '2018-07-25T19:29:42.708Z'", "EXPOSURE=                 1.98",
))
REAL = _cut(tica_header_sample().tostring())
CHANGED_CARDS = [
    "TSTART  =             1400.5", "TSTART  = 'now a string'", "TSTART  =                   12",
    "TSTART  =", "TSTART  =                    F", "TELESCOP= 'K2'", "CAMERA  =                    4",
    "OTHER   =                    1", "REPEAT  =                    9", "CAMERA  =                    1 / same value",
    "COMMENT another comment", "HISTORY history now", "CONTINUE  'more'", "LONG    = 'continues &'",
    "HIERARCH A B = 3", "DP1     = 'AXIS.1: 1'", "BAD     = 'unterminated", "END", "SIMPLE  =                    F",
    "lower   =                    1", "        blank keyword text",
]


def _as_dict(cards: Cards) -> dict[str, tuple[type, object]]:
    return {key: (type(cards[key]), cards[key]) for key in cards}


def _parsed(raw: str) -> dict[str, tuple[type, object]] | str:
    try:
        return _as_dict(parse_cards(raw, path="f", offset=0))
    except FitsFormatError as exc:
        return str(exc)


def test_every_single_change_of_a_header_reads_as_a_full_parse_does() -> None:
    from fficube.fitsblocks import _KNOWN

    images = [BASE[i : i + 80] for i in range(0, len(BASE), 80)]
    for at in range(len(images)):
        for card in CHANGED_CARDS:
            changed = "".join([*images[:at], card.ljust(80)[:80], *images[at + 1 :]])
            _KNOWN.clear()
            expected = _parsed(changed)
            _KNOWN.clear()
            parse_cards(BASE, path="base", offset=0)
            assert _parsed(changed) == expected, (at, card)


@given(base=st.sampled_from([BASE, REAL]), data=st.data())
@settings(max_examples=300, deadline=None)
def test_a_changed_header_reads_as_a_full_parse_does(base: str, data: st.DataObject) -> None:
    from fficube.fitsblocks import _KNOWN

    images = [base[i : i + 80] for i in range(0, len(base), 80)]
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(images) - 1))
        images[at] = data.draw(st.sampled_from(CHANGED_CARDS)).ljust(80)[:80]
    changed = "".join(images)
    _KNOWN.clear()
    expected = _parsed(changed)  # parsed whole: nothing known
    _KNOWN.clear()
    parse_cards(base, path="base", offset=0)
    assert _parsed(changed) == expected
    # header_columns gives each header's values as parse_cards(...).get does.
    if isinstance(expected, str):
        return
    from fficube.fitsblocks import header_columns

    keys = sorted({*expected, "NOSUCHKEY", "tstart"})
    _KNOWN.clear()
    columns = header_columns([base, changed, base, changed], keys, paths=["a", "b", "c", "d"])
    for i, raw in enumerate([base, changed, base, changed]):
        _KNOWN.clear()
        cards = parse_cards(raw, path="f", offset=0)
        for key in keys:
            value = cards.get(key)
            assert columns[key][i] == value and type(columns[key][i]) is type(value), (key, i)


def test_columns_of_headers_of_several_lengths_and_kinds() -> None:
    from fficube.fitsblocks import header_columns

    other = _cut(text("SIMPLE  =                    T", "TSTART  =                  7.0"))
    special = _cut(text("SIMPLE  =                    T", "TSTART  =                  8.0", "HIERARCH A B = 3"))
    raws = [BASE, other, BASE.replace("1325.125", "1326.125"), special, other.replace("7.0", "9.0")]
    columns = header_columns(raws, ["TSTART", "CAMERA", "COMMENT"], paths=list("abcde"))
    assert columns["TSTART"] == [1325.125, 7.0, 1326.125, 8.0, 9.0]
    assert columns["CAMERA"] == [1, None, 1, None, None]
    assert columns["COMMENT"] == [["first comment"], None, ["first comment"], None, None]


def test_a_malformed_card_in_a_changed_header_names_its_file() -> None:
    from fficube.fitsblocks import header_columns

    bad = BASE.replace("TSTART  =             1325.125 / start", "TSTART  = 'unterminated".ljust(38))
    assert len(bad) == len(BASE)
    with pytest.raises(FitsFormatError, match="unreadable FITS header") as info:
        header_columns([BASE, bad], ["TSTART"], paths=["good.fits", "bad.fits"])
    assert "bad.fits" in str(info.value)


def test_columns_of_commentary_are_each_headers_own_lists() -> None:
    from fficube.fitsblocks import header_columns

    columns = header_columns([BASE, BASE.replace("1325.125", "1327.125")], ["COMMENT"], paths=["a", "b"])
    assert columns["COMMENT"] == [["first comment"], ["first comment"]]
    columns["COMMENT"][0].append("changed by a caller")
    assert columns["COMMENT"][1] == ["first comment"]


END_LIKE = [b"END", b"END     ", b"END     / x", b"XEND    ", b"   END  ", b"DATE-END= 'END     '", b"COMMENT END",
            b"ENDX    = 1", b"EN", b"SIMPLE  =                    T"]


@given(cards=st.lists(st.sampled_from(END_LIKE), max_size=80), shift=st.sampled_from([0, 3, 80, 2880]),
       cut=st.integers(0, 200))
@settings(max_examples=300, deadline=None)
def test_header_end_finds_the_first_end_card_in_whole_blocks(cards: list[bytes], shift: int, cut: int) -> None:
    from fficube.fitsblocks import BLOCK, header_end

    buf = b"x" * shift + b"".join(card.ljust(80) for card in cards).ljust(2 * BLOCK)
    buf = buf[: len(buf) - cut]
    limit = shift + (len(buf) - shift) // BLOCK * BLOCK
    expected = next((pos + 80 for pos in range(shift, limit, 80) if buf[pos : pos + 8] == b"END     "), None)
    assert header_end(buf, shift) == expected
