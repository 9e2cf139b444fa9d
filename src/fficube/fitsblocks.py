"""FITS byte rules: 2880-byte blocks, 80-byte cards, data sizes, and headers read by range.

These are the few rules of the FITS standard that fficube needs to find its way
through a file without ``astropy.io.fits.open``: where a header ends, how long an
HDU's data is, and how padding rounds both up to whole blocks.  The scanner of FFIs,
the reader of existing cubes, the info-table encoder, the writer and ``verify`` all
use them.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from astropy.io import fits

from .errors import FitsFormatError
from .storage import ByteSource

__all__ = [
    "BLOCK", "CARD", "header_end", "padded", "parse_header", "int_card", "data_bytes", "HeaderReader", "Cards",
    "parse_cards",
]

BLOCK = 2880
CARD = 80


def header_end(buf: bytes, start: int) -> int | None:
    """Return the offset just past the END card of the header at ``start``.

    ``None`` when ``buf`` ends before an END card is found.  Only whole 2880-byte
    blocks are examined, as FITS headers are made of them.
    """
    limit = start + (len(buf) - start) // BLOCK * BLOCK
    pos = start
    while (found := buf.find(b"END     ", pos, limit)) >= 0:  # bytes.find: no loop over cards in Python
        if (found - start) % CARD == 0:
            return found + CARD
        pos = found + 1
    return None


def padded(n: int) -> int:
    """``n`` rounded up to whole FITS blocks."""
    return -(-n // BLOCK) * BLOCK


def parse_header(raw: bytes, *, path: str, offset: int) -> fits.Header:
    """Parse header text, turning anything astropy dislikes into a FitsFormatError."""
    try:
        text = raw.decode("ascii")
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            header = fits.Header.fromstring(text)
            # Cards are parsed lazily: parse them all now, inside this guard, so that a
            # malformed card is reported here, with the file, and not later by astropy.
            for card in header.cards:
                card.value  # noqa: B018
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError,
            fits.verify.VerifyWarning, fits.verify.VerifyError) as exc:
        raise FitsFormatError(
            f"unreadable FITS header ({exc})", path=path, byte_range=(offset, offset + len(raw))
        ) from exc
    return header


#: astropy's keywords whose cards hold prose; ``cards[key]`` gives all their values.
COMMENTARY_KEYWORDS = frozenset({"", "COMMENT", "HISTORY"})  #: as astropy's Card._commentary_keywords, END aside
#: Distinct card images whose parse is kept: a sector's FFIs share most of their cards
#: (all but times, indices and checksums), and these stay in the cache as every FFI
#: uses them; the cards that differ from FFI to FFI evict each other.  About 1 MB.
CARD_CACHE = 4096


#: The commonest card forms (FITS fixed or free format, uppercase exponent): a keyword,
#: "= ", then a logical, an integer, a real or a string, then maybe a comment.  Cards
#: of these forms are read here; any other goes to astropy.
_SIMPLE = re.compile(
    r"(?P<key>[A-Z0-9_-]{1,8}) *= *"
    r"(?:(?P<bool>[TF])|(?P<num>[+-]?(?:\.\d+|\d+(?:\.\d*)?)(?:[DE][+-]?\d+)?)|'(?P<str>(?:[^']|'')*)')"
    r" *(?:/.*)?"
)


#: The start of a string that astropy may take for a record-valued keyword card's
#: ("AXIS.1: 1"); dates and times ("2018-07-25T19:29:42Z") do not look like one.
_FIELD_SPECIFIER = re.compile(r" *[A-Za-z_][\w.]* *:")


def _simple_card(image: str) -> tuple[str, Any] | None:
    """(keyword, value) of a card of one of the commonest forms, as astropy's ``Header``
    gives them; None for any other card (and for those astropy reads specially: HIERARCH,
    commentary, CONTINUE, strings that look like record-valued keywords or start a long
    string)."""
    match = _SIMPLE.fullmatch(image)
    if match is None or image[8:10] != "= ":
        return None
    key = match["key"]
    if key in ("HIERARCH", "CONTINUE", "COMMENT", "HISTORY") or len(image) != CARD or key != image[:8].rstrip(" "):
        return None
    if match["bool"] is not None:
        return key, match["bool"] == "T"
    if match["num"] is not None:
        text = match["num"].replace("D", "E")
        try:
            return key, int(text)  # as astropy: an integer if it reads as one, else a real
        except ValueError:
            return key, float(text)
    text = match["str"]
    if text.endswith("&") or (":" in text and _FIELD_SPECIFIER.match(text)):
        return None
    # astropy's defaults: '' is a quote, trailing blanks are dropped (strip_header_whitespace)
    return key, text.replace("''", "'").rstrip()


#: Kinds of card for :func:`parse_cards`.
PLAIN, COMMENTARY, SPECIAL = 0, 1, 2


@functools.lru_cache(maxsize=CARD_CACHE)
def _card(image: str) -> tuple[str, Any, int]:
    """(keyword, value as ``Header`` gives it, kind) of one card image, as astropy parses
    it.  The kind is SPECIAL for cards whose meaning depends on their neighbours or on
    astropy's header logic (long-string CONTINUE, HIERARCH, record-valued keywords).

    Raises what astropy raises for a malformed card (VerifyWarning as an error).
    """
    simple = _simple_card(image)
    if simple is not None:
        return simple[0], simple[1], PLAIN
    with warnings.catch_warnings():
        warnings.simplefilter("error", fits.verify.VerifyWarning)
        card = fits.Card.fromstring(image)
        keyword, value = card.keyword, card.value
    if keyword in COMMENTARY_KEYWORDS:
        return keyword, value, COMMENTARY
    if (keyword == "CONTINUE" or card.field_specifier is not None or image.startswith("HIERARCH")
            or (isinstance(value, str) and value.endswith("&"))):  # & starts a long string
        return keyword, value, SPECIAL
    # astropy's Header gives None for an undefined value (its card gives UNDEFINED)
    return keyword, None if isinstance(value, fits.card.Undefined) else value, PLAIN


_MISSING = object()


class Cards(Mapping[str, Any]):
    """A FITS header as the values of its keywords, read-only, as astropy gives them:
    the first card's value for a repeated keyword, all values (a list) for commentary
    keywords.

    Made by :func:`parse_cards`: the cards a sector's FFIs share are parsed once, not
    once per FFI, which makes scanning thousands of FFIs cost little more than reading
    their header bytes.
    """

    __slots__ = ("_header", "_values")

    def __init__(self, values: dict[str, Any], header: fits.Header | None = None) -> None:
        self._values = values
        self._header = header  #: astropy's header, for the rare headers it must interpret itself

    def __getitem__(self, key: str) -> Any:
        if self._header is not None:
            value = self._header[key]
            return list(value) if key.upper() in COMMENTARY_KEYWORDS else value
        return self._values[key.upper()]

    def get(self, key: str, default: Any = None) -> Any:
        if self._header is None:  # the usual case, kept short: a sector's table asks millions of times
            value = self._values.get(key, _MISSING)
            return value if value is not _MISSING else self._values.get(key.upper(), default)
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return key in self._header if self._header is not None else key.upper() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._header.keys() if self._header is not None else self._values)

    def __len__(self) -> int:
        return len(self._header) if self._header is not None else len(self._values)


def parse_cards(raw: str, *, path: str, offset: int) -> Cards:
    """:func:`parse_header` for headers read many times over: the values of ``raw``'s
    cards (up to END), each distinct card parsed by astropy once per process.

    Headers with long strings (CONTINUE), HIERARCH or record-valued cards are parsed
    whole by astropy, as :func:`parse_header` does.
    """
    images = [raw[i : i + CARD] for i in range(0, len(raw) - CARD + 1, CARD)]
    # Usually END is the last card (as header_end cuts headers); else look for the first.
    if images and images[-1].startswith("END     ") and "END     " not in raw[:-CARD]:
        end = len(images) - 1
    else:
        end = next((i for i, image in enumerate(images) if image.startswith("END     ")), len(images))
    try:
        parsed = list(map(_card, images[:end]))
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError,
            fits.verify.VerifyWarning, fits.verify.VerifyError) as exc:
        raise FitsFormatError(
            f"unreadable FITS header ({exc})", path=path, byte_range=(offset, offset + len(raw))
        ) from exc
    kinds = {kind for _, _, kind in parsed}
    if SPECIAL in kinds:
        return Cards({}, parse_header(raw.encode("ascii"), path=path, offset=offset))
    # Reversed, so that the first card of a repeated keyword is the one kept.
    values: dict[str, Any] = {keyword: value for keyword, value, kind in reversed(parsed) if kind == PLAIN}
    if COMMENTARY in kinds:
        for keyword, value, kind in parsed:
            if kind == COMMENTARY:
                values.setdefault(keyword, []).append(value)
    return Cards(values)


def int_card(header: Mapping[str, Any], key: str, default: int | None, *, path: str, hdu: int) -> int:
    value = header.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FitsFormatError(f"HDU {hdu}: {key} = {value!r} is not an integer", path=path)
    return int(value)


def data_bytes(header: Mapping[str, Any], *, path: str, hdu: int) -> int:
    """Size in bytes of the HDU's data, without padding (FITS standard 4.4.1)."""
    naxis = int_card(header, "NAXIS", None, path=path, hdu=hdu)
    if naxis == 0:
        return 0
    bitpix = int_card(header, "BITPIX", None, path=path, hdu=hdu)
    axes = [int_card(header, f"NAXIS{i}", None, path=path, hdu=hdu) for i in range(1, naxis + 1)]
    pcount = int_card(header, "PCOUNT", 0, path=path, hdu=hdu)
    gcount = int_card(header, "GCOUNT", 1, path=path, hdu=hdu)
    return abs(bitpix) // 8 * gcount * (pcount + math.prod(axes))


class HeaderReader:
    """Reads header text at given offsets, keeping the last window to avoid re-reads."""

    def __init__(self, source: ByteSource, path: str, size: int, window: bytes = b"") -> None:
        self.source, self.path, self.size = source, path, size
        self.window_start = 0
        self.window = window  #: bytes of the file from ``window_start``
        self.bytes_used = 0

    @classmethod
    async def open(cls, source: ByteSource, path: str, first_read: int) -> HeaderReader:
        """A reader for ``path`` with its first ``first_read`` bytes read.

        Raises
        ------
        FitsFormatError
            If the file does not start as a FITS file does.
        """
        size = await source.size(path)
        head = await source.read(path, 0, min(size, first_read))
        if not head.startswith(b"SIMPLE  =") or size < BLOCK:
            raise FitsFormatError("not a FITS file (it does not start with a SIMPLE card)", path=path)
        return cls(source, path, size, head)

    async def header_at(self, offset: int, guess: int) -> tuple[fits.Header, str, int]:
        """Return (header, raw text, offset past the padded header) of the HDU at ``offset``."""
        raw, end = await self._raw_at(offset, guess)
        return parse_header(raw, path=self.path, offset=offset), raw.decode("ascii"), end

    async def cards_at(self, offset: int, guess: int) -> tuple[Cards, str, int]:
        """:meth:`header_at` with the header as :class:`Cards` (for headers like many others)."""
        raw, end = await self._raw_at(offset, guess)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise FitsFormatError(f"unreadable FITS header ({exc})", path=self.path,
                                  byte_range=(offset, offset + len(raw))) from exc
        return parse_cards(text, path=self.path, offset=offset), text, end

    async def _raw_at(self, offset: int, guess: int) -> tuple[bytes, int]:
        """The header bytes at ``offset`` up to its END card, and the offset past its padding."""
        if offset + BLOCK > self.size:
            raise FitsFormatError(
                f"file ends at byte {self.size}, before the header expected at byte {offset}: truncated",
                path=self.path,
                byte_range=(offset, offset + BLOCK),
            )
        window_end = self.window_start + len(self.window)
        if not self.window_start <= offset < window_end:
            self.window_start, self.window = offset, b""
            window_end = offset
        chunk = max(guess, BLOCK)
        while True:
            end = header_end(self.window, offset - self.window_start)
            if end is not None:
                break
            if window_end >= self.size:
                raise FitsFormatError(
                    "no END card before the end of the file: not a complete FITS header",
                    path=self.path,
                    byte_range=(offset, self.size),
                )
            more = await self.source.read(self.path, window_end, min(self.size, window_end + chunk))
            self.window += more
            window_end += len(more)
            chunk *= 2  # a header larger than guessed: grow, so that the requests stay few
        start = offset - self.window_start
        raw = self.window[start:end]
        self.bytes_used += padded(len(raw))
        return raw, offset + padded(len(raw))
