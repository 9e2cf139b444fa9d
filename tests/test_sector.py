"""``fficube sector``: the archive's layout, AWS Batch array jobs, one cube split across workers."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cube_compare import assert_verifies
from helpers import make_archive, run_cli, without_build_stamps

import fficube
from fficube.sector import array_target
from fficube.shard import parse_shard, shard_window


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fficube.cli", *args]


def test_array_index_and_shard_arguments() -> None:
    assert [array_target(i) for i in (0, 1, 3, 4, 15)] == [(1, 1), (1, 2), (1, 4), (2, 1), (4, 4)]
    with pytest.raises(ValueError, match="0 to 15"):
        array_target(16)
    assert parse_shard("2/3") == (2, 3) and parse_shard("index/4", "3") == (4, 4)
    for bad in ("0/3", "4/3", "x", "index/4"):
        with pytest.raises(ValueError, match="K/N"):
            parse_shard(bad)
    # Windows are whole parts, cover the cube once, and the first holds part 1.
    for total, parts in ((100, 7), (10, 3), (3, 5)):
        windows = [shard_window(total, parts, k, 4) for k in range(1, 5)]
        assert windows[0][0] == 0 and windows[-1][1] == total
        assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
        assert all(lo % parts == 0 for lo, _ in windows)


def test_local_sector_builds_each_cube_then_skips_them(tmp_path: Path) -> None:
    targets = [(1, 1), (1, 2), (2, 1), (2, 2)]
    made = make_archive(tmp_path, targets)
    dest = tmp_path / "cubes"
    args = ["sector", "1", "--source", str(tmp_path / "ffi"), "--dest", str(dest),
            "--camera", "1", "--camera", "2", "--ccd", "1", "--ccd", "2", "--parallel", "2", "--max-memory", "200MB"]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert re.search(r"^1-1\s+built\s+4\s", out, re.M) and "sector 1: 4 of 4 cube(s) done" in out
    for camera, ccd in targets:
        cube = dest / f"tess-s0001-{camera}-{ccd}-cube.fits"
        fficube.make_cube(made[(camera, ccd)], tmp_path / "ref.fits", sector=1, overwrite=True)
        assert without_build_stamps(cube.read_bytes()) == without_build_stamps((tmp_path / "ref.fits").read_bytes())
    code, out, _ = run_cli(*args)
    assert code == 0 and out.count("skipped") == 4
    # A missing camera/CCD fails alone; the others are still done.
    code, out, err = run_cli("sector", "1", "--source", str(tmp_path / "ffi"), "--dest", str(dest),
                             "--camera", "1", "--ccd", "1", "--ccd", "3")
    assert code == 1 and re.search(r"^1-3\s+failed", out, re.M) and "1 failed (run again to retry)" in out


def test_array_jobs_build_one_cube_each_on_s3(s3, tmp_path: Path) -> None:
    targets = [(1, 1), (1, 2), (2, 2)]
    made = make_archive(tmp_path, targets)
    for path in (p for paths in made.values() for p in paths):
        key = "tess/public/ffi/" + str(Path(path).relative_to(tmp_path / "ffi"))
        s3.client.upload_file(path, s3.bucket, key)
    procs = [
        subprocess.Popen(
            cli("sector", "1", "--source", f"s3://{s3.bucket}/tess/public/ffi", "--dest", f"s3://{s3.bucket}/cubes",
                "--storage-option", f"endpoint_url={s3.url}", "--max-memory", "50MB"),
            env={**os.environ, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for index in (0, 1, 5)  # 1-1, 1-2, 2-2: run at once, as an array job does
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "1 of 1 cube(s) done" in out and "AWS_BATCH_JOB_ARRAY_INDEX=" in err
    keys = sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="cubes/")["Contents"])
    assert keys == [f"cubes/tess-s0001-{c}-{d}-cube.fits" for c, d in targets]
    for camera, ccd in targets:
        cube = tmp_path / f"{camera}-{ccd}.fits"
        cube.write_bytes(s3.client.get_object(Bucket=s3.bucket, Key=f"cubes/tess-s0001-{camera}-{ccd}-cube.fits")
                         ["Body"].read())
        fficube.make_cube(made[(camera, ccd)], tmp_path / "ref.fits", sector=1, overwrite=True)
        assert without_build_stamps(cube.read_bytes()) == without_build_stamps((tmp_path / "ref.fits").read_bytes())
        assert_verifies(cube)


@pytest.fixture
def big_archive(s3, tmp_path: Path) -> tuple[list[str], list[str]]:
    """One camera/CCD whose cube takes 8 parts of 5 MiB, uploaded to the moto bucket."""
    made = make_archive(tmp_path, [(1, 1)], n_ffis=8, shape=(400, 1600))[(1, 1)]
    for path in made:
        s3.client.upload_file(path, s3.bucket, "ffi/" + str(Path(path).relative_to(tmp_path / "ffi")))
    command = ["sector", "1", "--source", f"s3://{s3.bucket}/ffi", "--dest", f"s3://{s3.bucket}/cubes",
               "--camera", "1", "--ccd", "1", "--storage-option", f"endpoint_url={s3.url}", "--max-memory", "40MB"]
    return made, command


def shared_objects(s3) -> list[str]:
    listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="cubes/").get("Contents", [])
    return sorted(o["Key"] for o in listed)


def fetch_cube(s3, path: Path) -> Path:
    path.write_bytes(s3.client.get_object(Bucket=s3.bucket, Key="cubes/tess-s0001-1-1-cube.fits")["Body"].read())
    return path


def test_three_shards_in_parallel_make_the_one_worker_cube(s3, big_archive, tmp_path: Path) -> None:
    made, command = big_archive
    procs = [subprocess.Popen(cli(*command, "--shard", f"{k}/3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for k in (1, 2, 3)]
    outputs = [proc.communicate(timeout=180) for proc in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    assert sum("cube completed" in out for out, _ in outputs) >= 1
    assert shared_objects(s3) == ["cubes/tess-s0001-1-1-cube.fits"]
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    cube = fetch_cube(s3, tmp_path / "sharded.fits")
    fficube.make_cube(made, tmp_path / "one.fits", sector=1, max_memory="40MB")
    assert without_build_stamps(cube.read_bytes()) == without_build_stamps((tmp_path / "one.fits").read_bytes())
    assert_verifies(cube)


def test_a_shard_that_dies_is_run_again_alone(s3, big_archive, tmp_path: Path) -> None:
    made, command = big_archive
    for k in (1, 3):
        assert subprocess.run(cli(*command, "--shard", f"{k}/3"), capture_output=True, timeout=180).returncode == 0
    code, out, _ = run_cli(*command, "--finish")
    assert code == 1 and "waiting for shard(s) 2" in out

    record = "cubes/tess-s0001-1-1-cube.fits.shards/2.json"
    proc = subprocess.Popen(cli(*command, "--shard", "2/3"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            state = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=record)["Body"].read())
        except s3.client.exceptions.NoSuchKey:
            state = {"parts": {}}
        if state["parts"]:
            proc.send_signal(signal.SIGKILL)  # one part up, others not yet
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "shard 2 finished before it could be killed"
    assert "cubes/tess-s0001-1-1-cube.fits" not in shared_objects(s3)

    again = subprocess.run(cli(*command, "--shard", "2/3"), capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "cube completed" in again.stdout
    assert shared_objects(s3) == ["cubes/tess-s0001-1-1-cube.fits"]
    cube = fetch_cube(s3, tmp_path / "sharded.fits")
    fficube.make_cube(made, tmp_path / "one.fits", sector=1, max_memory="40MB")
    assert without_build_stamps(cube.read_bytes()) == without_build_stamps((tmp_path / "one.fits").read_bytes())
    assert_verifies(cube)
