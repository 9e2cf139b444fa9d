"""Placing slabs into blocks (fficube.assemble), pure: groups in one copy, decoding as astropy does."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from helpers import budget_for_rows, scan_paths, without_build_stamps
from hypothesis import given, settings
from hypothesis import strategies as st

from fficube._buffers import aligned_buffer
from fficube.assemble import Block, assemble_blocks, decode, place, place_group, transpose_group
from fficube.fetch import Arena, Slab, fetch_slabs, new_slab_pool
from fficube.plan import Limits, make_plan
from fficube.scan import ImageLayout
from fficube.sources.local import LocalSource
from fficube.sources.policy import DEFAULT_LOCAL_CONCURRENCY


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
    try:
        import fficube._kernels  # noqa: F401
    except ImportError:
        pytest.fail("fficube._kernels was not built: install a C compiler (gcc) and reinstall fficube")


def test_a_build_without_the_kernel_writes_the_same_cube(sector, tmp_path, monkeypatch) -> None:
    """What an install without a C compiler runs: numpy transposes, the writer sums the
    blocks itself.  Same bytes as with the kernel, checksums included (DATASUM)."""
    from cube_compare import assert_verifies

    import fficube
    import fficube.assemble

    paths = sector(n_ffis=70, shape=(40, 30), no_wcs=())  # groups of 64 and a short one
    fficube.make_cube(paths, tmp_path / "kernel.fits", max_memory="50MB")
    monkeypatch.setattr(fficube.assemble, "_transpose", None)
    fficube.make_cube(paths, tmp_path / "numpy.fits", max_memory="50MB")
    kernel, plain = (without_build_stamps((tmp_path / f"{name}.fits").read_bytes()) for name in ("kernel", "numpy"))
    assert kernel == plain
    assert_verifies(tmp_path / "numpy.fits")
    assert_verifies(tmp_path / "kernel.fits")


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
    out, sums = {}, {}
    for compiled in (True, False):
        pixels = np.full((block_rows, cols, width), 0xDEADBEEF, dtype=np.uint32)
        sums[compiled] = transpose_group(arena, planes, rows, pixels, first, compiled=compiled)
        out[compiled] = pixels
    np.testing.assert_array_equal(out[True], out[False])
    copied = arena.reshape(-1, block_rows, cols)[:planes, :rows]
    np.testing.assert_array_equal(out[True][:rows, :, first : first + planes], copied.transpose(1, 2, 0))
    # The kernel sums what it copied as FITS does (big-endian words); numpy's copy does not.
    assert sums[True] == int(np.sum(copied.view(">u4"), dtype=np.uint64)) and sums[False] is None


def test_the_kernels_sum_holds_over_many_tiles_of_the_largest_words() -> None:
    """Byte sums are kept in 16-bit lanes and emptied every 256 words per lane: a group
    of full size, every byte 0xFF, would overflow them if they were emptied too late."""
    from fficube._kernels import transpose

    planes, pixels = 130, 16 * 2136 + 3  # tiles, and both kinds of edge
    src = np.full(planes * pixels, 0xFFFFFFFF, dtype=np.uint32)
    dst = np.zeros(pixels * planes, dtype=np.uint32)
    assert transpose(src, dst, planes, pixels, pixels, planes, 0) == planes * pixels * 0xFFFFFFFF
    rng = np.random.default_rng(7)
    src = rng.integers(0, 2**32, size=planes * pixels, dtype=np.uint32)
    total = transpose(src, dst, planes, pixels, pixels, planes, 0)
    assert total == int(np.sum(src.view(">u4"), dtype=np.uint64))
    with pytest.raises(ValueError, match="overflow"):
        transpose(src, dst, 2**16, 1, 2**16, 2**16, 0)  # more words than a sum may hold


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


class HeldSource:
    """A real LocalSource whose first read waits for ``release``, and which notes the
    block of every read it is asked for (``blocks``: file offset -> block index);
    ``started`` is set at the first read of block ``signal``."""

    def __init__(self, blocks: dict[tuple[str, int], int], signal: int = 2) -> None:
        self.inner, self.blocks, self.signal = LocalSource(2), blocks, signal
        self.release, self.started = asyncio.Event(), asyncio.Event()
        self.seen: list[int] = []
        self.stats = self.inner.stats

    async def size(self, path: str) -> int:
        return await self.inner.size(path)

    async def read(self, path: str, start: int, stop: int) -> bytes:
        return await self.inner.read(path, start, stop)

    async def readinto(self, path: str, start: int, buf: memoryview) -> None:
        first = not self.seen
        self.seen.append(self.blocks[path, start])
        if self.seen[-1] == self.signal:
            self.started.set()
        if first:
            await self.release.wait()
        await self.inner.readinto(path, start, buf)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_slow_read_does_not_stop_the_next_block_from_being_assembled(sector) -> None:
    """Block 0's first read is held.  Block 1 is assembled in the second block buffer
    meanwhile, so its slab buffers go back to the fetcher, which goes on to block 2:
    with blocks assembled one at a time, block 1's slabs would wait for block 0 and the
    fetcher would run out of buffers before block 2.  The blocks still reach the writer
    in order, with the bytes of each FFI in place."""
    paths = sector(n_ffis=4, shape=(30, 10), no_wcs=())
    ffis = scan_paths(paths)
    limits = Limits.for_build(budget_for_rows(paths, 5), DEFAULT_LOCAL_CONCURRENCY, local=True, quality=True)
    plan = make_plan(ffis, limits)  # as budget_for_rows plans a local build
    # Two arenas of two FFIs, two block buffers: the case where the order matters.
    assert plan.memory.group == 2 and plan.memory.slabs == 4 and plan.memory.block_buffers == 2
    assert len(plan.blocks) >= 3
    offsets = {(f.path, layout.row_range(start, stop)[0]): index for f in plan.files for layout in f.layers
               for index, (start, stop) in enumerate(plan.blocks)}
    cube = np.zeros(plan.shape, dtype=np.float32)
    order: list[int] = []
    asyncio.run(_assemble_holding_the_first_read(plan, offsets, cube, order))
    assert order == list(range(len(plan.blocks)))
    for index, ffi in enumerate(plan.files):
        with fits.open(ffi.path) as hdul:
            np.testing.assert_array_equal(cube[:, :, plan.slot(index), 0], hdul[1].data)
            np.testing.assert_array_equal(cube[:, :, plan.slot(index), 1], hdul[2].data)


async def _assemble_holding_the_first_read(plan, offsets, cube: np.ndarray, order: list[int], *,
                                           signal: int = 2, settle: bool = False) -> int:
    """Run fetch and assembly with block 0's first read held until block ``signal`` is
    read (with ``settle``: and the loop has turned long enough for more reads to start,
    if any could); return the last block read while the first read was held."""
    source = HeldSource(offsets, signal)
    reached = -1
    free_blocks: asyncio.Queue[np.ndarray] = asyncio.Queue()
    for _ in range(plan.memory.block_buffers):
        free_blocks.put_nowait(aligned_buffer(plan.memory.block_bytes))
    full_blocks: asyncio.Queue[Block | None] = asyncio.Queue(maxsize=1)
    ready: asyncio.Queue[list[Slab]] = asyncio.Queue()

    async def writer() -> None:
        while (item := await full_blocks.get()) is not None:
            order.append(item.number)
            cube[item.start : item.stop] = item.data[: item.stop - item.start]
            free_blocks.put_nowait(item.buffer)

    async def hold() -> None:
        nonlocal reached
        await asyncio.wait_for(source.started.wait(), timeout=30)
        if settle:  # however long the loop turns, no read beyond the pool's may start
            for _ in range(20):
                for _ in range(20):
                    await asyncio.sleep(0)
                await asyncio.to_thread(lambda: None)
        assert 0 not in order  # block 0 is still waiting for its first read
        reached = max(source.seen)
        source.release.set()

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(fetch_slabs(plan, source, new_slab_pool(plan), ready))
            tg.create_task(assemble_blocks(plan, ready, free_blocks, full_blocks))
            tg.create_task(writer())
            tg.create_task(hold())
    finally:
        await source.aclose()
    return reached


def test_while_a_remote_read_is_held_reads_go_on_until_the_read_ahead_budget_is_spent(sector) -> None:
    """A remote build's pool holds several blocks of reads (bought with budget the
    blocks leave over).  Block 0's first read is held: block 1 is assembled beside it,
    and the fetcher reads blocks 2, 3 and 4 into the rest of the pool, then stops, its
    buffers spent: ahead by the bytes the plan gave it, no more.  Released, the blocks
    reach the writer in order, every byte in place."""
    paths = sector(n_ffis=4, shape=(80, 30), no_wcs=())
    ffis = scan_paths(paths)
    limits = replace(Limits.for_build(10**9, 32, local=False), max_read=10 * 30 * 4, max_lookahead=4)
    plan = make_plan(ffis, limits)
    assert len(plan.blocks) == 8 and plan.memory.group == 4
    assert plan.memory.slabs == 4 * 4 and plan.memory.block_buffers == 2  # four blocks of reads
    offsets = {(f.path, layout.row_range(start, stop)[0]): index for f in plan.files for layout in f.layers
               for index, (start, stop) in enumerate(plan.blocks)}
    cube = np.zeros(plan.shape, dtype=np.float32)
    order: list[int] = []
    reached = asyncio.run(_assemble_holding_the_first_read(plan, offsets, cube, order, signal=4, settle=True))
    assert reached == 4  # blocks 0 (held), 1 (assembled, its buffers back), 2, 3 and 4 (waiting)
    assert order == list(range(len(plan.blocks)))
    for index, ffi in enumerate(plan.files):
        with fits.open(ffi.path) as hdul:
            np.testing.assert_array_equal(cube[:, :, plan.slot(index), 0], hdul[1].data)
