"""The pure planner: order, template, blocks within the budget, refusals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
from pathlib import Path

import pytest
from astropy.io import fits
from helpers import scan_cube_at, scan_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fficube
from fficube.cubeinfo import Provenance
from fficube.errors import InputError, MemoryBudgetError, MixedInputError, NoInputsError
from fficube.plan import Limits, make_plan, plan_update


@pytest.fixture
def ffis(sector):
    return scan_paths(sector(n_ffis=10, shape=(37, 24), no_wcs=(0, 6)))


def test_time_order_and_template(ffis) -> None:
    plan = make_plan(ffis, Limits(max_memory=10**9))
    starts = [f.start for f in plan.files]
    assert starts == sorted(starts) and len(set(starts)) == 10
    # The template is the first *input* with WCS, whatever its time.
    expected = next(f for f in ffis if f.is_template)
    assert plan.template is expected
    assert "WCSAXES" in fits.Header.fromstring(expected.image_header)
    assert plan.shape == (37, 24, 10, 2)


def test_primary_header_from_earliest_and_latest(ffis) -> None:
    now = dt.datetime(2030, 1, 2, 3, 4, 5)
    plan = make_plan(ffis, Limits(max_memory=10**9), sector=1, now=now)
    header = plan.primary()
    earliest = fits.Header.fromstring(plan.files[0].primary_header)
    latest_image = fits.Header.fromstring(plan.files[-1].image_header)
    assert header["TSTART"] == earliest["TSTART"]
    assert header["TSTOP"] == latest_image["TSTOP"] and header["DATE-END"] == latest_image["DATE-END"]
    assert header["DATE"] == "2030-01-02" and header["ORIGIN"] == "STScI/MAST"
    assert header["SECTOR"] == 1 and header.comments["SECTOR"] == "Observing sector"
    # astrocut drops the FFI's CHECKSUM and keeps DATASUM; fficube seals the HDU anew.
    assert header.comments["CHECKSUM"].endswith("2030-01-02T03:04:05")
    assert header.comments["DATASUM"].endswith("2030-01-02T03:04:05") and header["DATASUM"] == "0"
    assert len(plan.primary_header) == 2880  # one block, as tesscube expects


@pytest.mark.parametrize("budget", [2 * 10**5, 3 * 10**5, 6 * 10**5, 10**9])
def test_blocks_fit_the_budget_and_cover_every_row(ffis, budget: int) -> None:
    plan = make_plan(ffis, Limits(max_memory=budget))
    assert plan.memory.total <= budget
    blocks = plan.blocks
    assert blocks[0][0] == 0 and blocks[-1][1] == 37
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
    assert max(stop - start for start, stop in blocks) == plan.block_rows
    # The budget is used, not wasted: one block fewer would not fit.
    if len(blocks) > 1:
        per_row = (plan.memory.total - plan.memory.fixed) / plan.block_rows
        fewer_rows = math.ceil(37 / (len(blocks) - 1))
        assert plan.memory.fixed + fewer_rows * per_row > budget


def test_reserved_output_memory_shrinks_the_blocks(ffis) -> None:
    free = make_plan(ffis, Limits(max_memory=250_000))
    reserved = make_plan(ffis, Limits(max_memory=250_000, reserved=50_000))
    assert reserved.block_rows < free.block_rows < 37
    assert reserved.memory.total <= 250_000 and reserved.memory.reserved == 50_000
    with pytest.raises(MemoryBudgetError, match="of upload buffers"):
        make_plan(ffis, Limits(max_memory=250_000, reserved=100_000))


def test_budget_too_small_names_the_numbers(ffis) -> None:
    with pytest.raises(MemoryBudgetError) as info:
        make_plan(ffis, Limits(max_memory=50_000))
    message = str(info.value)
    assert "max_memory = 50.0 kB" in message and "24 columns x 10 FFIs x 2 layer(s)" in message
    assert "give at least" in message


def test_refuses_mixed_cameras_shapes_and_products(sector) -> None:
    a = scan_paths(sector(n_ffis=3, shape=(16, 20), seed=1))
    cam2 = scan_paths(sector(n_ffis=2, shape=(16, 20), camera=2, seed=2, first_start=1330.0))
    with pytest.raises(MixedInputError, match=r"cameras differ \(1: 3 file\(s\).*2: 2 file\(s\)"):
        make_plan(a + cam2, Limits(max_memory=10**9))
    other_shape = scan_paths(sector(n_ffis=1, shape=(16, 24), seed=3, first_start=1331.0))
    with pytest.raises(MixedInputError, match="image shapes differ.*16x20.*16x24"):
        make_plan(a + other_shape, Limits(max_memory=10**9))
    tica = scan_paths(sector(n_ffis=1, shape=(16, 20), product="tica", seed=4, first_start=1332.0))
    with pytest.raises(MixedInputError, match="products differ.*SPOC.*TICA"):
        make_plan(a + tica, Limits(max_memory=10**9))


def test_refuses_two_files_with_one_start_time(sector, tmp_path) -> None:
    first = scan_paths(sector(n_ffis=2, shape=(16, 20), seed=1))
    again = scan_paths(sector(n_ffis=1, shape=(16, 20), seed=2))  # same first start time
    with pytest.raises(InputError, match="same TSTART"):
        make_plan(first + again, Limits(max_memory=10**9))


def test_refuses_no_template_and_no_input(sector) -> None:
    with pytest.raises(InputError, match=r"template.*WCSAXES = 2"):
        make_plan(scan_paths(sector(n_ffis=3, shape=(16, 20), no_wcs=(0, 1, 2))), Limits(max_memory=10**9))
    with pytest.raises(NoInputsError):
        make_plan([], Limits(max_memory=10**9))


def test_block_cap_limits_blocks_whatever_the_budget(ffis) -> None:
    row_bytes = 24 * 10 * 2 * 4
    capped = make_plan(ffis, Limits(max_memory=10**9, max_block_bytes=5 * row_bytes))
    assert capped.block_rows == 5 and len(capped.blocks) == 8 and capped.memory.block_buffers == 2
    assert make_plan(ffis, Limits(max_memory=10**9)).block_rows == 37  # uncapped: one block
    # A tight budget still wins over the cap.
    tight = make_plan(ffis, Limits(max_memory=250_000, max_block_bytes=10**9))
    assert tight.block_rows == make_plan(ffis, Limits(max_memory=250_000)).block_rows < 37


def test_block_cap_never_makes_reads_smaller_than_min_read(ffis) -> None:
    cols, n = 24, 10
    row_bytes = cols * n * 2 * 4
    # A cap of one row, but reads of 20 rows of one layer (20 x 24 x 4 bytes): 37 rows
    # make two blocks, evened out to 19 rows.
    plan = make_plan(ffis, Limits(max_memory=10**9, max_block_bytes=row_bytes, min_read=20 * cols * 4))
    assert plan.block_rows == 19 and len(plan.blocks) == 2
    assert make_plan(ffis, Limits(max_memory=10**9, max_block_bytes=row_bytes)).block_rows == 1


def test_plan_update_interleaves_new_ffis_in_time_order(sector, tmp_path) -> None:
    paths = sorted(sector(n_ffis=7, shape=(12, 10), no_wcs=()))  # names sort in time order
    old, new = paths[1::2], paths[0::2]  # new FFIs before, between and after the old ones
    fficube.make_cube(old, tmp_path / "old.fits")
    cube = scan_cube_at(tmp_path / "old.fits")
    now = dt.datetime(2026, 12, 1, 12, 0, 0)
    plan = plan_update(cube, scan_paths(new), Limits(max_memory=10**9), now=now)
    assert plan.shape == (12, 10, 7, 2) and plan.template is None
    assert [f.path for f in plan.files] == new
    assert plan.slots == (0, 2, 4, 6) and plan.base is not None and plan.base.slots == (1, 3, 5)
    assert plan.base.row_bytes == 10 * 3 * 2 * 4 and plan.base.data_offset == cube.data_offset
    table = fits.BinTableHDU.fromstring(plan.info_table)
    assert [n.rsplit("/", 1)[-1] for n in table.data["FFI_FILE"]] == [p.rsplit("/", 1)[-1] for p in paths]
    assert list(table.data["TSTART"]) == sorted(table.data["TSTART"])
    # Provenance goes into HDU 1's header (one block); the primary header gains no card.
    assert "HISTORY" not in plan.primary() and plan.data_offset == cube.data_offset == 5760
    provenance = Provenance.of(fits.Header.fromstring(plan.cube_header.decode()))
    assert provenance is not None and provenance.n_updates == 1 and len(plan.cube_header) == 2880
    assert provenance.updates == (f"2026-12-01 v{fficube.__version__} +4 {new[0].rsplit('/', 1)[-1]}",)
    # The plan is what a fresh build of all the FFIs would be, but for the HISTORY cards.
    fresh = make_plan(scan_paths(paths), Limits(max_memory=10**9), now=now)
    assert fits.BinTableHDU.fromstring(fresh.info_table).data.tobytes() == table.data.tobytes()


def test_plan_update_refuses_a_start_time_already_in_the_cube(sector, tmp_path) -> None:
    paths = sorted(sector(n_ffis=3, shape=(12, 10), no_wcs=()))
    fficube.make_cube(paths, tmp_path / "old.fits")
    again = tmp_path / "copy" / "again_ffic.fits"
    again.parent.mkdir()
    again.write_bytes(Path(paths[1]).read_bytes())
    with pytest.raises(InputError, match="share a start time"):
        plan_update(scan_cube_at(tmp_path / "old.fits"), scan_paths([str(again)]), Limits(max_memory=10**9))


def test_remote_reads_run_a_block_ahead_so_one_slow_get_does_not_stop_them(ffis) -> None:
    local = make_plan(ffis, Limits.for_build(10**8, 32, local=True))
    remote = make_plan(ffis, Limits.for_build(10**8, 32, local=False))
    assert local.memory.slabs == len(ffis)  # one block's reads at most
    assert remote.memory.slabs == 2 * len(ffis)  # this block's and the next one's
    assert remote.memory.total <= 10**8


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 2100), cols=st.integers(1, 2200), n=st.integers(1, 3000), layers=st.sampled_from([1, 2]),
       budget=st.integers(10**5, 10**10), remote=st.booleans(), concurrency=st.integers(1, 64),
       extras=st.sampled_from(["", "quality", "pixel_stats"]))
def test_read_ahead_is_bought_with_budget_left_over_and_never_exceeds_it(
    ffis, rows, cols, n, layers, budget, remote, concurrency, extras
) -> None:
    """Whatever the cube and budget: the plan's buffers, reads ahead included, fit the
    budget; a remote build reads at least this block and the next ahead, at most
    REMOTE_MAX_LOOKAHEAD blocks, each read at most REMOTE_MAX_READ
    unless one row is more."""
    from fficube.plan import GROUP, REMOTE_MAX_LOOKAHEAD, REMOTE_MAX_READ, plan_memory

    limits = Limits.for_build(budget, concurrency, local=not remote, quality=extras == "quality",
                              pixel_stats=extras == "pixel_stats")
    files = [f for f in ffis if len(f.layers) >= layers][:1] * n
    try:
        block_rows, memory = plan_memory((rows, cols, n, layers), files, 0, limits, group=GROUP)
    except MemoryBudgetError:
        return
    assert memory.total <= budget
    assert memory.read_ahead_bytes == memory.slabs * memory.slab_bytes
    n_blocks = math.ceil(rows / block_rows)
    if remote and n_blocks > 1:
        assert block_rows * cols * 4 <= max(REMOTE_MAX_READ, cols * 4)  # one read of a layer
        assert min(2 * n, limits.read_ahead) <= memory.slabs <= REMOTE_MAX_LOOKAHEAD * n


def test_a_small_remote_cube_with_a_large_budget_reads_several_blocks_ahead(sector) -> None:
    from fficube.plan import REMOTE_MAX_READ

    ffis = scan_paths(sector(n_ffis=4, shape=(400, 300), no_wcs=()))
    # GETs of 100 rows (120 kB here): small enough that four blocks fit many times over
    limits = dataclasses.replace(Limits.for_build(10**9, 32, local=False), max_read=100 * 300 * 4)
    plan = make_plan(ffis, limits)
    assert plan.block_rows == 100 and len(plan.blocks) == 4
    assert plan.memory.slabs == 4 * 4  # every block's reads: the budget holds them all
    default = make_plan(ffis, Limits.for_build(10**9, 32, local=False))
    assert default.block_rows * 300 * 4 <= REMOTE_MAX_READ
