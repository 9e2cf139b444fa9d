"""FITS byte rules: 2880-byte blocks, 80-byte cards, data sizes, and headers read by range.

These are the few rules of the FITS standard that fficube needs to find its way
through a file without ``astropy.io.fits.open``: where a header ends, how long an
HDU's data is, and how padding rounds both up to whole blocks.  The scanner of FFIs,
the reader of existing cubes, the info-table encoder, the writer and ``verify`` all
use them.
"""

from __future__ import annotations

import collections
import functools
import math
import re
import warnings
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
from astropy.io import fits

from .errors import FitsFormatError

if TYPE_CHECKING:  # annotations only: the FITS rules import no storage code
    from .sources.base import ByteSource

__all__ = [
    "BLOCK", "CARD", "header_end", "padded", "parse_header", "int_card", "data_bytes", "HeaderReader", "Cards",
    "parse_cards", "header_columns", "HeaderWalk", "Read", "Steps", "drive",
]

T = TypeVar("T")

BLOCK = 2880
CARD = 80
#: What astropy raises for a card it cannot read (warnings are made errors).
MALFORMED = (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError,
             fits.verify.VerifyWarning, fits.verify.VerifyError)


def header_end(buf: bytes, start: int) -> int | None:
    """Return the offset just past the END card of the header at ``start``.

    ``None`` when ``buf`` ends before an END card is found.  Only whole 2880-byte
    blocks are examined, as FITS headers are made of them.
    """
    limit = start + (len(buf) - start) // BLOCK * BLOCK
    pos = start
    # bytes.find, not a loop over cards in Python; and of "END" alone: with the 8 bytes
    # "END     " the search shifts by one byte at each blank of the header (14 us a header).
    while (found := buf.find(b"END", pos, limit)) >= 0:
        if (found - start) % CARD == 0 and buf[found + 3 : found + 8] == b"     ":
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
    except MALFORMED as exc:
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


@dataclass(frozen=True, slots=True)
class _Known:
    """A header parsed whole, kept to read the next header of its length as a diff."""

    words: np.ndarray  #: the card images as uint64 words (WORDS per card), for a quick comparison
    keywords: tuple[str, ...]  #: each card's keyword; "" where a change needs a full parse
    values: dict[str, Any]
    commentary: tuple[str, ...]  #: keywords whose value is a list (copied per header)


#: The last header parsed whole of each length (in cards): a sector's headers of one
#: kind have the same cards in the same order, and differ in a few values.
_KNOWN: dict[int, _Known] = {}
#: Lengths kept at most (a process reading many kinds of file starts over beyond it).
KNOWN_LENGTHS = 64
#: Words of 8 bytes in a card.
WORDS = CARD // 8
#: A header differing from the known one in more than this share of its cards is parsed whole.
DIFF_SHARE = 0.25


def parse_cards(raw: str, *, path: str, offset: int) -> Cards:
    """:func:`parse_header` for headers read many times over: the values of ``raw``'s
    cards (up to END), each distinct card parsed by astropy once per process.

    A header of the same length as one parsed before is compared with it card by card
    (one vectorised comparison) and only its changed cards are parsed, when each of
    them is a plain card that keeps its keyword: the result is the same as a full
    parse, at a fraction of its cost (a sector's headers differ in times and checksums).

    Headers with long strings (CONTINUE), HIERARCH or record-valued cards are parsed
    whole by astropy, as :func:`parse_header` does.
    """
    n = len(raw) // CARD
    known = _KNOWN.get(n) if len(raw) == n * CARD else None
    if known is not None:
        cards = _parse_diff(raw, known)
        if cards is not None:
            return cards
    cards, fresh = _parse_whole(raw, path=path, offset=offset)
    if fresh is not None:
        if len(_KNOWN) >= KNOWN_LENGTHS:
            _KNOWN.clear()
        _KNOWN[n] = fresh
    return cards


def _words(raw: str) -> np.ndarray | None:
    try:
        data = raw.encode("ascii")
    except UnicodeEncodeError:
        return None
    return np.frombuffer(data, dtype=np.uint64)


def _changed_values(raw: str, known: _Known) -> list[tuple[str, Any]] | None:
    """(keyword, value) of the cards of ``raw`` that differ from ``known``'s, when each
    is a plain card that keeps its keyword; None if ``raw`` needs a full parse."""
    words = _words(raw)
    if words is None:
        return None
    # The cards holding a changed word (faster than a comparison by card for ~10 changes).
    changed = sorted({word // WORDS for word in np.flatnonzero(words != known.words).tolist()})
    if len(changed) > DIFF_SHARE * len(known.keywords):
        return None
    found = []
    for i in changed:
        key = known.keywords[i]  # "" where a change needs a full parse: no card's keyword is ""
        try:
            new_key, value, kind = _card(raw[i * CARD : (i + 1) * CARD])
        except MALFORMED:  # the full parse reports it, with the file
            return None
        if new_key != key or kind != PLAIN:
            return None
        found.append((key, value))
    return found


def _parse_diff(raw: str, known: _Known) -> Cards | None:
    """``raw`` read as a change of ``known``; None if a full parse is needed."""
    found = _changed_values(raw, known)
    if found is None:
        return None
    values = dict(known.values)
    values.update(found)
    for key in known.commentary:
        values[key] = list(values[key])
    return Cards(values)


def _parse_whole(raw: str, *, path: str, offset: int) -> tuple[Cards, _Known | None]:
    """Parse every card of ``raw``; also what a later header can be compared with."""
    images = [raw[i : i + CARD] for i in range(0, len(raw) - CARD + 1, CARD)]
    # Usually END is the last card (as header_end cuts headers); else look for the first.
    if images and images[-1].startswith("END     ") and "END     " not in raw[:-CARD]:
        end = len(images) - 1
    else:
        end = next((i for i, image in enumerate(images) if image.startswith("END     ")), len(images))
    try:
        parsed = list(map(_card, images[:end]))
    except MALFORMED as exc:
        raise FitsFormatError(
            f"unreadable FITS header ({exc})", path=path, byte_range=(offset, offset + len(raw))
        ) from exc
    kinds = {kind for _, _, kind in parsed}
    if SPECIAL in kinds:
        return Cards({}, parse_header(raw.encode("ascii"), path=path, offset=offset)), None
    # Reversed, so that the first card of a repeated keyword is the one kept.
    values: dict[str, Any] = {keyword: value for keyword, value, kind in reversed(parsed) if kind == PLAIN}
    commentary: list[str] = []
    if COMMENTARY in kinds:
        for keyword, value, kind in parsed:
            if kind == COMMENTARY:
                if keyword not in values:
                    commentary.append(keyword)
                values.setdefault(keyword, []).append(value)
    cards = Cards(values)
    words = _words(raw) if end == len(images) - 1 and len(raw) == len(images) * CARD else None
    if words is None:
        return cards, None
    counts = collections.Counter(keyword for keyword, _, _ in parsed)
    # A card may change by itself only if it is plain and its keyword is its own: a
    # change of a repeated or commentary keyword's card is read by a full parse.
    keywords = tuple(keyword if kind == PLAIN and counts[keyword] == 1 else "" for keyword, _, kind in parsed)
    known = _Known(words.copy(), (*keywords, ""), dict(values), tuple(commentary))  # "": the END card
    return Cards({k: list(v) if k in known.commentary else v for k, v in values.items()}), known


def header_columns(raws: Sequence[str], keys: Sequence[str], *, paths: Sequence[str]) -> dict[str, list[Any]]:
    """The values of ``keys`` in each header of ``raws``, a column per key, as
    ``parse_cards(raw).get(key)`` gives them (``None`` where a header lacks the key).

    For the info table of thousands of FFIs: a header of the same cards as the last
    one parsed whole differs from it in a few values, found by one vectorised
    comparison, so a column costs a list copy and those few cards instead of a
    lookup per header.

    Raises
    ------
    FitsFormatError
        If a header cannot be read (the error names its file).
    """
    n = len(raws)
    # Each header is read as (base index, changed keyword values) or, when it is not
    # a plain change of a base, parsed whole.
    bases: list[tuple[_Known, list[int]]] = []
    changes: list[tuple[int, str, Any]] = []
    whole: list[tuple[int, Cards]] = []
    last: dict[int, int] = {}  # length in cards -> index in bases
    for i, raw in enumerate(raws):
        length = len(raw) // CARD
        b = last.get(length) if len(raw) == length * CARD else None
        if b is not None:
            found = _changed_values(raw, bases[b][0])
            if found is not None:
                bases[b][1].append(i)
                changes.extend((i, key, value) for key, value in found)
                continue
        cards, known = _parse_whole(raw, path=paths[i], offset=0)
        if known is None:
            whole.append((i, cards))
            continue
        last[length] = len(bases)
        bases.append((known, [i]))
    result: dict[str, list[Any]] = {}
    for key in keys:
        if len(bases) == 1 and len(bases[0][1]) == n and not isinstance(_get(bases[0][0].values, key), list):
            result[key] = [_get(bases[0][0].values, key)] * n  # the usual case: one base for all
            continue
        column: list[Any] = [None] * n
        for known, members in bases:
            value = _get(known.values, key)
            for i in members:  # a commentary keyword's list is each header's own, as parse_cards gives it
                column[i] = list(value) if isinstance(value, list) else value
        result[key] = column
    named: dict[str, list[str]] = {}
    for key in keys:
        named.setdefault(key.upper(), []).append(key)
    for i, keyword, value in changes:
        for key in named.get(keyword, ()):
            result[key][i] = value
    for i, cards in whole:
        for key in keys:
            result[key][i] = cards.get(key)
    return result


def _get(values: dict[str, Any], key: str) -> Any:
    """``Cards(values).get(key)``."""
    value = values.get(key, _MISSING)
    return value if value is not _MISSING else values.get(key.upper())


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


#: A read the sans-IO code asks for: bytes ``start:stop`` of the file it is walking.
Read = tuple[int, int]
#: Sans-IO steps: yield the reads needed, receive their bytes, return the result.
Steps = Generator[Read, bytes, T]


async def drive(steps: Steps[T], read: Callable[[int, int], Awaitable[bytes]]) -> T:
    """Run sans-IO ``steps`` with awaited reads (``await read(start, stop)``)."""
    try:
        request = next(steps)
        while True:
            request = steps.send(await read(*request))
    except StopIteration as done:
        return cast(T, done.value)


class HeaderWalk:
    """Reads header text at given offsets of one file, sans I/O: its methods are
    generators of :data:`Read` requests, driven by :func:`drive` (any
    :class:`~fficube.sources.base.ByteSource`) or by blocking reads (a local file, in a worker thread).

    The last window read is kept, so that neighbouring headers cost no second read.
    """

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size
        self.window_start = 0
        self.window = b""  #: bytes of the file from ``window_start``
        self.bytes_used = 0

    def start(self, first_read: int) -> Steps[None]:
        """Read the first ``first_read`` bytes and check that the file is FITS.

        Raises
        ------
        FitsFormatError
            If the file does not start as a FITS file does.
        """
        head = yield (0, min(self.size, first_read))
        if not head.startswith(b"SIMPLE  =") or self.size < BLOCK:
            raise FitsFormatError("not a FITS file (it does not start with a SIMPLE card)", path=self.path)
        self.window_start, self.window = 0, head

    def header_at(self, offset: int, guess: int) -> Steps[tuple[fits.Header, str, int]]:
        """(header, raw text, offset past the padded header) of the HDU at ``offset``."""
        raw, end = yield from self.raw_at(offset, guess)
        return parse_header(raw, path=self.path, offset=offset), raw.decode("ascii"), end

    def cards_at(self, offset: int, guess: int) -> Steps[tuple[Cards, str, int]]:
        """:meth:`header_at` with the header as :class:`Cards` (for headers like many others)."""
        raw, end = yield from self.raw_at(offset, guess)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise FitsFormatError(f"unreadable FITS header ({exc})", path=self.path,
                                  byte_range=(offset, offset + len(raw))) from exc
        return parse_cards(text, path=self.path, offset=offset), text, end

    def raw_at(self, offset: int, guess: int) -> Steps[tuple[bytes, int]]:
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
            more = yield (window_end, min(self.size, window_end + chunk))
            self.window += more
            window_end += len(more)
            chunk *= 2  # a header larger than guessed: grow, so that the requests stay few
        start = offset - self.window_start
        raw = self.window[start:end]
        self.bytes_used += padded(len(raw))
        return raw, offset + padded(len(raw))


class HeaderReader:
    """:class:`HeaderWalk` driven by a :class:`~fficube.sources.base.ByteSource`: awaitable header reads."""

    def __init__(self, source: ByteSource, walk: HeaderWalk) -> None:
        self.source, self.walk = source, walk

    @property
    def size(self) -> int:
        return self.walk.size

    @property
    def bytes_used(self) -> int:
        return self.walk.bytes_used

    @classmethod
    async def open(cls, source: ByteSource, path: str, first_read: int) -> HeaderReader:
        """A reader for ``path`` with its first ``first_read`` bytes read.

        Raises
        ------
        FitsFormatError
            If the file does not start as a FITS file does.
        """
        reader = cls(source, HeaderWalk(path, await source.size(path)))
        await reader._drive(reader.walk.start(first_read))
        return reader

    async def header_at(self, offset: int, guess: int) -> tuple[fits.Header, str, int]:
        """Return (header, raw text, offset past the padded header) of the HDU at ``offset``."""
        return await self._drive(self.walk.header_at(offset, guess))

    async def cards_at(self, offset: int, guess: int) -> tuple[Cards, str, int]:
        """:meth:`header_at` with the header as :class:`Cards` (for headers like many others)."""
        return await self._drive(self.walk.cards_at(offset, guess))

    async def _drive(self, steps: Steps[T]) -> T:
        path = self.walk.path
        return await drive(steps, lambda start, stop: self.source.read(path, start, stop))
