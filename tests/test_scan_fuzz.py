"""Property-based: whatever bytes a file holds, the scanner answers with an FfiInfo or
one of fficube's own errors (never a stray IndexError, UnicodeDecodeError, ...)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from helpers import scan_one
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fficube.errors import FficubeError
from fficube.scan import FfiInfo
from fficube.synthetic import write_spoc_ffi, write_tica_ffi

_DIR = tempfile.mkdtemp(prefix="fficube-fuzz-")
VALID = {
    "spoc": Path(write_spoc_ffi(os.path.join(_DIR, "s.fits"), start=1400.0, shape=(6, 8))).read_bytes(),
    "tica": Path(write_tica_ffi(os.path.join(_DIR, "t.fits"), start=2040.0, shape=(6, 8))).read_bytes(),
}
CARD_VALUES = st.sampled_from(
    [b"", b"'", b"'unterminated", b"T", b"F", b"nan", b"1e999", b"-1", b"0", b"99999999999999999999",
     b"1.5", b"'text'", b"(1, 2)", b"\xff\xfe", b"=", b"/ comment only"]
)
KEYS = st.sampled_from([b"NAXIS", b"NAXIS1", b"NAXIS2", b"BITPIX", b"TSTART", b"STARTTJD", b"PCOUNT",
                        b"GCOUNT", b"BSCALE", b"BZERO", b"BLANK", b"XTENSION", b"EXTEND", b"END", b"SIMPLE"])


def _card(key: bytes, value: bytes) -> bytes:
    return (key.ljust(8) + b"= " + value).ljust(80)[:80]


@st.composite
def damaged(draw) -> bytes:
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    for _ in range(draw(st.integers(1, 4))):
        if len(data) < 80:
            break
        kind = draw(st.sampled_from(["card", "bytes", "truncate", "end"]))
        if kind == "card":  # overwrite a header card (headers are in the first blocks)
            at = draw(st.integers(0, min(len(data), 40 * 2880) // 80 - 1)) * 80
            data[at : at + 80] = _card(draw(KEYS), draw(CARD_VALUES))
        elif kind == "bytes":
            at = draw(st.integers(0, len(data) - 1))
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif data:  # remove an END card so that the header runs on
            at = data.find(b"END     ")
            if at >= 0:
                data[at : at + 8] = b"COMMENT "
    return bytes(data)


def scan_bytes(data: bytes):
    fd, path = tempfile.mkstemp(suffix=".fits", dir=_DIR)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        return scan_one(path)[0]
    finally:
        os.unlink(path)


# A damaged card can be one astropy reads with a notice (not a VerifyWarning, which the scanner
# makes an error): astropy's notice about the file, passed on as it is.
@pytest.mark.filterwarnings("ignore:The following header keyword is invalid:astropy.utils.exceptions.AstropyUserWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_scanner_raises_only_its_own_errors(data: bytes) -> None:
    try:
        info = scan_bytes(data)
    except FficubeError as exc:
        assert str(exc)  # a message, naming the file
        assert _DIR in str(exc)
    else:
        assert isinstance(info, FfiInfo)
        lay = info.layers[0]
        assert lay.rows >= 0 and lay.cols >= 0 and lay.offset + lay.rows * lay.cols * lay.itemsize <= info.size


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=6000))
def test_random_bytes_are_refused_cleanly(data: bytes) -> None:
    try:
        scan_bytes(data)
    except FficubeError:
        pass
