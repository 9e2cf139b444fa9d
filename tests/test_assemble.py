"""Placing slabs into blocks (fficube.assemble), pure: groups in one copy, decoding as astropy does."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from fficube.assemble import decode, place, place_group
from fficube.fetch import Arena, Slab
from fficube.scan import ImageLayout


def raw_layers(n: int, cols: int) -> tuple[ImageLayout, ...]:
    return tuple(ImageLayout(hdu=h + 1, offset=0, rows=0, cols=cols, bitpix=-32) for h in range(n))


def arena_of(values: np.ndarray, rows: int) -> Arena:
    """An arena holding ``values`` (group, layers, block_rows, cols), its slabs filled for ``rows`` rows."""
    data = values.view(np.uint32).copy()
    arena = Arena(data, [], home=None)  # type: ignore[arg-type]
    arena.slabs = [Slab(data[j].reshape(-1).view(np.uint8), None, rows=rows, arena=arena) for j in range(len(data))]
    return arena


@pytest.mark.parametrize(("group", "layers", "first_slot"), [(4, 2, 0), (3, 1, 2), (5, 2, 3)])
def test_place_group_equals_placing_each_ffi(group: int, layers: int, first_slot: int) -> None:
    rng = np.random.default_rng(group)
    block_rows, rows, cols, n_ffis = 6, 4, 7, 9  # a short last block: rows < block_rows
    values = rng.normal(size=(group, layers, block_rows, cols)).astype(">f4")
    arena = arena_of(values, rows)
    grouped = np.full((block_rows, cols, n_ffis, layers), np.nan, dtype=">f4")
    place_group(grouped, arena.slabs, raw_layers(layers, cols), first_slot)
    single = np.full_like(grouped, np.nan)
    for j, slab in enumerate(arena.slabs):
        place(single, slab, raw_layers(layers, cols), first_slot + j)
    np.testing.assert_array_equal(grouped, single)
    # Each FFI's rows land in its slot, layer by layer; nothing else is touched.
    for j in range(group):
        np.testing.assert_array_equal(grouped[:rows, :, first_slot + j, :], values[j, :, :rows, :].transpose(1, 2, 0))
    others = [s for s in range(n_ffis) if not first_slot <= s < first_slot + group]
    assert np.isnan(grouped[:, :, others, :]).all() and np.isnan(grouped[rows:]).all()


def test_place_group_refuses_slabs_of_two_arenas() -> None:
    values = np.zeros((2, 1, 2, 3), dtype=">f4")
    a, b = arena_of(values, 2), arena_of(values, 2)
    with pytest.raises(AssertionError, match="one arena"):
        place_group(np.zeros((2, 3, 4, 1), dtype=">f4"), [a.slabs[0], b.slabs[1]], raw_layers(1, 3), 0)


@pytest.mark.parametrize(("bitpix", "bscale", "bzero", "blank"), [(16, 2.5, 100.0, -32768), (32, 0.1, -3.0, None),
                                                                   (-32, 1.5, 0.25, None), (8, 0.5, 3.0, 0),
                                                                   (16, 1.0, 0.0, 7), (32, 1.0, 0.0, None), (8, 2.0, 0.0, 21),
                                                                   (16, 1.0, 32768.0, 5), (32, 1.0, 0.0, 0)])
def test_decode_gives_what_astropy_gives(bitpix: int, bscale: float, bzero: float, blank: int | None) -> None:
    dtype = {8: np.uint8, 16: np.int16, 32: np.int32, -32: np.float32}[bitpix]
    stored = (np.arange(24).reshape(4, 6) * 7 % 50).astype(dtype)
    hdu = fits.PrimaryHDU(stored)
    hdu.header.update(BSCALE=bscale, BZERO=bzero)
    if blank is not None:
        hdu.header["BLANK"] = blank
    buf = io.BytesIO()
    hdu.writeto(buf)
    with fits.open(io.BytesIO(buf.getvalue())) as hdus:
        expected = hdus[0].data.astype(np.float32)
    layout = ImageLayout(hdu=0, offset=0, rows=4, cols=6, bitpix=bitpix, bscale=bscale, bzero=bzero, blank=blank)
    got = decode(stored.astype(layout.dtype), layout).astype(np.float32)
    np.testing.assert_array_equal(got, expected)
