"""One cube, several workers, on a shared filesystem and on S3: windows, one finisher, killed workers.

Every sharded cube is compared byte for byte with a one-worker build of the same FFIs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cube_compare import assert_verifies
from helpers import make_archive, run_cli, without_build_stamps

import fficube
from fficube.journal import FinishClaim
from fficube.sectors import shard as shard_module
from fficube.sectors.shard import LEASE, Finish, build_shard, finish_cube
from fficube.sinks.base import unwritten
from fficube.sinks.local import FILE_UNIT, FileShards
from fficube.sinks.s3 import UploadShards

CUBE = "tess-s0001-1-1-cube.fits"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fficube.cli", *args]


def sector_command(source: str, dest: str, *extra: str) -> list[str]:
    return ["sector", "1", "--source", source, "--dest", dest, "--camera", "1", "--ccd", "1", *extra]


def assert_one_worker_cube(cube: Path, made: list[str], tmp_path: Path) -> None:
    """``cube`` has the bytes of a one-worker build of ``made`` (build stamps aside), and verifies."""
    reference = tmp_path / "one-worker.fits"
    fficube.make_cube(made, reference, sector=1, max_memory="40MB", overwrite=True)
    assert without_build_stamps(cube.read_bytes()) == without_build_stamps(reference.read_bytes())
    assert_verifies(cube)


def run_workers(commands: list[list[str]], envs: list[dict] | None = None) -> list[tuple[int, str, str]]:
    """Start every command at once (as an array job does); their exit codes and outputs."""
    procs = [subprocess.Popen(cli(*c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for c, env in zip(commands, envs or [None] * len(commands), strict=True)]
    outputs = [p.communicate(timeout=180) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


@pytest.fixture
def small_archive(tmp_path: Path) -> list[str]:
    """One camera/CCD whose cube is well under 1 MiB: with 3 shards, two own no bytes."""
    return make_archive(tmp_path, [(1, 1)], n_ffis=5)[(1, 1)]


@pytest.fixture
def file_archive(tmp_path: Path) -> list[str]:
    """One camera/CCD whose cube is 11.5 MB: 3 windows of 3-4 MiB, several blocks each at 2 MB of memory."""
    return make_archive(tmp_path, [(1, 1)], n_ffis=8, shape=(300, 600))[(1, 1)]


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


# ------------------------------------------------------------------------------------
# A shared filesystem


def test_three_local_workers_at_once_of_a_cube_two_own_nothing_of(small_archive, tmp_path: Path) -> None:
    dest = tmp_path / "cubes"
    command = sector_command(str(tmp_path / "ffi"), str(dest), "--max-memory", "40MB", "--shard", "index/3")
    # A SLURM array job: task i is shard i + 1.
    env = {k: v for k, v in os.environ.items() if k != "AWS_BATCH_JOB_ARRAY_INDEX"}
    results = run_workers([command] * 3, [{**env, "SLURM_ARRAY_TASK_ID": str(i)} for i in range(3)])
    for code, _out, err in results:
        assert code == 0, err
    assert sum("cube completed" in out for _, out, _ in results) == 1, [out for _, out, _ in results]
    assert "shard 1/3, bytes 0-0" in results[0][1] and "shard 2/3, bytes 0-0" in results[1][1]  # they own nothing
    assert leftovers(dest) == [CUBE]
    assert_one_worker_cube(dest / CUBE, small_archive, tmp_path)
    # A worker run again after the cube is complete (a retried array task) says so and exits 0.
    code, out, err = run_cli(*command[:-1], "2/3")
    assert code == 0 and "the cube is complete (another worker, or an earlier run, finished it)" in out, err
    assert leftovers(dest) == [CUBE]


#: A worker that SIGKILLs itself inside its second write to the shared file, once its
#: first window block is flushed and recorded: half the write lands (a torn write).
KILLER = """
import os, signal, sys, threading
from fficube.cli import main

journal = os.environ["SHARD_JOURNAL"]
recorded = threading.Event()
real_open, real_pwrite, real_replace = os.open, os.pwrite, os.replace
shared, writes = set(), []

def fault_open(path, flags, *args, **kwargs):
    fd = real_open(path, flags, *args, **kwargs)
    if os.fsdecode(path).endswith(".partial"):
        shared.add(fd)
    return fd

def fault_replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if os.fsdecode(dst) == journal:
        recorded.set()

def fault_pwrite(fd, data, offset):
    if fd in shared:
        writes.append(offset)
        if len(writes) == 2:
            recorded.wait()
            view = memoryview(data).cast("B")
            real_pwrite(fd, view[: len(view) // 2], offset)
            os.kill(os.getpid(), signal.SIGKILL)
    return real_pwrite(fd, data, offset)

os.open, os.pwrite, os.replace = fault_open, fault_pwrite, fault_replace
sys.exit(main(sys.argv[1:]))
"""


def test_three_local_workers_one_killed_then_run_again(file_archive, tmp_path: Path) -> None:
    dest = tmp_path / "cubes"
    shards = dest / f"{CUBE}.shards"
    command = sector_command(str(tmp_path / "ffi"), str(dest), "--max-memory", "2MB")
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    victim = subprocess.Popen([sys.executable, str(killer), *command, "--shard", "2/3"],
                              env={**os.environ, "SHARD_JOURNAL": str(shards / "2.json")},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    others = run_workers([[*command, "--shard", f"{k}/3"] for k in (1, 3)])
    _, err = victim.communicate(timeout=180)
    assert victim.returncode == -signal.SIGKILL, err
    for code, out, err in others:
        assert code == 0 and "waiting for shard(s)" in out, err
    assert run_cli(*command, "--finish")[:2] == (1, f"{dest / CUBE}: waiting for shard(s) 2\n")
    record = json.loads((shards / "2.json").read_text())
    total = json.loads((shards / "plan.json").read_text())["total_bytes"]
    window = shard_module.shard_window(total, FILE_UNIT, 2, 3)
    assert window[0] < record["offset"] < window[1] and not record["done"]  # killed mid-window, one block recorded
    assert not (dest / CUBE).exists()

    again = subprocess.run(cli(*command, "--shard", "2/3"), capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "cube completed" in again.stdout
    written = int(again.stdout.split("wrote ")[1].split()[0].replace(",", ""))
    assert written == window[1] - record["offset"]  # only what the journal did not record
    assert leftovers(dest) == [CUBE]
    assert_one_worker_cube(dest / CUBE, file_archive, tmp_path)


def _all_done_but_not_finished(monkeypatch, archive_glob: str, output: str, shards: int, **options) -> None:
    """Run every worker of a sharded build, the last first, none of them finishing (the finish is
    tried later): the workers owning no bytes come last."""

    async def no_finish(store, who):
        return Finish("waiting")

    with monkeypatch.context() as patched:
        patched.setattr(shard_module, "_finish", no_finish)
        for k in range(shards, 0, -1):
            fficube.sync.run(build_shard(archive_glob, output, k, shards, product="spoc", sector=1,
                                         max_memory="40MB", **options))


def _race_the_claims(monkeypatch, store_class) -> list[tuple[int, bool]]:
    """Make concurrent finishers meet before claiming (a race on purpose); return each claim made."""
    claims: list[tuple[int, bool]] = []
    barrier = asyncio.Barrier(2)
    real = store_class.claim

    async def claim(self, number, mine):
        if not claims:
            await barrier.wait()
        won = await real(self, number, mine)
        claims.append((number, won))
        return won

    monkeypatch.setattr(store_class, "claim", claim)
    return claims


async def _two_finishers(output: str, **options) -> list[Finish]:
    return list(await asyncio.gather(finish_cube(output, **options), finish_cube(output, **options)))


def test_two_finishers_of_a_file_at_once_one_finishes(small_archive, monkeypatch, tmp_path: Path) -> None:
    output = str(tmp_path / "cubes" / CUBE)
    _all_done_but_not_finished(monkeypatch, str(Path(small_archive[0]).parent / "*ffic.fits"), output, 3)
    claims = _race_the_claims(monkeypatch, FileShards)
    results = asyncio.run(_two_finishers(output))
    assert sorted(r.status for r in results) == ["complete", "finished"]
    assert sorted(claims[:2]) == [(1, False), (1, True)]  # both claimed; one won
    assert leftovers(tmp_path / "cubes") == [CUBE]
    assert_one_worker_cube(Path(output), small_archive, tmp_path)


def test_finish_processes_racing_on_a_file_finish_once(file_archive, monkeypatch, tmp_path: Path) -> None:
    dest = tmp_path / "cubes"
    output = str(dest / CUBE)
    _all_done_but_not_finished(monkeypatch, str(Path(file_archive[0]).parent / "*ffic.fits"), output, 3)
    results = run_workers([sector_command(str(tmp_path / "ffi"), str(dest), "--finish")] * 3)
    assert [code for code, _, _ in results] == [0, 0, 0], results
    assert sum("cube completed" in out for _, out, _ in results) == 1, results
    assert leftovers(dest) == [CUBE]
    assert_one_worker_cube(Path(output), file_archive, tmp_path)


def test_a_stale_claim_is_taken_over_and_a_fresh_one_waited_for(small_archive, monkeypatch, tmp_path: Path) -> None:
    output = str(tmp_path / "cubes" / CUBE)
    _all_done_but_not_finished(monkeypatch, str(Path(small_archive[0]).parent / "*ffic.fits"), output, 2)
    directory = Path(output + ".shards")
    # A finisher that claimed the finish long ago and died.
    dead = FinishClaim("shard 2", "elsewhere", 1, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2 * LEASE))
    (directory / "finishing.1").write_bytes(dead.encode())
    # While a fresh claim is held and the cube is not there, a finisher waits.
    (directory / "finishing.2").write_bytes(FinishClaim("finish", "here", 2, dt.datetime.now(dt.UTC)).encode())

    async def waits() -> bool:
        task = asyncio.ensure_future(finish_cube(output))
        await asyncio.sleep(0.5)
        waiting = not task.done()
        task.cancel()
        return waiting

    assert asyncio.run(waits()) and not Path(output).exists()
    (directory / "finishing.2").unlink()  # that finisher is gone too: its claim is taken by the next
    assert asyncio.run(asyncio.wait_for(finish_cube(output), 60)).status == "finished"
    assert leftovers(tmp_path / "cubes") == [CUBE]
    assert_one_worker_cube(Path(output), small_archive, tmp_path)
    assert asyncio.run(finish_cube(output)).status == "complete"  # done: a finish is a no-op


# ------------------------------------------------------------------------------------
# S3


@pytest.fixture
def s3_small_archive(s3, small_archive, tmp_path: Path) -> list[str]:
    for path in small_archive:
        s3.client.upload_file(path, s3.bucket, "ffi/" + str(Path(path).relative_to(tmp_path / "ffi")))
    return small_archive


def s3_objects(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", []))


def test_three_s3_workers_at_once_of_a_cube_two_own_nothing_of(s3, proxy, s3_small_archive, tmp_path: Path) -> None:
    # Through the proxy: it makes conditional writes atomic, as S3 does and moto does not.
    command = sector_command(f"s3://{s3.bucket}/ffi", f"s3://{s3.bucket}/cubes", "--max-memory", "40MB",
                             "--storage-option", f"endpoint_url={proxy().url}")
    results = run_workers([[*command, "--shard", f"{k}/3"] for k in (1, 2, 3)])
    for code, _out, err in results:
        assert code == 0, err
    assert sum("cube completed" in out for _, out, _ in results) == 1, [out for _, out, _ in results]
    assert [o for o in s3_objects(s3) if o.startswith("cubes/")] == [f"cubes/{CUBE}"]
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    cube = tmp_path / "sharded.fits"
    cube.write_bytes(s3.client.get_object(Bucket=s3.bucket, Key=f"cubes/{CUBE}")["Body"].read())
    assert_one_worker_cube(cube, s3_small_archive, tmp_path)


def test_two_finishers_of_an_upload_at_once_one_finishes(s3, proxy, s3_small_archive, monkeypatch, tmp_path) -> None:
    options = {"storage_options": {"endpoint_url": proxy().url}}  # atomic conditional writes, as on S3
    output = f"s3://{s3.bucket}/cubes/{CUBE}"
    _all_done_but_not_finished(monkeypatch, f"s3://{s3.bucket}/ffi/s0001/*/*/1-1/*ffic.fits", output, 3, **options)
    claims = _race_the_claims(monkeypatch, UploadShards)
    results = asyncio.run(_two_finishers(output, **options))
    assert sorted(r.status for r in results) == ["complete", "finished"]
    assert sorted(claims[:2]) == [(1, False), (1, True)]
    assert [o for o in s3_objects(s3) if o.startswith("cubes/")] == [f"cubes/{CUBE}"]
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    cube = tmp_path / "sharded.fits"
    cube.write_bytes(s3.client.get_object(Bucket=s3.bucket, Key=f"cubes/{CUBE}")["Body"].read())
    assert_one_worker_cube(cube, s3_small_archive, tmp_path)


def test_a_finisher_that_saw_the_shards_before_another_finished_and_cleaned_up(s3, proxy, s3_small_archive,
                                                                                monkeypatch, tmp_path) -> None:
    """The race the loop of tests found: a worker reads the plan and the done journals; another
    completes the cube and starts removing the shards' objects (the claim among the first); the
    first then wins a claim and must not touch the completed upload."""
    options = {"storage_options": {"endpoint_url": proxy().url}}
    output = f"s3://{s3.bucket}/cubes/{CUBE}"
    _all_done_but_not_finished(monkeypatch, f"s3://{s3.bucket}/ffi/s0001/*/*/1-1/*ffic.fits", output, 3, **options)
    prefix = f"cubes/{CUBE}.shards/"
    seen = {o: s3.client.get_object(Bucket=s3.bucket, Key=o)["Body"].read() for o in s3_objects(s3)
            if o.startswith(prefix)}
    assert sorted(seen) == [prefix + n for n in ("1.json", "2.json", "3.json", "head", "plan.json")]
    assert asyncio.run(finish_cube(output, **options)).status == "finished"
    cube = s3.client.get_object(Bucket=s3.bucket, Key=f"cubes/{CUBE}")["Body"].read()
    for key, body in seen.items():  # what the late worker saw, the claim already gone
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=body)
    assert asyncio.run(finish_cube(output, **options)).status == "complete"
    assert s3.client.get_object(Bucket=s3.bucket, Key=f"cubes/{CUBE}")["Body"].read() == cube
    assert [o for o in s3_objects(s3) if o.startswith("cubes/")] == [f"cubes/{CUBE}"]  # and it cleaned up


def test_a_late_finisher_of_a_file_leaves_the_cube_alone(small_archive, monkeypatch, tmp_path: Path) -> None:
    output = tmp_path / "cubes" / CUBE
    _all_done_but_not_finished(monkeypatch, str(Path(small_archive[0]).parent / "*ffic.fits"), str(output), 3)
    directory = Path(f"{output}.shards")
    seen = {p.name: p.read_bytes() for p in directory.iterdir() if p.suffix == ".json"}
    assert asyncio.run(finish_cube(str(output))).status == "finished"
    cube = output.read_bytes()
    directory.mkdir()
    for name, body in seen.items():  # the plan and the done journals; the shared file is gone
        (directory / name).write_bytes(body)
    assert asyncio.run(finish_cube(str(output))).status == "complete"
    assert output.read_bytes() == cube and leftovers(tmp_path / "cubes") == [CUBE]


def test_a_sink_writes_only_the_unwritten_part_of_its_window() -> None:
    block = bytes(range(100))
    # All of it: the block's own sum is kept.
    view, datasum = unwritten(10, block, 10, (0, 1000), 7)
    assert bytes(view) == block and datasum == 7
    # A resumed build sends its first block again: what the sink has is skipped, the sum is its own.
    view, datasum = unwritten(10, block, 50, (0, 1000), 7)
    assert bytes(view) == block[40:] and datasum is None
    # The block runs past this worker's window: the rest is another worker's.
    view, datasum = unwritten(10, block, 10, (0, 60), 7)
    assert bytes(view) == block[:50] and datasum is None
    # Wholly written already, or wholly past the window: nothing.
    assert len(unwritten(10, block, 110, (0, 1000), 7)[0]) == 0
    assert len(unwritten(70, block, 70, (0, 60), 7)[0]) == 0
    # A gap means blocks came out of order.
    with pytest.raises(AssertionError, match="write at 20, expected 10"):
        unwritten(20, block, 10, (0, 1000), 7)
