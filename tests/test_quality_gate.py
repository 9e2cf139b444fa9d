"""The quality gate end to end: builds of sectors made with each defect, the CLI line, the JSON
report, ``fficube verify --quality`` (local and S3), resumed builds and updates, unchanged cube bytes."""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import numpy as np
from helpers import budget_for_rows, cancel_after_blocks, rewrite_ffi, run_cli, without_build_stamps

import fficube
from fficube.report import read_report
from fficube.synthetic import CADENCE_DAYS, spoc_name, tica_name, write_spoc_ffi, write_tica_ffi
from fficube.verify import verify_cube
from fficube.views.overview import read_overview

SHAPE = (30, 40)
START = 1325.3131
#: Time index -> the flags its FFI must get (all others: none).
EXPECTED = {
    2: ("no_wcs",),
    3: ("all_zero", "bad_but_marked_good"),
    4: ("all_nonfinite",),  # DQUALITY says bad: nothing hidden
    5: ("constant", "bad_but_marked_good"),
    7: ("gap_before",),
}
LINE = ("quality: 5 of 10 FFIs flagged: 1 all_zero (marked good), 1 all_nonfinite, 1 constant (marked good), "
        "1 no_wcs, 1 gap_before")


def write_defects(directory: Path, indices=range(10)) -> list[str]:
    """Ten SPOC FFIs, one defect each where EXPECTED says: no WCS, all zero (marked good), all NaN
    (marked bad), constant (marked good), and a gap of two missing cadences before the 8th."""
    directory.mkdir(parents=True, exist_ok=True)
    frames = {3: np.zeros(SHAPE, np.float32), 4: np.full(SHAPE, np.nan, np.float32),
              5: np.full(SHAPE, 7.5, np.float32)}
    dquality = {3: 0, 4: 128, 5: 0}
    paths = []
    for i in indices:
        start = START + (i + 2 * (i >= 7)) * CADENCE_DAYS
        path = str(directory / spoc_name(start, 1, 1, 1))
        data = (frames[i], frames[i]) if i in frames else None
        write_spoc_ffi(path, start=start, shape=SHAPE, wcs=i != 2, seed=i, data=data)
        if i in dquality:
            rewrite_ffi(path, path, image_cards={"DQUALITY": dquality[i]})
        paths.append(path)
    return paths[::-1]  # not in time order


def expected_flags(paths: list[str]) -> dict[str, tuple[str, ...]]:
    by_time = sorted(os.path.basename(p) for p in paths)  # SPOC names sort by start time
    return {name: EXPECTED.get(i, ()) for i, name in enumerate(by_time)}


def numbers(quality) -> list[tuple]:
    """What a verdict says about each FFI (NaN as None, so that lists compare)."""
    def plain(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

    return [(f.file, f.time, f.flags, plain(f.median), plain(f.nan_fraction)) for f in
            getattr(quality, "ffis", None) or quality.entries]


def test_a_build_flags_each_defect_and_verify_finds_the_same(tmp_path: Path) -> None:
    paths = write_defects(tmp_path / "ffis")
    cube, report = tmp_path / "cube.fits", tmp_path / "build.json"
    budget = budget_for_rows(paths, 6)  # five blocks: the gate sees each once
    code, out, err = run_cli("build", *paths, "-o", str(cube), "--max-memory", str(budget), "--report", str(report))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and "5 block(s)" in lines[0]
    assert lines[1] == f"{LINE}; report in {report}"

    built = read_report(report)
    assert {e.file: e.flags for e in built.entries} == expected_flags(paths)
    assert built.meta["summary"]["counts"]["all_zero"] == 1 and built.meta["sample"]["partial"] is False
    by_flag = {e.flags[0] if e.flags else "": e for e in built.entries}
    assert by_flag["all_zero"].median == 0.0 and by_flag["all_nonfinite"].nan_fraction == 1.0
    assert by_flag["all_nonfinite"].median is None and by_flag["constant"].median == 7.5
    assert 140 < by_flag[""].median < 160 and by_flag[""].nan_fraction == 0.0
    # The build checks SPOC's cadence numbers (FFIINDEX, from the scan of the primary
    # headers); verify, from the cube alone, cannot and says so.
    assert not any("repeated_cadence" in note for note in built.meta["notes"])
    # fficube plot --report reads it: every flag lands on its FFI.
    overview = asyncio.run(read_overview(cube, report=report))
    assert not overview.report_unmatched
    assert sorted(overview.report_flags) == sorted(
        (i, flag) for i, name in enumerate(overview.files) for flag in expected_flags(paths)[name])

    # verify --quality: the same verdicts from the cube alone (same sample: the same numbers).
    checked = tmp_path / "verify.json"
    code, out, err = run_cli("verify", str(cube), "--quality", "--report", str(checked))
    assert code == 0, err  # flags are about FFIs: the cube is sound
    assert ": sound" in out and out.splitlines()[-1] == f"{LINE}; report in {checked}"
    assert numbers(read_report(checked)) == numbers(built)
    assert any("repeated_cadence not checked" in note for note in read_report(checked).meta["notes"])

    # The Python API says the same.
    result = fficube.make_cube(paths, tmp_path / "again.fits", max_memory="4GB")
    assert result.quality is not None and result.quality.summary() == LINE
    verified = asyncio.run(verify_cube(cube, quality=True))
    assert verified.ok and numbers(verified.quality) == numbers(result.quality) == numbers(built)
    assert asyncio.run(verify_cube(cube)).quality is None  # not asked for


def test_the_gate_does_not_change_the_cube(tmp_path: Path) -> None:
    paths = write_defects(tmp_path / "ffis")
    on = fficube.make_cube(paths, tmp_path / "on.fits", max_memory=budget_for_rows(paths, 4))
    off = fficube.make_cube(paths, tmp_path / "off.fits", max_memory="4GB", quality=False)
    assert on.quality is not None and off.quality is None
    assert on.blocks > 1 and off.blocks == 1  # and other blocks: the gate sees them differently
    assert without_build_stamps((tmp_path / "on.fits").read_bytes()) == without_build_stamps(
        (tmp_path / "off.fits").read_bytes())


def test_repeated_tica_cadences_are_flagged(tmp_path: Path) -> None:
    directory = tmp_path / "tica"
    directory.mkdir()
    cadences = [117591, 117592, 117592, 117594, 117595]  # the 3rd repeats the 2nd's number
    paths = []
    for i, cadence in enumerate(cadences):
        path = str(directory / tica_name(117591 + i, 27, 1, 1))
        write_tica_ffi(path, start=2036.2795 + i * 10 / 1440, cadence=cadence, shape=SHAPE, seed=i)
        paths.append(path)
    result = fficube.make_cube(paths, tmp_path / "tica.fits", sector=27, max_memory="4GB")
    assert [f.flags for f in result.quality.ffis] == [(), ("repeated_cadence",), ("repeated_cadence",), (), ()]
    assert result.quality.cadence_column == "CADENCE" and result.quality.quality_column == "QUAL_BIT"
    assert result.quality.summary() == "quality: 2 of 5 FFIs flagged: 2 repeated_cadence"
    verified = asyncio.run(verify_cube(tmp_path / "tica.fits", quality=True))
    assert numbers(verified.quality) == numbers(result.quality)


async def test_a_resumed_build_says_its_sample_was_partial(tmp_path: Path) -> None:
    paths = await asyncio.to_thread(write_defects, tmp_path / "ffis")
    out = tmp_path / "c.fits"
    budget = await asyncio.to_thread(budget_for_rows, paths, 5)
    await cancel_after_blocks(3, lambda progress: fficube.build_cube(paths, out, max_memory=budget,
                                                                       progress=progress))
    result = await fficube.build_cube(paths, out, resume=True, max_memory=budget)
    quality = result.quality
    assert result.resumed_rows > 0 and quality.partial
    assert quality.pixels_seen == (SHAPE[0] - result.resumed_rows) * SHAPE[1]
    assert f"partial pixel sample: {SHAPE[0] - result.resumed_rows} of {SHAPE[0]} sampled rows" in quality.summary()
    # The whole-frame defects show in the rows it saw; verify --quality sees them all.
    assert {f.file: f.flags for f in quality.ffis} == expected_flags(paths)
    verified = await verify_cube(out, quality=True)
    assert not verified.quality.partial and verified.quality.summary() == LINE


def test_an_update_judges_old_and_new_ffis(tmp_path: Path) -> None:
    paths = write_defects(tmp_path / "ffis")
    old, new = sorted(paths)[:4], sorted(paths)[4:]  # the zero frame is old, the NaN frame and the gap new
    cube = tmp_path / "cube.fits"
    first = fficube.make_cube(old, cube, max_memory="4GB")
    assert first.quality.summary() == "quality: 2 of 4 FFIs flagged: 1 all_zero (marked good), 1 no_wcs"
    code, out, err = run_cli("update", str(cube), *new, "--max-memory", str(budget_for_rows(paths, 6)))
    assert code == 0, err
    assert out.splitlines()[-1] == LINE
    fresh = fficube.make_cube(paths, tmp_path / "fresh.fits", max_memory="4GB")
    assert numbers(asyncio.run(verify_cube(cube, quality=True)).quality) == numbers(fresh.quality)


def test_verify_quality_of_a_cube_on_s3(s3, tmp_path: Path) -> None:
    paths = write_defects(tmp_path / "ffis")
    urls = s3.upload(paths, "ffi/s0001")
    cube = f"s3://{s3.bucket}/cubes/cube.fits"
    option = ["--storage-option", f"endpoint_url={s3.url}"]
    code, out, err = run_cli("build", *urls, "-o", cube, *option, "--max-memory", "64MB")
    assert code == 0, err
    assert out.splitlines()[-1] == LINE
    report = tmp_path / "s3.json"
    code, out, err = run_cli("verify", cube, *option, "--report", str(report))  # --report implies --quality
    assert code == 0, err
    assert out.splitlines()[-1] == f"{LINE}; report in {report}"
    assert {e.file: e.flags for e in read_report(report).entries} == expected_flags(paths)


def test_repeated_spoc_cadences_are_flagged_from_the_primary_headers(sector, tmp_path: Path) -> None:
    from astropy.io import fits

    paths = sector(n_ffis=5, shape=(20, 24), no_wcs=())
    with fits.open(paths[0]) as first:
        index = first[0].header["FFIINDEX"]
    with fits.open(paths[3], mode="update") as again:  # a cadence delivered twice, under two names
        again[0].header["FFIINDEX"] = index
    result = fficube.make_cube(paths, tmp_path / "spoc.fits", sector=1)
    flagged = sorted(f.file for f in result.quality.ffis if "repeated_cadence" in f.flags)
    assert flagged == sorted(Path(p).name for p in (paths[0], paths[3]))
    assert result.quality.cadence_column == "FFIINDEX"
    assert result.quality.summary() == "quality: 2 of 5 FFIs flagged: 2 repeated_cadence"
