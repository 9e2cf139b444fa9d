"""Which cube rows a (resumed) build writes, and which buffer bytes its blocks use: pure."""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers import plan_of

from fficube._buffers import ALIGN, aligned_buffer
from fficube.pipeline import in_use, rows_to_write
from fficube.plan import CubePlan


@pytest.fixture
def plan(sector) -> CubePlan:
    return plan_of(sector(n_ffis=3, shape=(30, 10), no_wcs=()), max_memory=10**9)


def test_all_bytes_needed_means_all_rows(plan: CubePlan) -> None:
    assert rows_to_write(plan, [(0, plan.total_bytes)]) is None


def test_headers_and_table_alone_need_no_rows(plan: CubePlan) -> None:
    assert rows_to_write(plan, [(0, plan.data_offset), (plan.table_offset, plan.total_bytes)]) == ()


def test_ranges_map_to_the_rows_holding_their_bytes(plan: CubePlan) -> None:
    start, row = plan.data_offset, plan.row_bytes
    # A range starting inside row 7 needs row 7; one ending inside row 12 needs row 12.
    assert rows_to_write(plan, [(start + 7 * row + 5, start + 12 * row + 1)]) == ((7, 13),)
    # What an S3 resume asks: part 1 (headers and the first rows) and what follows the parts S3 has.
    assert rows_to_write(plan, [(0, start + 3 * row), (start + 20 * row, plan.total_bytes)]) == ((0, 3), (20, 30))


def test_overlapping_or_touching_ranges_merge(plan: CubePlan) -> None:
    start, row = plan.data_offset, plan.row_bytes
    needed = [(start + 2 * row, start + 5 * row), (start + 5 * row, start + 9 * row - 1)]
    assert rows_to_write(plan, needed) == ((2, 9),)
    assert rows_to_write(plan, [(0, start + 4 * row), (start + 2 * row, plan.total_bytes)]) is None


def test_only_the_buffer_bytes_the_blocks_fill_are_mapped_ahead(sector) -> None:
    plan = plan_of(sector(n_ffis=3, shape=(30, 10), no_wcs=()), max_memory=85_000)
    assert plan.memory.block_buffers == 2 and len(plan.blocks) > 2
    buffers = [aligned_buffer(plan.memory.block_bytes) for _ in range(2)]
    full = in_use(plan, buffers)
    assert [len(b) for b in full] == [plan.block_rows * plan.row_bytes + ALIGN] * 2 == [len(b) for b in buffers]
    # A resume with one short block left: part of one buffer.
    one = in_use(replace(plan, row_ranges=((28, 30),)), buffers)
    assert [len(b) for b in one] == [2 * plan.row_bytes + ALIGN] and one[0].ctypes.data == buffers[0].ctypes.data
    assert in_use(replace(plan, row_ranges=()), buffers) == []
