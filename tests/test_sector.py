"""``fficube sector``: the archive's layout, AWS Batch array jobs, one cube split across workers."""

from __future__ import annotations

import asyncio
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
from helpers import cancel_after_blocks, make_archive, run_cli, without_build_stamps

import fficube
from fficube.sectors.sector import array_index, array_target
from fficube.sectors.shard import parse_shard, shard_window


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fficube.cli", *args]


def test_array_index_and_shard_arguments() -> None:
    assert [array_target(i) for i in (0, 1, 3, 4, 15)] == [(1, 1), (1, 2), (1, 4), (2, 1), (4, 4)]
    with pytest.raises(ValueError, match="0 to 15"):
        array_target(16)
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID = x is not a camera/CCD index"):
        array_target("x", "SLURM_ARRAY_TASK_ID")
    # AWS Batch's index wins when both are set; SLURM's is read the same way.
    assert array_index({}) is None
    assert array_index({"SLURM_ARRAY_TASK_ID": "5"}) == ("SLURM_ARRAY_TASK_ID", "5")
    assert array_index({"SLURM_ARRAY_TASK_ID": "5", "AWS_BATCH_JOB_ARRAY_INDEX": "2"}) == (
        "AWS_BATCH_JOB_ARRAY_INDEX", "2")
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
    assert re.search(r"^1-1\s+built\s+4\s+[1-9][\d.]* kB\s", out, re.M), out  # the cube's size, not 0.00 GB
    assert "sector 1: 4 of 4 cube(s) done\n" in out
    for camera, ccd in targets:
        cube = dest / f"tess-s0001-{camera}-{ccd}-cube.fits"
        fficube.make_cube(made[(camera, ccd)], tmp_path / "ref.fits", sector=1, overwrite=True)
        assert without_build_stamps(cube.read_bytes()) == without_build_stamps((tmp_path / "ref.fits").read_bytes())
    code, out, _ = run_cli(*args)
    assert code == 0 and out.count("skipped") == 4
    assert re.search(r"^2-2\s+skipped\s+4\s+[1-9][\d.]* kB\s.*complete at the destination$", out, re.M), out
    # A camera/CCD without FFIs in the archive is said to be so; it is no failure.
    code, out, err = run_cli("sector", "1", "--source", str(tmp_path / "ffi"), "--dest", str(dest),
                             "--camera", "1", "--ccd", "1", "--ccd", "3")
    assert code == 0, err
    assert re.search(r"^1-3\s+no FFIs\s.*no FFIs of camera 1, CCD 3", out, re.M), out
    assert "sector 1: 1 of 1 cube(s) done; 1 camera/CCD(s) without FFIs in the archive\n" in out


def test_a_source_without_the_sector_is_one_error(tmp_path: Path) -> None:
    make_archive(tmp_path, [(1, 1)])
    for source, sector in ((tmp_path / "nowhere", "1"), (tmp_path / "ffi", "2")):
        code, out, err = run_cli("sector", sector, "--source", str(source), "--dest", str(tmp_path / "cubes"))
        assert code == 1 and out == ""
        assert err.count("\n") == 1 and err.startswith(f"fficube: error: {source}: no FFIs of sector {sector} here: ")
    assert not (tmp_path / "cubes").exists()


def test_a_cube_at_the_destination_is_skipped_only_if_complete(tmp_path: Path) -> None:
    made = make_archive(tmp_path, [(1, 1), (1, 2), (1, 3)])
    dest = tmp_path / "cubes"
    args = ["sector", "1", "--source", str(tmp_path / "ffi"), "--dest", str(dest), "--camera", "1",
            "--ccd", "1", "--ccd", "2", "--ccd", "3"]
    assert run_cli(*args)[0] == 0
    cut = dest / "tess-s0001-1-1-cube.fits"
    cut.write_bytes(cut.read_bytes()[:-2880])  # truncated: verify says it is not sound
    fewer = dest / "tess-s0001-1-2-cube.fits"  # complete, but of 3 of the 4 FFIs
    fficube.make_cube(made[(1, 2)][:3], fewer, sector=1, overwrite=True)
    unsealed = dest / "tess-s0001-1-3-cube.fits"  # the cube header's DATASUM changed: its CHECKSUM fails
    data = unsealed.read_bytes()
    card = data.index(b"DATASUM = '", 2880)
    unsealed.write_bytes(data[:card + 11] + b"1" + data[card + 12:])
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert re.search(r"^1-1\s+rebuilt\s+4\s.*the cube there was not complete \(structure: .*truncated", out,
                     re.M), out
    assert re.search(r"^1-2\s+rebuilt\s+4\s.*the cube there has 3 FFIs, the archive 4$", out, re.M), out
    assert re.search(r"^1-3\s+rebuilt\s+4\s.*not complete \(checksums of HDU 1 \(header only\): CHECKSUM does "
                     r"not verify", out, re.M), out
    for cube, ffis in ((cut, made[(1, 1)]), (fewer, made[(1, 2)]), (unsealed, made[(1, 3)])):
        fficube.make_cube(ffis, tmp_path / "ref.fits", sector=1, overwrite=True)
        assert without_build_stamps(cube.read_bytes()) == without_build_stamps((tmp_path / "ref.fits").read_bytes())


def test_sector_resumes_by_default_and_restarts_when_asked(tmp_path: Path) -> None:
    made = make_archive(tmp_path, [(1, 1)], n_ffis=6, shape=(60, 40))[(1, 1)]
    dest = tmp_path / "cubes"
    output = dest / "tess-s0001-1-1-cube.fits"
    args = ["sector", "1", "--source", str(tmp_path / "ffi"), "--dest", str(dest), "--camera", "1", "--ccd", "1"]
    reference = tmp_path / "ref.fits"
    fficube.make_cube(made, reference, sector=1)
    for flags, status in (([], "resumed"), (["--resume"], "resumed"), (["--restart"], "built")):
        asyncio.run(cancel_after_blocks(2, lambda progress: fficube.build_cube(
            made, output, sector=1, max_memory="180kB", progress=progress, resume=True)))
        assert Path(f"{output}.journal").exists()
        code, out, err = run_cli(*args, *flags)
        assert code == 0, err
        assert re.search(rf"^1-1\s+{status}\s+6\s", out, re.M), (flags, out)
        assert without_build_stamps(output.read_bytes()) == without_build_stamps(reference.read_bytes())
        output.unlink()
    code, out, err = run_cli(*args, "--stage", str(tmp_path / "stage"))  # one error, not one per cube
    assert (code, out) == (1, "") and err == "fficube: error: --stage: the source is local: there is nothing to stage\n"
    with pytest.raises(SystemExit) as usage:  # one or the other, as for build
        run_cli(*args, "--resume", "--restart")
    assert usage.value.code == 2


def test_slurm_array_task_picks_its_cube(tmp_path: Path, monkeypatch) -> None:
    make_archive(tmp_path, [(1, 1), (1, 2)])
    dest = tmp_path / "cubes"
    args = ["sector", "1", "--source", str(tmp_path / "ffi"), "--dest", str(dest)]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.delenv("AWS_BATCH_JOB_ARRAY_INDEX", raising=False)
    code, _, err = run_cli(*args)
    assert code == 0 and "SLURM_ARRAY_TASK_ID=1: camera 1, CCD 2" in err
    assert sorted(p.name for p in dest.iterdir()) == ["tess-s0001-1-2-cube.fits"]
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "0")  # both set: AWS Batch's wins
    code, _, err = run_cli(*args)
    assert code == 0 and "AWS_BATCH_JOB_ARRAY_INDEX=0: camera 1, CCD 1" in err
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "16")
    code, _, err = run_cli(*args)
    assert code == 1 and "AWS_BATCH_JOB_ARRAY_INDEX = 16 is not a camera/CCD index (0 to 15)" in err


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
def big_archive(s3, proxy, tmp_path: Path) -> tuple[list[str], list[str]]:
    """One camera/CCD whose cube takes 8 parts of 5 MiB, uploaded to the moto bucket; the
    command reaches it through the proxy, whose conditional writes are atomic as on S3."""
    made = make_archive(tmp_path, [(1, 1)], n_ffis=8, shape=(400, 1600))[(1, 1)]
    for path in made:
        s3.client.upload_file(path, s3.bucket, "ffi/" + str(Path(path).relative_to(tmp_path / "ffi")))
    command = ["sector", "1", "--source", f"s3://{s3.bucket}/ffi", "--dest", f"s3://{s3.bucket}/cubes",
               "--camera", "1", "--ccd", "1", "--storage-option", f"endpoint_url={proxy().url}", "--max-memory",
               "40MB"]
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
    with subprocess.Popen(cli(*command, "--shard", "2/3"), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as proc:
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


def test_after_ctrl_c_the_messages_agree_with_each_other_and_with_the_disk(tmp_path: Path) -> None:
    make_archive(tmp_path, [(1, 1), (1, 2)], n_ffis=8, shape=(300, 600))
    dest = tmp_path / "cubes"
    outputs = [dest / f"tess-s0001-1-{ccd}-cube.fits" for ccd in (1, 2)]
    args = ["sector", "1", "--source", str(tmp_path / "ffi"), "--dest", str(dest), "--camera", "1",
            "--ccd", "1", "--ccd", "2", "--parallel", "2", "--max-memory", "4MB"]
    # SIGINT is Ctrl-C for the child even if this test run ignores it (started in the background).
    proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if all(Path(f"{o}.journal").exists() for o in outputs):  # both cubes have work recorded
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    saved = [o for o in outputs if Path(f"{o}.journal").exists()]
    assert saved, err
    names = ", ".join(o.name[len("tess-s0001-"):-len("-cube.fits")] for o in saved)
    assert err.strip().splitlines()[-1] == (
        f"fficube: interrupted; the work done on {len(saved)} cube(s) ({names}) is saved: run the same command "
        "again to continue (sector resumes interrupted cubes; --resume may be given)")
    kept = re.findall(r"^fficube: WARNING: kept (\S+) \(.* written\): run the same build again with --resume to "
                      r"continue, or --restart to start over$", err, re.M)
    assert sorted(kept) == [f"{o}.partial" for o in saved] and all(Path(k).exists() for k in kept), err
    assert "nothing was written" not in err and "resume=True" not in err
    code, out, err = run_cli(*args)
    assert code == 0, err
    for output in saved:
        assert re.search(rf"^{output.name[11:14]}\s+resumed\s", out, re.M), out
