"""SIGKILL a CLI build at random points, resume it, and compare with an uninterrupted build.

SIGKILL gives the build no chance to clean up: whatever the journal says must be
true of the partial file (or of the parts S3 has) at any instant.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cube_compare import assert_verifies
from helpers import without_build_stamps

import fficube

KILLS = 8


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fficube.cli", "build", *args, "-q"]


def kill_at_random_points(command: list[str], progress: Callable[[], float], seed: int) -> list[float]:
    """Run ``command`` (a resumable build) again and again, SIGKILLing it at random points.

    A point is a random fraction of the work (as ``progress()`` reports it, 0 to 1)
    plus a random few milliseconds, so kills land anywhere: in a write, between a
    write and its journal update, in the journal update.  The first kill comes at a
    random moment of start-up.  Returns the fractions at which processes were killed.
    """
    rng = random.Random(seed)
    targets = [None, *sorted(rng.uniform(0.0, 0.95) for _ in range(KILLS - 1))]
    killed = []
    for target in targets:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if target is None:
            time.sleep(rng.uniform(0.05, 0.5))
        else:
            while proc.poll() is None and progress() < target:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed.append(progress())
        _, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, -signal.SIGKILL), err
        if proc.returncode == 0:
            break
    return killed


def test_sigkill_at_random_points_then_resume_gives_the_same_bytes(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=16, shape=(400, 500), no_wcs=())
    reference = tmp_path / "ref.fits"
    options = ["--max-memory", "3MB", "--sector", "1"]  # some 40 blocks, each recorded
    fficube.make_cube(paths, reference, max_memory="3MB", sector=1)
    total = reference.stat().st_size
    out = tmp_path / "c.fits"

    def progress() -> float:
        try:
            return json.loads(Path(f"{out}.journal").read_text())["offset"] / total
        except (OSError, ValueError):  # not there yet, or being replaced
            return 0.0

    killed = kill_at_random_points(cli(*paths, "-o", str(out), "--resume", *options), progress, seed=6)
    assert len(killed) >= KILLS - 2, killed  # the build was really interrupted, again and again
    assert not out.exists()  # never a cube before it is complete
    # A resumed build may use another budget: the blocks change, not the bytes.
    resumed = subprocess.run(cli(*paths, "-o", str(out), "--resume", "--max-memory", "9MB", "--sector", "1"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert without_build_stamps(out.read_bytes()) == without_build_stamps(reference.read_bytes())
    assert_verifies(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c.fits")) == ["c.fits"]


def test_sigkill_of_an_s3_upload_then_resume_gives_the_same_bytes(s3, sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=8, shape=(400, 800), no_wcs=())  # 20 MB: four 5 MiB parts
    endpoint = ["--storage-option", f"endpoint_url={s3.url}", "--max-memory", "24MB"]
    reference = tmp_path / "ref.fits"
    fficube.make_cube(paths, reference, max_memory="24MB")
    url = f"s3://{s3.bucket}/killed.fits"

    def progress() -> float:
        try:
            state = json.loads(s3.client.get_object(Bucket=s3.bucket, Key="killed.fits.journal")["Body"].read())
        except Exception:  # not there yet
            return 0.0
        return len(state["parts"]) / 4

    killed = kill_at_random_points(cli(*paths, "-o", url, "--resume", *endpoint), progress, seed=3)
    assert len(killed) >= 3, killed
    resumed = subprocess.run(cli(*paths, "-o", url, "--resume", *endpoint), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    cube = tmp_path / "from-s3.fits"
    cube.write_bytes(s3.client.get_object(Bucket=s3.bucket, Key="killed.fits")["Body"].read())
    assert without_build_stamps(cube.read_bytes()) == without_build_stamps(reference.read_bytes())
    assert_verifies(cube)
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    assert [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]] == ["killed.fits"]
