"""``fficube verify``: sound cubes pass, every kind of damage is named."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from astropy.io import fits
from helpers import astrocut_cube, run_cli

import fficube
from fficube.verify import verify_cube

SHAPE = (30, 40)


@pytest.fixture
def cube(sector, tmp_path: Path) -> Path:
    paths = sector(n_ffis=5, shape=SHAPE)
    out = tmp_path / "cube.fits"
    fficube.make_cube(paths, out, sector=1, max_memory="200kB")
    return out


def statuses(path) -> dict[str, str]:
    result = asyncio.run(verify_cube(path))
    return {c.name: c.status for c in result.checks}


def damaged(cube: Path, offset: int, data: bytes) -> Path:
    copy = cube.with_name("damaged.fits")
    shutil.copy(cube, copy)
    with open(copy, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return copy


def test_a_sound_cube_passes_every_check(cube: Path) -> None:
    code, out, _ = run_cli("verify", str(cube))
    assert code == 0 and out.strip().endswith("read)") and ": sound" in out
    assert set(statuses(cube).values()) == {"ok"}
    assert len(statuses(cube)) == 7


def test_damage_is_found_and_named(cube: Path) -> None:
    with fits.open(cube) as hdus:
        data_at, table_at = hdus.fileinfo(1)["datLoc"], hdus.fileinfo(2)["datLoc"]
        header_value = hdus.fileinfo(0)["hdrLoc"] + 80 * list(hdus[0].header.keys()).index("SECTOR") + 29
    flipped = damaged(cube, data_at + 1000, b"\x7f")
    code, out, _ = run_cli("verify", str(flipped))
    assert code == 1 and "NOT sound" in out and "DATASUM is" in out and "but the data sums to" in out
    assert statuses(flipped)["checksums of HDU 1"] == "FAIL"

    edited = damaged(cube, header_value, b"9")  # SECTOR = 1 -> 9, without resealing
    assert statuses(edited)["checksums of HDU 0"] == "FAIL"
    assert statuses(damaged(cube, table_at + 10, b"\x01"))["checksums of HDU 2"] == "FAIL"

    longer = damaged(cube, cube.stat().st_size, b"\0" * 2880)
    assert statuses(longer)["size"] == "FAIL"
    short = cube.with_name("short.fits")
    short.write_bytes(cube.read_bytes()[: data_at + 5000])
    code, out, _ = run_cli("verify", str(short))
    assert code == 1 and "FAIL  structure" in out and "short.fits" in out


def test_time_order_is_checked(cube: Path, tmp_path: Path) -> None:
    unordered = tmp_path / "unordered.fits"
    with fits.open(cube) as hdus:
        table = hdus[2].data.copy()
        table["TSTART"][[1, 2]] = table["TSTART"][[2, 1]]
        fits.HDUList([hdus[0].copy(), fits.ImageHDU(hdus[1].data), fits.BinTableHDU(table)]).writeto(unordered)
    result = asyncio.run(verify_cube(unordered))
    check = {c.name: c for c in result.checks}["time order"]
    assert check.failed and "FFI 2" in check.detail and not result.ok


def test_astrocut_cubes_have_no_checksums_to_verify(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=4, shape=SHAPE)
    astrocut_cube(paths, tmp_path / "theirs.fits")
    found = statuses(tmp_path / "theirs.fits")
    assert found["checksums of HDU 1"] == "skip" and found["structure"] == found["size"] == "ok"
    assert run_cli("verify", str(tmp_path / "theirs.fits"))[0] == 0


def test_verify_a_cube_on_s3(s3, cube: Path) -> None:
    s3.client.upload_file(str(cube), s3.bucket, "c.fits")
    code, out, err = run_cli("verify", f"s3://{s3.bucket}/c.fits", "--storage-option", f"endpoint_url={s3.url}")
    assert code == 0, err
    assert out.count("  ok  ") == 7
    result = asyncio.run(verify_cube(f"s3://{s3.bucket}/c.fits", storage_options=s3.options))
    # The data once; headers and table (a few blocks here) read by the scan and again for their sums.
    size = cube.stat().st_size
    with fits.open(cube) as hdus:
        small = size - hdus.fileinfo(1)["datSpan"]
    assert result.ok and size <= result.bytes_read <= size + small + 7 * 2880


def test_a_cube_s_product_is_the_one_its_build_recorded(spoc_cube: str, tmp_path: Path) -> None:
    from helpers import scan_cube_at

    assert scan_cube_at(spoc_cube).product.name == "spoc"
    for recorded, expected in (("", "spoc"), ("tica", None)):  # none recorded: by its layers; a wrong one: refused
        changed = tmp_path / f"cube-{recorded or 'none'}.fits"
        with fits.open(spoc_cube) as hdus:
            hdus[1].header["FCPROD"] = recorded
            hdus.writeto(changed)
        if expected:
            assert scan_cube_at(str(changed)).product.name == expected
        else:
            with pytest.raises(fficube.FitsFormatError, match="says it is of product 'tica' .FCPROD. but has 2 layer"):
                scan_cube_at(str(changed))
