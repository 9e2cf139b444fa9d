"""SIGKILL a CLI build at chosen points, resume it, and compare with an uninterrupted build.

SIGKILL gives the build no chance to clean up: whatever the journal says must be
true of the partial file (or of the parts S3 has) at any instant.  The kills are
injected into the child (tests/faults.py) at points of the build it reaches for sure
(a byte of the partial file, a flush, a journal update, an S3 call), never at a
moment, so every run is interrupted exactly where the test says.  A local kill also
throws away what was not flushed, as a power cut would.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits
from cube_compare import assert_verifies
from faults import run_to_kill
from helpers import without_build_stamps

import fficube


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fficube.cli", "build", *args, "-q"]


def test_sigkill_at_chosen_points_then_resume_gives_the_same_bytes(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=16, shape=(200, 300), no_wcs=())
    reference = tmp_path / "ref.fits"
    fficube.make_cube(paths, reference, max_memory="2MB", sector=1)
    total = reference.stat().st_size
    with fits.open(reference) as hdus:
        data_start = hdus.fileinfo(1)["datLoc"]
        data_stop = data_start + math.prod(hdus[1].shape) * 4  # then padding and the table
    out = tmp_path / "c.fits"
    journal, partial = Path(f"{out}.journal"), Path(f"{out}.partial")
    rng = random.Random(6)

    def saved() -> int:  # the killed build is dead: the journal cannot change under us
        return json.loads(journal.read_text())["offset"] if journal.exists() else 0

    def in_data() -> dict:  # a byte the next run writes for sure: in a block if one is left
        first = saved()
        last = data_stop if first < data_stop else total
        return {"at": "write", "offset": first + int(rng.uniform(0.0, 0.4) * (last - first))}

    # (point, how the journal's offset moves: "none" = still no journal, "=", ">" = a
    # block recorded, ">=", "<=" = not past the point's byte, "first" = as "=" and the
    # partial file cut to it).  Every point is one the run reaches for sure: a byte at
    # or after the journal's offset, or a first flush or journal update in a run that
    # still has a block to write (a kill before it left one).
    schedule = [
        (lambda: {"at": "open"}, "none"),  # start-up: the partial file just created
        (lambda: {"at": "write", "offset": rng.randrange(1, data_start)}, "none"),  # in the headers
        (lambda: {"at": "sync"}, "none"),  # first block written, neither flushed nor recorded
        (lambda: {"at": "journal"}, ">"),  # right after the first journal update
        (in_data, "<="),  # inside a block's write
        (lambda: {"at": "journal-tmp"}, "="),  # journal flushed beside, not renamed
        (lambda: {"at": "sync"}, "="),  # between a block's write and its journal update
        (lambda: {"at": "write", "offset": saved()}, "first"),  # the resumed run's first byte
        (lambda: {"at": "journal"}, ">"),
        (lambda: {"at": "write", "offset": rng.randrange(max(saved(), data_stop), total)}, "<="),  # the table
        (lambda: {"at": "commit"}, ">="),  # all written and flushed, not renamed
    ]
    for i, (point, moves) in enumerate(schedule):
        spec = point()
        before = saved()
        # Budgets alternate: a resumed build may cut other blocks, the bytes are the same.
        budget = ["2MB", "3MB"][i % 2]
        event = run_to_kill(cli(*paths, "-o", str(out), "--resume", "--max-memory", budget, "--sector", "1"),
                            tmp_path, spec)
        assert event["event"] == spec["at"], (spec, event)
        after = saved()
        assert not out.exists(), spec  # never a cube before it is complete
        if moves == "first":  # a resumed run drops what its journal does not vouch for
            assert after == before == partial.stat().st_size, (spec, before, after)
        elif moves == "none":
            assert not journal.exists(), spec
        elif moves == "=":
            assert after == before, (spec, before, after)
        elif moves == ">":
            assert after > before, (spec, before, after)
        elif moves == ">=":
            assert after >= before, (spec, before, after)
        else:
            assert before <= after <= spec["offset"], (spec, before, after)
        if spec["at"] == "journal-tmp":
            assert Path(f"{journal}.tmp").exists()
    resumed = subprocess.run(cli(*paths, "-o", str(out), "--resume", "--max-memory", "9MB", "--sector", "1"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert without_build_stamps(out.read_bytes()) == without_build_stamps(reference.read_bytes())
    assert_verifies(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c.fits")) == ["c.fits"]


def resume_to_reference(command: list[str], s3, key: str, reference: Path, tmp_path: Path) -> None:
    """Run the killed S3 build again: it must finish the cube with ``reference``'s bytes,
    sound, and leave no upload and no object but the cube."""
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    cube = tmp_path / "from-s3.fits"
    cube.write_bytes(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    assert without_build_stamps(cube.read_bytes()) == without_build_stamps(reference.read_bytes())
    assert_verifies(cube)
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    assert [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]] == [key]


def test_sigkill_of_an_s3_upload_then_resume_gives_the_same_bytes(s3, sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=8, shape=(400, 500), no_wcs=())  # 13 MB: three 5 MiB parts
    endpoint = ["--storage-option", f"endpoint_url={s3.url}", "--max-memory", "24MB"]
    reference = tmp_path / "ref.fits"
    fficube.make_cube(paths, reference, max_memory="24MB")
    url = f"s3://{s3.bucket}/killed.fits"
    command = cli(*paths, "-o", url, "--resume", *endpoint)

    def journal() -> dict | None:  # the killed build is dead: nothing changes under us
        try:
            return json.loads(s3.client.get_object(Bucket=s3.bucket, Key="killed.fits.journal")["Body"].read())
        except s3.client.exceptions.NoSuchKey:
            return None

    def recorded() -> list[int]:  # the parts the journal records
        return sorted(map(int, journal()["parts"]))

    def uploads() -> list[dict]:
        return s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])

    def uploaded() -> list[int]:  # the parts S3 has, recorded or not
        (upload,) = uploads()  # one upload, never a second one
        listed = s3.client.list_parts(Bucket=s3.bucket, Key="killed.fits", UploadId=upload["UploadId"])
        return sorted(p["PartNumber"] for p in listed.get("Parts", []))

    def kill(op: str, when: str, part: int | None = None) -> None:
        spec = {"at": "s3", "op": op, "when": when, **({"part": part} if part is not None else {})}
        event = run_to_kill(command, tmp_path, spec)
        assert (event["event"], event["op"]) == (f"s3-{when}", op)
        assert not [o for o in s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", [])
                    if o["Key"] == "killed.fits"]  # never a cube before it is complete

    kill("CreateMultipartUpload", "before")  # start-up: only the journal that no upload is recorded yet
    assert "upload_id" not in journal() and not uploads()
    kill("PutObject", "after", part=0)  # the upload started and recorded, no part yet
    assert recorded() == [] and uploaded() == []
    last = math.ceil(reference.stat().st_size / journal()["part_size"])  # parts 2..last, then part 1
    assert last >= 3
    kill("UploadPart", "before", part=2)  # the first part on its way
    assert recorded() == [] and uploaded() == []
    kill("UploadPart", "after", part=2)  # S3 has part 2; the journal does not say so
    assert recorded() == [] and uploaded() == [2]
    kill("PutObject", "after", part=2)  # part 2 recorded (part 3 may be on its way already)
    assert recorded() == [2] and uploaded()[:1] == [2]
    kill("UploadPart", "after", part=3)  # the journal write of part 2 may not have been answered
    assert recorded() in ([], [2]) and uploaded()[:2] == [2, 3]
    kill("PutObject", "after", part=last)  # every part but the first recorded
    assert recorded() == list(range(2, last + 1)) and uploaded() == list(range(2, last + 1))
    kill("UploadPart", "after", part=1)  # part 1 (the headers) up; not completed
    assert recorded() == list(range(2, last + 1)) and uploaded() == list(range(1, last + 1))

    resume_to_reference(command, s3, "killed.fits", reference, tmp_path)


def test_sigkill_during_parallel_part_uploads_then_resume_gives_the_same_bytes(s3, sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=8, shape=(700, 1000), no_wcs=())  # 45 MB: parts 2-9 of 5 MiB, then part 1
    reference = tmp_path / "ref.fits"
    fficube.make_cube(paths, reference, max_memory="300MB")
    command = cli(*paths, "-o", f"s3://{s3.bucket}/parallel.fits", "--resume", "--max-memory", "300MB",
                  "--storage-option", f"endpoint_url={s3.url}")  # 300 MB: 8 parts in flight

    def recorded() -> set[int]:
        body = s3.client.get_object(Bucket=s3.bucket, Key="parallel.fits.journal")["Body"].read()
        return set(map(int, json.loads(body)["parts"]))

    def uploaded() -> dict[int, str]:
        (upload,) = s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])  # never a second
        listed = s3.client.list_parts(Bucket=s3.bucket, Key="parallel.fits", UploadId=upload["UploadId"])
        return {p["PartNumber"]: p["ETag"] for p in listed.get("Parts", [])}

    for part in (5, 8):  # each kill lands while other parts are on their way
        run_to_kill(command, tmp_path, {"at": "s3", "op": "UploadPart", "when": "after", "part": part})
        assert part in uploaded() and recorded() <= set(uploaded())  # the journal never runs ahead of S3
    resume_to_reference(command, s3, "parallel.fits", reference, tmp_path)


@pytest.mark.parametrize("again", ["--resume", "--restart"])
def test_sigkill_right_after_an_s3_upload_starts_leaves_no_upload(s3, sector, tmp_path: Path, again: str) -> None:
    """Killed between CreateMultipartUpload and the journal that records its id: the
    journal written just before names the moment, and the next run (resumed or
    restarted) aborts the upload started since."""
    paths = sector(n_ffis=2, shape=(40, 50), no_wcs=())  # one part
    key = f"killed-{again.strip('-')}.fits"  # the bucket is the test's, both cases share it
    command = cli(*paths, "-o", f"s3://{s3.bucket}/{key}", "--storage-option", f"endpoint_url={s3.url}")
    run_to_kill([*command, "--resume"], tmp_path, {"at": "s3", "op": "CreateMultipartUpload", "when": "after"})
    orphans = s3.client.list_multipart_uploads(Bucket=s3.bucket, Prefix=key).get("Uploads", [])
    assert len(orphans) == 1
    resumed = subprocess.run([*command, again], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=key)["Contents"]] == [key]
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket, Prefix=key).get("Uploads")
