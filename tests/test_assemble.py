"""Placing slabs into blocks (fficube.assemble), pure: groups in one copy, decoding as astropy does."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from fficube.assemble import decode, place, place_group, transpose_group
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


def test_the_compiled_kernel_is_built() -> None:
    """Where a C compiler is (CI, this project's machines), the install builds the kernel;
    an install that silently fell back to numpy would only show in benchmarks."""
    import fficube._kernels  # noqa: F401


@settings(max_examples=200, deadline=None)
@given(planes=st.integers(1, 11), block_rows=st.integers(1, 5), cols=st.integers(1, 13), spare=st.integers(0, 6),
       data=st.data())
def test_compiled_transposition_equals_numpys(planes: int, block_rows: int, cols: int, spare: int,
                                              data: st.DataObject) -> None:
    """Every shape the tiles leave edges in (planes and pixels not multiples of 4, a short
    last block, a group anywhere in the block's row of values) gives numpy's bytes, and
    writes nothing outside its columns."""
    rows = data.draw(st.integers(1, block_rows))
    first = data.draw(st.integers(0, spare))
    layers = data.draw(st.sampled_from([1, 2]))
    group = -(-planes // layers)
    rng = np.random.default_rng(planes * 1000 + block_rows * 100 + cols)
    arena = rng.integers(0, 2**32, size=(group, layers, block_rows, cols), dtype=np.uint32)
    width = planes + spare
    out = {}
    for compiled in (True, False):
        pixels = np.full((block_rows, cols, width), 0xDEADBEEF, dtype=np.uint32)
        transpose_group(arena, planes, rows, pixels, first, compiled=compiled)
        out[compiled] = pixels
    np.testing.assert_array_equal(out[True], out[False])
    expected = arena.reshape(-1, block_rows, cols)[:planes, :rows].transpose(1, 2, 0)
    np.testing.assert_array_equal(out[True][:rows, :, first : first + planes], expected)


def test_the_kernel_refuses_indices_outside_its_buffers() -> None:
    from fficube._kernels import transpose

    src, dst = np.zeros(12, dtype=np.uint32), np.zeros(12, dtype=np.uint32)
    transpose(src, dst, 3, 4, 4, 3, 0)  # exactly fits both
    with pytest.raises(ValueError, match="outside"):
        transpose(src, dst, 3, 4, 4, 3, 1)  # one word past the end of dst
    with pytest.raises(ValueError, match="outside"):
        transpose(src, dst, 3, 5, 4, 3, 0)  # past the end of src
    with pytest.raises(ValueError, match="outside"):
        transpose(src, dst, 4, 3, 3, 3, 0)  # planes wider than a pixel's run: writes would overlap
    with pytest.raises(TypeError):
        transpose(src, b"\0" * 48, 3, 4, 4, 3, 0)  # read-only destination
