"""Staged builds: remote FFIs fetched whole (a few large GETs each) into a directory, then built locally.

Against moto's S3 server, through the counting proxy: GETs are counted where they
arrive, and every staged cube is compared with a direct build of the same objects.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from pathlib import Path

import pytest
from cube_compare import assert_verifies
from helpers import cancel_after_blocks, rewrite_ffi, run_cli, without_build_stamps

import fficube
from fficube.errors import OptionError, OutputError, ReadError
from fficube.inputs import resolve_inputs
from fficube.sources.fsspec import Filesystems
from fficube.stage import RANGE, RECORD_SUFFIX, ranges_of, stage_inputs

MIB = 2**20


def object_gets(proxy, prefix: str) -> list[str]:
    """The GETs of objects under ``prefix`` the proxy saw (listings are not object GETs)."""
    return [p for p in proxy.state.paths if p.startswith(f"GET /{prefix}")]


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


@pytest.fixture
def bucket_ffis(s3, sector) -> tuple[list[str], str]:
    """Six small FFIs in the bucket under ffi/: (local paths, the prefix URL)."""
    paths = sector(n_ffis=6, shape=(40, 50), no_wcs=())
    s3.upload(paths, "ffi")
    return paths, f"s3://{s3.bucket}/ffi/"


def test_ranges_are_few_and_large() -> None:
    assert ranges_of(1000) == [(0, 1000)] and ranges_of(0) == []
    spoc = 2 * 2078 * 2136 * 4 + 5 * 2880  # a SPOC FFI: 35.5 MB
    cuts = ranges_of(spoc)
    assert len(cuts) == 3 and cuts[0][0] == 0 and cuts[-1][1] == spoc
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cuts))
    for size in (RANGE + 1, 17_600_000, spoc, 20 * RANGE + 5):
        lengths = [stop - start for start, stop in ranges_of(size)]
        assert all(8 * MIB <= n <= RANGE for n in lengths), (size, lengths)


def test_staged_cube_equals_the_direct_one_in_one_get_per_ffi(s3, proxy, bucket_ffis, tmp_path: Path) -> None:
    paths, prefix = bucket_ffis
    direct_proxy, staged_proxy = proxy(), proxy()
    direct = fficube.make_cube(prefix, tmp_path / "direct.fits", sector=1, max_memory="200kB",
                               storage_options={"endpoint_url": direct_proxy.url})
    stage = tmp_path / "stage"
    staged = fficube.make_cube(prefix, tmp_path / "staged.fits", sector=1, max_memory="200kB", stage=stage,
                               storage_options={"endpoint_url": staged_proxy.url})
    assert direct.blocks > 2  # so that a direct build reads each FFI many times
    assert len(object_gets(direct_proxy, f"{s3.bucket}/ffi/")) == direct.requests > 2 * len(paths)
    assert len(object_gets(staged_proxy, f"{s3.bucket}/ffi/")) == staged.stage_requests == len(paths)
    assert staged.staged == len(paths) and staged.staged_reused == 0 and staged.stage_bytes == sum(
        Path(p).stat().st_size for p in paths)
    assert "staged 6 FFIs first: fetched 6" in staged.summary() and "(1.0 per FFI)" in staged.summary()
    assert without_build_stamps((tmp_path / "staged.fits").read_bytes()) == without_build_stamps(
        (tmp_path / "direct.fits").read_bytes())
    assert_verifies(tmp_path / "staged.fits")
    assert files_under(stage) == []  # removed after the build


def test_an_ffi_over_16_mib_is_fetched_in_ranges_of_at_least_8_mib(s3, proxy, sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=1, shape=(1100, 2000), no_wcs=())  # 17.6 MB
    s3.upload(paths, "big")
    p = proxy()
    result = fficube.make_cube(f"s3://{s3.bucket}/big/", tmp_path / "c.fits", stage=tmp_path / "stage",
                               storage_options={"endpoint_url": p.url}, max_memory="200MB")
    assert len(object_gets(p, f"{s3.bucket}/big/")) == result.stage_requests == 2  # two ranges
    direct = tmp_path / "direct.fits"
    fficube.make_cube(paths, direct, max_memory="200MB")
    assert without_build_stamps((tmp_path / "c.fits").read_bytes()) == without_build_stamps(direct.read_bytes())


def test_free_space_is_checked_before_anything_is_fetched(s3, proxy, bucket_ffis, monkeypatch, tmp_path) -> None:
    _, prefix = bucket_ffis
    p = proxy()
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=5000))
    output = tmp_path / "c.fits"
    with pytest.raises(OutputError, match=r"stage: not enough free space to stage the inputs: 6 FFI\(s\) need "
                                          r"[\d.]+ kB and [\d.]+ kB for .*c.fits, but there are 5.0 kB free"):
        fficube.make_cube(prefix, output, stage=tmp_path / "stage", storage_options={"endpoint_url": p.url})
    assert object_gets(p, f"{s3.bucket}/ffi/") == [] and not output.exists()
    code, _, err = run_cli("build", prefix, "-o", str(output), "--stage", str(tmp_path / "stage"), "-q",
                           "--storage-option", f"endpoint_url={p.url}")
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("fficube: error: ") and "not enough free space" in last


def test_staged_copies_are_reused_if_unchanged_and_fetched_again_if_not(s3, proxy, bucket_ffis, tmp_path) -> None:
    paths, prefix = bucket_ffis
    stage = tmp_path / "stage"

    def build(name: str, **options):
        p = proxy()
        result = fficube.make_cube(prefix, tmp_path / name, sector=1, stage=stage, keep_stage=True,
                                   storage_options={"endpoint_url": p.url}, **options)
        return result, len(object_gets(p, f"{s3.bucket}/ffi/"))

    first, gets = build("first.fits")
    assert (first.staged, first.staged_reused, gets) == (6, 0, 6)
    copies = [f for f in files_under(stage) if not f.endswith(RECORD_SUFFIX)]
    assert len(copies) == 6 and all(f.startswith(f"{s3.bucket}/ffi/") for f in copies)
    assert len(files_under(stage)) == 12  # each copy has its record

    again, gets = build("again.fits")
    assert (again.staged, again.staged_reused, gets) == (0, 6, 0)
    assert without_build_stamps((tmp_path / "again.fits").read_bytes()) == without_build_stamps(
        (tmp_path / "first.fits").read_bytes())

    # A copy cut short, and an object replaced since: those two are fetched again.
    (stage / copies[0]).write_bytes((stage / copies[0]).read_bytes()[:1000])
    changed = rewrite_ffi(paths[1], str(tmp_path / Path(paths[1]).name), image_cards={"CRPIX1": 7.0})
    s3.upload([changed], "ffi")
    third, gets = build("third.fits")
    assert (third.staged, third.staged_reused, gets) == (2, 4, 2)
    direct = fficube.make_cube(prefix, tmp_path / "direct.fits", sector=1, storage_options={"endpoint_url": s3.url})
    assert direct.n_ffis == 6
    assert without_build_stamps((tmp_path / "third.fits").read_bytes()) == without_build_stamps(
        (tmp_path / "direct.fits").read_bytes())

    fourth, gets = build("fourth.fits", restart=True)  # restart: everything is fetched again
    assert (fourth.staged, fourth.staged_reused, gets) == (6, 0, 6)


def test_an_object_changed_after_listing_is_refused_not_mixed(s3, bucket_ffis, tmp_path: Path) -> None:
    paths, prefix = bucket_ffis

    async def stage_after_a_change() -> None:
        async with Filesystems(storage_options={"endpoint_url": s3.url}) as filesystems:
            found = await resolve_inputs(prefix, None, filesystems)
            changed = rewrite_ffi(paths[2], str(tmp_path / Path(paths[2]).name), image_cards={"CRPIX1": 9.0})
            s3.upload([changed], "ffi")
            await stage_inputs(found, str(tmp_path / "stage"), filesystems, concurrency=1, max_memory=2**30)

    with pytest.raises(ReadError, match=r"ffi/.*s_ffic.fits \(bytes 0-\d+\): changed since it was listed"):
        asyncio.run(stage_after_a_change())
    names = files_under(tmp_path / "stage")
    assert not any(Path(paths[2]).name in n for n in names)  # no copy, partial or record of it
    assert not any(n.endswith(".partial") for n in names)


def test_a_direct_build_interrupted_is_resumed_staged(s3, bucket_ffis, tmp_path: Path) -> None:
    _, prefix = bucket_ffis
    output = tmp_path / "c.fits"
    options = {"sector": 1, "max_memory": "200kB", "storage_options": {"endpoint_url": s3.url}}
    asyncio.run(cancel_after_blocks(2, lambda progress: fficube.build_cube(prefix, output, progress=progress,
                                                                          **options)))
    assert not output.exists() and Path(f"{output}.journal").exists()
    resumed = fficube.make_cube(prefix, output, resume=True, stage=tmp_path / "stage", **options)
    assert resumed.resumed_rows > 0 and resumed.staged == 6  # the same build, from the copies
    fficube.make_cube(prefix, tmp_path / "direct.fits", **options)
    assert without_build_stamps(output.read_bytes()) == without_build_stamps((tmp_path / "direct.fits").read_bytes())


def test_stage_needs_remote_inputs(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=2, shape=(20, 30))
    with pytest.raises(OptionError, match="stage: the inputs are local files"):
        fficube.make_cube(paths, tmp_path / "c.fits", stage=tmp_path / "stage")
    code, _, err = run_cli("build", *paths, "-o", str(tmp_path / "c.fits"), "--stage", str(tmp_path / "stage"))
    assert code == 1 and "--stage: the inputs are local files" in err


def test_a_copy_that_cannot_be_written_is_an_output_error(s3, bucket_ffis, tmp_path: Path) -> None:
    _, prefix = bucket_ffis
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / s3.bucket).write_text("a file where the bucket's folder would go")
    with pytest.raises(OutputError, match=r"stage/.*ffic.fits.partial: staging failed: "):
        fficube.make_cube(prefix, tmp_path / "c.fits", stage=stage, storage_options={"endpoint_url": s3.url})
    assert not (tmp_path / "c.fits").exists()
