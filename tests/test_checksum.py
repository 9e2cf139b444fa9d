"""fficube's streamed FITS checksums against astropy's."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from fficube.checksum import add, checksum_cards, data_sum, seal_header


def astropy_hdu_bytes(data: np.ndarray | None) -> tuple[bytes, bytes]:
    """An image extension sealed by astropy: (header bytes, data bytes)."""
    hdu = fits.ImageHDU(data)
    hdu.add_checksum(when="HDU checksum updated X")
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    raw = buf.getvalue()[2880:]
    head = len(hdu.header.tostring())
    return raw[:head], raw[head:]


@pytest.mark.parametrize("shape", [(3, 5), (100, 7), (2, 3, 4, 5), None])
def test_sealed_header_equals_astropys(shape) -> None:
    data = None if shape is None else np.random.default_rng(len(shape)).normal(size=shape).astype(">f4")
    header, body = astropy_hdu_bytes(data)
    parsed = fits.Header.fromstring(header.decode())
    assert int(parsed["DATASUM"]) == data_sum(body)
    # Put placeholders where astropy put its values, and seal: the same bytes.
    parsed["CHECKSUM"] = "0" * 16
    parsed["DATASUM"] = "0"
    assert seal_header(parsed.tostring().encode(), data_sum(body)) == header


def test_sealed_cube_header_verifies_in_astropy(recwarn) -> None:
    data = np.arange(2 * 3 * 4 * 2, dtype=">f4").reshape(2, 3, 4, 2)
    header = fits.ImageHDU(data).header
    checksum_cards(header, "2030-01-01T00:00:00")
    body = data.tobytes() + bytes(2880 - data.nbytes)
    sealed = seal_header(header.tostring().encode(), data_sum(body))
    raw = fits.PrimaryHDU().header.tostring().encode() + sealed + body
    with fits.open(io.BytesIO(raw), checksum=True) as hdus:
        assert hdus[1].header.comments["CHECKSUM"] == "HDU checksum updated 2030-01-01T00:00:00"
        np.testing.assert_array_equal(hdus[1].data, data)
    assert not [w for w in recwarn if "checksum" in str(w.message).lower()]
    broken = bytearray(raw)
    broken[-2880] ^= 1  # one bit of the data
    with pytest.warns(Warning, match="(?i)datasum|checksum"):
        with fits.open(io.BytesIO(bytes(broken)), checksum=True) as hdus:
            hdus[1].data  # noqa: B018


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=400), st.lists(st.integers(0, 100), max_size=6))
def test_sums_of_pieces_add_up_to_the_sum_of_the_whole(raw: bytes, cuts: list[int]) -> None:
    words = raw[: len(raw) // 4 * 4]
    bounds = sorted({0, len(words), *(min(4 * c, len(words)) for c in cuts)})
    pieces = [data_sum(words[a:b]) for a, b in itertools.pairwise(bounds)]
    assert add(*pieces) == data_sum(words)


def test_sum_of_extreme_words() -> None:
    ones = b"\xff" * 4 * 1000
    assert data_sum(ones) == 0xFFFFFFFF  # negative zero stays negative zero
    assert data_sum(b"\x00" * 64) == 0
    assert data_sum(b"\x80\x00\x00\x00" * 2) == 1  # the carry goes round
    with pytest.raises(ValueError, match="4-byte words"):
        data_sum(b"abc")
